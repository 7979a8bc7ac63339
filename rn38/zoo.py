"""Model labels and the model registry.

A label follows the authors' grammar ``<dataset>_<family>-<net>_cls<C>[_s<stride>][_<tag>...]``,
e.g. ``cityscapes_rna-a1_cls19_s8``, ``ilsvrc-cls_rna-a_cls1000``; a weights file is
``<label>_ep-<epoch>.params``. Any label that parses and names a known family, network and
stride builds; :data:`REGISTERED` lists the released ones, the small variants and one
label per compared family. :data:`FAMILIES` is the registry of network families: ResNet-38
(``rna``, the authors' networks) and the systems it is compared with (``fcn32s-vgg16``,
``deeplabv3-resnet101``, ``deconvnet-vgg16bn``; segmentation only).
"""
import os
import re
from collections import namedtuple

import mxnet as mx

from .gluon_internals import load_into, set_global_stats, walk_blocks
from .net import ResNet38Classifier, ResNet38FCN, stage_table
from .params import _compatible, load_params, read_params, released_keys

ModelSpec = namedtuple('ModelSpec', ['label', 'dataset', 'net_name', 'classes', 'feat_stride',
                                     'family'])
ModelSpec.__new__.__defaults__ = ('rna',)

Family = namedtuple('Family', ['nets', 'strides', 'build', 'zoo_backbones', 'preprocessing',
                               'description', 'tasks'])
Family.__new__.__defaults__ = (('segmentation',),)
Family.__doc__ = """One network family of the registry.

tasks: ``'segmentation'`` and/or ``'classification'``; nets: the ``<net>`` names of the
labels; strides: ``{net: output strides}`` (scores at ``ceil(H / s)``; 1 = full
resolution); build(net, classes, **options) -> an uninitialised network with ``classes``,
``feat_stride``, ``head_names``; zoo_backbones: ``{net: name of the Gluon/GluonCV ImageNet
classifier}`` whose ``.params`` file ``--weights`` may give (the ResNet-38 family loads the
authors' ImageNet files instead); preprocessing: the input normalisation the family
expects (``'imagenet'``: mean/std of ``pixel / 255``).
"""


def _build_fcn32s(net_name, classes, **options):
    from .families import fcn32s
    return fcn32s.build(classes)


def _build_deeplabv3(net_name, classes, **options):
    from .families import deeplabv3
    return deeplabv3.build(classes, backbone=net_name)


def _build_deconvnet(net_name, classes, **options):
    from .families import deconvnet
    return deconvnet.build(classes)


def _build_gluon(net_name, classes, **options):
    from .families import gluon_classifier
    return gluon_classifier.build(net_name, classes)


def _gluon_family():
    from .families.gluon_classifier import label_net, zoo_names
    names = zoo_names()
    nets = tuple(label_net(n) for n in names)
    return Family(nets, {n: (32,) for n in nets}, _build_gluon, dict(zip(nets, names)),
                  'imagenet', 'Gluon model-zoo classifiers by name', ('classification',))


FAMILIES = {
    'rna': Family(('a', 'a1', 'a-mini', 'a1-mini'),
                  {'a': (32,), 'a-mini': (32,), 'a1': (8, 16, 32), 'a1-mini': (8, 16, 32)},
                  None, {}, 'imagenet', 'ResNet-38 (Wu, Shen, van den Hengel)',
                  ('segmentation', 'classification')),
    'gluon': _gluon_family(),
    'fcn32s': Family(('vgg16',), {'vgg16': (1,)}, _build_fcn32s, {'vgg16': 'vgg16'},
                     'imagenet', 'FCN-32s, VGG16 encoder'),
    'deeplabv3': Family(('resnet101', 'resnet50'), {'resnet101': (8,), 'resnet50': (8,)},
                        _build_deeplabv3,
                        {'resnet101': 'resnet101_v1s', 'resnet50': 'resnet50_v1s'},
                        'imagenet', 'DeepLabv3, GluonCV model zoo, dilated ResNet-v1s'),
    'deconvnet': Family(('vgg16bn',), {'vgg16bn': (1,)}, _build_deconvnet,
                        {'vgg16bn': 'vgg16_bn'}, 'imagenet',
                        'DeconvNet (Noh et al.), VGG16-BN encoder'),
}

# The authors' released models; their files are ``<label>_ep-0001.params`` (md5 sums in
# models/checksum.md5).
RELEASED = ('ilsvrc-cls_rna-a_cls1000', 'ilsvrc-cls_rna-a1_cls1000', 'cityscapes_rna-a1_cls19_s8',
            'voc_rna-a1_cls21_s8', 'voc_rna-a1_cls21_s8_coco', 'ade20k_rna-a1_cls150_s8')

