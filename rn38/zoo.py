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
from .params import load_params

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

_LABEL = re.compile(r'^(?P<dataset>[a-z0-9+-]+)_rna-(?P<net>[a-z0-9-]+)_cls(?P<classes>\d+)'
                    r'(?:_s(?P<stride>\d+))?(?:_[A-Za-z0-9+-]+)*$')


def parse_label(label):
    """``'cityscapes_rna-a1_cls19_s8'`` -> ModelSpec; ValueError listing valid labels."""
    m = _LABEL.match(label)
    if m is None:
        raise ValueError('cannot parse model label %r: expected '
                         '<dataset>_rna-<net>_cls<C>[_s<stride>], e.g. %s'
                         % (label, ', '.join(SEGMENTATION[:1] + CLASSIFICATION[:2])))
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


def build_model(label, task, freeze_bn=False, pool_style=None, head='2conv'):
    """An uninitialised network for ``label``.

    task: ``'classification'`` (``(N, C)`` scores) or ``'segmentation'`` (dilated FCN,
    ``(N, C, ceil(H/s), ceil(W/s))`` scores). pool_style (Model A only): ``'caffe'``
    (3x3/2 max pools with pad 0, the released Model A; default) or ``'same'`` (pad 1).
    """
    spec, table = resolve_label(label, task)
    if pool_style not in (None, 'caffe', 'same'):
        raise ValueError('unknown pool style %r; valid: caffe, same' % pool_style)
    pool_pad = 1 if pool_style == 'same' else 0
    if task == 'classification':
        net = ResNet38Classifier(table, spec.classes, pool_pad=pool_pad, freeze_bn=freeze_bn)
    else:
        net = ResNet38FCN(table, spec.classes, head=head, freeze_bn=freeze_bn,
                          pool_pad=pool_pad)
    net.spec = spec
    return net


def new_layer_init():
    """The authors' initializer for new layers: Xavier, gaussian, fan-in, magnitude 2."""
    return mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)


def get_model(label, task, pretrained=None, ctx=None, backbone_only=None, **kwargs):
    """Build ``label`` and load ``pretrained`` (a released-format path) or initialise it.

    ``backbone_only``: load only the backbone from ``pretrained`` (e.g. ImageNet weights into
    a segmentation model), initialise the head; by default it is done when a segmentation
    model is given an ``ilsvrc-cls`` file. The load report is kept in ``net.load_report``.
    """
    ctx = ctx or [mx.cpu()]
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    net = build_model(label, task, **kwargs)
    net.load_report = None
    if pretrained is None:
        net.initialize(new_layer_init(), ctx=ctx)
        return net
    if backbone_only is None:
        backbone_only = task == 'segmentation' and \
            os.path.basename(pretrained).startswith('ilsvrc-cls_')
    if backbone_only:
        heads = tuple(name + '_' for name in net.head_names)
        net.load_report = load_params(net, pretrained, ctx, skip_prefixes=heads,
                                      source='backbone')
        head_params = net.collect_params('|'.join(name + '_.*' for name in net.head_names))
        head_params.initialize(new_layer_init(), ctx=ctx)
    else:
        net.load_report = load_params(net, pretrained, ctx)
    return net
