"""Model labels and the model registry.

A label follows the authors' grammar ``<dataset>_rna-<net>_cls<C>[_s<stride>][_<tag>...]``,
e.g. ``cityscapes_rna-a1_cls19_s8``, ``ilsvrc-cls_rna-a_cls1000``; a weights file is
``<label>_ep-<epoch>.params``. Any label that parses and names a known network and stride
builds; :data:`REGISTERED` lists the released ones and the small variants.
"""
import os
import re
from collections import namedtuple

import mxnet as mx

from .net import ResNet38Classifier, ResNet38FCN, stage_table
from .params import _compatible, load_params, read_params, released_keys

ModelSpec = namedtuple('ModelSpec', ['label', 'dataset', 'net_name', 'classes', 'feat_stride'])

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
REGISTERED = {'classification': CLASSIFICATION, 'segmentation': SEGMENTATION}

# Datasets of classification labels (their lists: ``<data root>/<split>.lst`` or
# ``iclass/data/<dataset>/``); segmentation datasets are those with a spec in
# :mod:`issegm.datasets`.
CLASSIFICATION_DATASETS = ('ilsvrc-cls', 'demo-cls')

_LABEL = re.compile(r'^(?P<dataset>[a-z0-9+-]+)_rna-(?P<net>[a-z0-9-]+)_cls(?P<classes>\d+)'
                    r'(?:_s(?P<stride>\d+))?(?:_[A-Za-z0-9+-]+)*$')


def dataset_names():
    """Every dataset a label may name: the segmentation specs, then the classification data."""
    from issegm.datasets import DATASET_NAMES
    packaged = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'iclass', 'data')
    extra = sorted(os.listdir(packaged)) if os.path.isdir(packaged) else []
    names = list(DATASET_NAMES) + list(CLASSIFICATION_DATASETS)
    return tuple(names + [n for n in extra if n not in names])


def parse_label(label):
    """``'cityscapes_rna-a1_cls19_s8'`` -> ModelSpec; ValueError listing valid labels, or
    the valid dataset names when the dataset part names no known dataset (a typo such as
    ``cityscape_...`` would otherwise build and train silently)."""
    m = _LABEL.match(label)
    if m is None:
        raise ValueError('cannot parse model label %r: expected '
                         '<dataset>_rna-<net>_cls<C>[_s<stride>], e.g. %s'
                         % (label, ', '.join(SEGMENTATION[:1] + CLASSIFICATION[:2])))
    known = dataset_names()
    if m.group('dataset') not in known:
        raise ValueError('model label %r: unknown dataset %r; valid datasets: %s'
                         % (label, m.group('dataset'), ', '.join(known)))
    return ModelSpec(label, m.group('dataset'), m.group('net'), int(m.group('classes')),
                     int(m.group('stride') or 32))


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
        return spec, stage_table(spec.net_name, spec.feat_stride, task == 'segmentation')
    except ValueError as err:
        raise ValueError('%s; registered %s labels: %s'
                         % (err, task, ', '.join(REGISTERED[task]))) from None


POOL_STYLES = ('caffe', 'same')


def build_model(label, task, freeze_bn=False, pool_style=None, head='2conv'):
    """An uninitialised network for ``label``.

    task: ``'classification'`` (``(N, C)`` scores) or ``'segmentation'`` (dilated FCN,
    ``(N, C, ceil(H/s), ceil(W/s))`` scores). pool_style (Model A's 3x3/2 max pools):
    ``'same'`` (pad 1; the default, the authors' for a new Model A) or ``'caffe'`` (pad 0,
    floor; only to reproduce the released Model A, see :func:`recorded_pool_style`).
    """
    spec, table = resolve_label(label, task)
    if pool_style not in (None,) + POOL_STYLES:
        raise ValueError('unknown pool style %r; valid: %s' % (pool_style, ', '.join(POOL_STYLES)))
    pool_pad = 0 if pool_style == 'caffe' else 1
    if task == 'classification':
        net = ResNet38Classifier(table, spec.classes, pool_pad=pool_pad, freeze_bn=freeze_bn)
    else:
        net = ResNet38FCN(table, spec.classes, head=head, freeze_bn=freeze_bn,
                          pool_pad=pool_pad)
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
        wanted[key]._load_init(arrays[key].astype(wanted[key].dtype, copy=False), ctx)
    init = new_layer_init()
    for key in skipped:
        wanted[key].initialize(None, ctx, default_init=init)
    return {'loaded': loaded, 'skipped': skipped, 'mismatched': mismatched,
            'ignored': sorted(set(arrays) - set(wanted))}