CLASSIFICATION = ('ilsvrc-cls_rna-a_cls1000', 'ilsvrc-cls_rna-a1_cls1000',
                  'ilsvrc-cls_rna-a-mini_cls1000', 'ilsvrc-cls_rna-a1-mini_cls1000',
                  'demo-cls_rna-a1-mini_cls5')
SEGMENTATION = ('cityscapes_rna-a1_cls19_s8', 'cityscapes_rna-a1_cls19_s16',
                'voc_rna-a1_cls21_s8', 'voc_rna-a1_cls21_s8_coco', 'ade20k_rna-a1_cls150_s8',
                'cityscapes_rna-a_cls19_s16',
                'cityscapes_rna-a1-mini_cls19_s8', 'cityscapes_rna-a1-mini_cls19_s16',
                'cityscapes_rna-a1-mini_cls19_s32')
# One label per compared family (any dataset and class count build the same way).
FAMILY_SEGMENTATION = ('cityscapes_fcn32s-vgg16_cls19', 'cityscapes_deeplabv3-resnet101_cls19',
                       'cityscapes_deconvnet-vgg16bn_cls19')
REGISTERED = {'classification': CLASSIFICATION + ('ilsvrc-cls_gluon-resnet101-v1_cls1000',),
              'segmentation': SEGMENTATION + FAMILY_SEGMENTATION}

# The ``<dataset>`` names a label may carry. Segmentation: each has a spec (label encoding)
# in the application's issegm.datasets, whose DATASET_NAMES a test keeps equal to this
# tuple; 'folder': own data with a classes.yaml. Classification: lists
# ``<data root>/<split>.lst``, or an image folder per class.
SEGMENTATION_DATASETS = ('cityscapes', 'voc', 'ade20k', 'coco', 'pascal-context', 'folder')
CLASSIFICATION_DATASETS = ('ilsvrc-cls', 'demo-cls', 'folder')

_LABEL = re.compile(r'^(?P<dataset>[a-z0-9+-]+)_(?P<family>%s)-(?P<net>[a-z0-9-]+)'
                    r'_cls(?P<classes>\d+)(?:_s(?P<stride>\d+))?(?:_[A-Za-z0-9+-]+)*$'
                    % '|'.join(sorted(FAMILIES)))


def dataset_names():
    """Every dataset a label may name: the segmentation ones, then the classification ones."""
    return SEGMENTATION_DATASETS + tuple(n for n in CLASSIFICATION_DATASETS
                                         if n not in SEGMENTATION_DATASETS)


def parse_label(label):
    """``'cityscapes_rna-a1_cls19_s8'`` -> ModelSpec; ValueError listing valid labels, or
    the valid dataset names when the dataset part names no known dataset (a typo such as
    ``cityscape_...`` would otherwise build and train silently)."""
    m = _LABEL.match(label)
    if m is None:
        raise ValueError('cannot parse model label %r: expected '
                         '<dataset>_<family>-<net>_cls<C>[_s<stride>] (families: %s), e.g. %s'
                         % (label, ', '.join(sorted(FAMILIES)),
                            ', '.join(SEGMENTATION[:1] + CLASSIFICATION[:2])))
    family = m.group('family')
    stride = m.group('stride')
    if stride is None:
        stride = 32 if family == 'rna' else FAMILIES[family].strides.get(m.group('net'), (0,))[0]
    known = dataset_names()
    if m.group('dataset') not in known:
        raise ValueError('model label %r: unknown dataset %r; valid datasets: %s'
                         % (label, m.group('dataset'), ', '.join(known)))
    return ModelSpec(label, m.group('dataset'), m.group('net'), int(m.group('classes')),
                     int(stride), family)


def family_table(spec, task):
    """Checks a non-ResNet-38 label's net, stride and task; ValueError if wrong."""
    fam = FAMILIES[spec.family]
    if spec.net_name not in fam.nets:
        raise ValueError('unknown network %s-%s; known: %s' % (
            spec.family, spec.net_name, ', '.join('%s-%s' % (f, n) for f in sorted(FAMILIES)
                                                  for n in FAMILIES[f].nets
                                                  if task in FAMILIES[f].tasks)))
    if spec.feat_stride not in fam.strides[spec.net_name]:
        raise ValueError('%s-%s has no output stride %d; valid: %s' % (
            spec.family, spec.net_name, spec.feat_stride, list(fam.strides[spec.net_name])))
    if task not in fam.tasks:
        raise ValueError('%s-%s is a %s network only' % (spec.family, spec.net_name,
                                                           ' and '.join(fam.tasks)))


def label_from_weights(path):
    """``.../cityscapes_rna-a1_cls19_s8_ep-0001.params`` -> (label, epoch)."""
    base = os.path.basename(path)
    m = re.match(r'^(?P<label>.+)_ep-(?P<epoch>\d+)\.params$', base)
    if m is None:
        raise ValueError('%s: weights file name must be <model label>_ep-<epoch>.params '
                         '(or pass --model)' % path)
    return m.group('label'), int(m.group('epoch'))


def resolve_label(label, task):
    """``(ModelSpec, stage table)`` of ``label``; ValueError listing the registered labels."""
    if task not in REGISTERED:
        raise ValueError('unknown task %r; valid: %s' % (task, ', '.join(REGISTERED)))
    try:
        spec = parse_label(label)
        if spec.family != 'rna':
            family_table(spec, task)
            return spec, None
        return spec, stage_table(spec.net_name, spec.feat_stride, task == 'segmentation')
    except ValueError as err:
        raise ValueError('%s; registered %s labels: %s'
                         % (err, task, ', '.join(REGISTERED[task]))) from None


POOL_STYLES = ('caffe', 'same')


BN_STATS = ('frozen', 'batch', 'frozen-backbone')


def set_bn_statistics(net, mode):
    """Which BatchNorm layers of ``net`` use (and keep) their moving statistics.

    ``'frozen'``: all (gamma and beta still train); ``'batch'``: none (batch statistics,
    moving averages updated); ``'frozen-backbone'``: all but those of the head
    (``net.head_names``), whose statistics are learned (the Watershed rule).
    """
    if mode not in BN_STATS:
        raise ValueError('unknown BatchNorm statistics mode %r; valid: %s'
                         % (mode, ', '.join(BN_STATS)))
    heads = tuple(name + '_' for name in net.head_names)

    for block in walk_blocks(net):
        if isinstance(block, mx.gluon.nn.BatchNorm):
            in_head = block.gamma.name.startswith(heads)
            set_global_stats(block, mode == 'frozen' or (
                mode == 'frozen-backbone' and not in_head))


def build_model(label, task, freeze_bn=False, pool_style=None, head='2conv', bn_stats=None):
    """An uninitialised network for ``label``.

    task: ``'classification'`` (``(N, C)`` scores) or ``'segmentation'`` (dilated FCN,
    ``(N, C, ceil(H/s), ceil(W/s))`` scores; the other families: see :data:`FAMILIES`).
    pool_style (Model A's 3x3/2 max pools): ``'same'`` (pad 1; the default, the authors'
    for a new Model A) or ``'caffe'`` (pad 0, floor; only to reproduce the released Model A,
    see :func:`recorded_pool_style`).
    head: the ResNet-38 FCN head (``2conv``, ``1conv``, ``bn-2conv``). bn_stats: see
    :func:`set_bn_statistics` (default: ``'frozen'`` if freeze_bn, else as built).
    """
    spec, table = resolve_label(label, task)
    if pool_style not in (None,) + POOL_STYLES:
        raise ValueError('unknown pool style %r; valid: %s' % (pool_style, ', '.join(POOL_STYLES)))
    pool_pad = 0 if pool_style == 'caffe' else 1
    if spec.family != 'rna':
        net = FAMILIES[spec.family].build(spec.net_name, spec.classes)
    elif task == 'classification':
        net = ResNet38Classifier(table, spec.classes, pool_pad=pool_pad, freeze_bn=freeze_bn)
    else:
        net = ResNet38FCN(table, spec.classes, head=head, freeze_bn=freeze_bn,
                          pool_pad=pool_pad)
    if bn_stats is not None:
        set_bn_statistics(net, bn_stats)
    elif freeze_bn and spec.family != 'rna':
        set_bn_statistics(net, 'frozen')
    net.spec = spec
    return net


# The released Model A was trained with MXNet's old pooling shape rule; its pools need the
# "caffe" style (pad 0) to give the authors' outputs.
RELEASED_MODEL_A = 'ilsvrc-cls_rna-a_cls1000'


def recorded_pool_style(weights):
    """The pool style the weights file ``weights`` was trained with, or None if unknown.

    A training run records its style as ``pool_top_infer_style`` in
    ``<label>_config.yaml`` beside its checkpoints; without such a file, the authors'
    released Model A (``ilsvrc-cls_rna-a_cls1000``) is ``'caffe'``.
    """
    import yaml
    try:
        label, _ = label_from_weights(weights)
    except ValueError:
        return None
    config = os.path.join(os.path.dirname(weights), label + '_config.yaml')
    if os.path.isfile(config):
        with open(config) as f:
            style = (yaml.safe_load(f) or {}).get('pool_top_infer_style')
        if style in POOL_STYLES:
            return style
    if label == RELEASED_MODEL_A:
        return 'caffe'
    return None


def default_pool_style(label, weights=None):
    """Model A's pool style when none is asked for: the one ``weights`` were trained with
    (:func:`recorded_pool_style`), else ``'caffe'`` for the released Model A's label (the
    network of the released weights), else ``'same'`` (the authors' for a new model)."""
    recorded = recorded_pool_style(weights) if weights else None
    return recorded or ('caffe' if label == RELEASED_MODEL_A else 'same')


def new_layer_init():
    """The authors' initializer for new layers: Xavier, gaussian, fan-in, magnitude 2."""
    return mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)


def get_model(label, task, pretrained=None, ctx=None, backbone_only=None, allow_missing=False,
              **kwargs):
    """Build ``label`` and load ``pretrained`` (a released-format path) or initialise it.

    ``backbone_only``: load only the backbone from ``pretrained`` (e.g. ImageNet weights into
    a segmentation model), initialise the head; by default it is done when a segmentation
    model is given an ``ilsvrc-cls`` file. ``allow_missing``: the authors' ``mod.fit(...,
    allow_missing=True)`` for a new model started from another one's weights: every
    parameter whose released key is in the file with the same shape is loaded, the others
    are initialised (Xavier, gaussian, fan-in, magnitude 2) and reported in ``skipped``
    (``mismatched``: those whose key is in the file with another shape); keys of the file
    the network lacks are reported in ``ignored``. Otherwise loading is strict.
    ``pool_style`` (Model A): by default :func:`default_pool_style` of ``label`` and
    ``pretrained``. The load
    report ``{'loaded', 'skipped', 'mismatched', 'ignored'}`` (released keys) is kept in
    ``net.load_report``.
    """
    ctx = ctx or [mx.cpu()]
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    if task == 'classification' and kwargs.get('pool_style') is None:
        kwargs['pool_style'] = default_pool_style(label, pretrained)
    net = build_model(label, task, **kwargs)
    net.load_report = None
    if net.spec.family != 'rna':
        return _init_family_model(net, pretrained, ctx)
    if pretrained is None:
        net.initialize(new_layer_init(), ctx=ctx)
        return net
    if backbone_only is None:
        backbone_only = task == 'segmentation' and not allow_missing and \
            os.path.basename(pretrained).startswith('ilsvrc-cls_')
    if allow_missing:
        net.load_report = _load_matching(net, pretrained, ctx)
    elif backbone_only:
        heads = tuple(name + '_' for name in net.head_names)
        net.load_report = load_params(net, pretrained, ctx, skip_prefixes=heads,
                                      source='backbone')
        head_params = net.collect_params('|'.join(name + '_.*' for name in net.head_names))
        head_params.initialize(new_layer_init(), ctx=ctx)
    else:
        net.load_report = load_params(net, pretrained, ctx)
    net.load_report.setdefault('mismatched', [])
    return net


def _load_matching(net, path, ctx):
    """Load the parameters of ``net`` found in ``path`` with the same shape; initialise the
    rest with :func:`new_layer_init`. Returns the load report (released keys)."""
    arrays = read_params(path)
    wanted = released_keys(net)
    mismatched = sorted(k for k, p in wanted.items()
                        if k in arrays and not _compatible(p.shape, arrays[k].shape))
    loaded = sorted(k for k in wanted if k in arrays and k not in mismatched)
    skipped = sorted(k for k in wanted if k not in loaded)
    for key in loaded:
        load_into(wanted[key], arrays[key].astype(wanted[key].dtype, copy=False), ctx)
    init = new_layer_init()
    for key in skipped:
        wanted[key].initialize(None, ctx, default_init=init)
    return {'loaded': loaded, 'skipped': skipped, 'mismatched': mismatched,
            'ignored': sorted(set(arrays) - set(wanted))}


def _init_family_model(net, pretrained, ctx):
    """Initialise a compared family's network, then load ``pretrained``: a checkpoint in
    the released format (strict), or a Gluon/GluonCV model-zoo ImageNet classifier file
    whose feature layers become the backbone (the rest keeps its initialisation)."""
    from .families.backbone import is_released_format, load_zoo_backbone
    # force: GluonCV initialises its head itself, on one device only
    net.initialize(new_layer_init(), ctx=ctx, force_reinit=True)
    if any(0 in p.shape for p in net.collect_params().values()):
        # GluonCV leaves some input channels to be inferred: one small forward fixes them
        net(mx.nd.zeros((1, 3, 32, 32), ctx=ctx[0]))
    if pretrained is None:
        return net
    if not os.path.isfile(pretrained):
        load_params(net, pretrained, ctx)  # the one-line missing-file error
    if is_released_format(pretrained):
        net.load_report = load_params(net, pretrained, ctx)
        return net
    zoo_name = FAMILIES[net.spec.family].zoo_backbones[net.spec.net_name]
    loaded = load_zoo_backbone(net, pretrained, ctx, zoo_name)
    from .params import released_key
    loaded_keys = sorted(released_key(n) for n in loaded)
    net.load_report = {'loaded': loaded_keys, 'ignored': [], 'mismatched': [], 'skipped': sorted(
        released_key(n) for n in net.collect_params() if n not in set(loaded))}
    return net
