"""ImageNet backbone weights from Gluon / GluonCV model-zoo ``.params`` files (given as a path).

The file is loaded (strictly) into the model-zoo classifier it belongs to, built without
weights, so nothing is downloaded; its feature layers are then copied in order into the
segmentation network's backbone, each parameter checked for shape. The classifier's own
head (VGG's fully connected layers, ResNet's ``fc``) is not used.
"""
import mxnet as mx

from ..gluon_internals import load_into
from ..params import ParamsError


def is_released_format(path):
    """True if ``path`` is a ``arg:``/``aux:`` file (this project's checkpoints)."""
    arrays = mx.nd.load(path)
    return isinstance(arrays, dict) and all(k.startswith(('arg:', 'aux:')) for k in arrays)


def build_zoo_classifier(name):
    """The Gluon (``mxnet.gluon.model_zoo.vision``) or GluonCV classifier ``name``, no weights."""
    from mxnet.gluon.model_zoo import vision
    try:
        return vision.get_model(name, pretrained=False)
    except ValueError:
        from gluoncv.model_zoo import get_model
        return get_model(name, pretrained=False)


def _ordered_params(blocks):
    params = []
    for block in blocks:
        params.extend(block.collect_params().values())
    return params


def backbone_blocks(net):
    """The blocks of ``net``'s ImageNet backbone, named by its class's ``BACKBONE``
    (dotted attribute paths; a :class:`PaddedInput` wrapper is looked through)."""
    net = getattr(net, 'inner', net)
    blocks = []
    for path in net.BACKBONE:
        block = net
        for attr in path.split('.'):
            block = getattr(block, attr)
        blocks.append(block)
    return blocks


def load_zoo_backbone(net, path, ctx, zoo_name):
    """Copy the feature layers of the model-zoo classifier ``zoo_name`` stored in ``path``
    into the backbone of ``net`` (:func:`backbone_blocks`). Returns the copied parameter names;
    :class:`ParamsError` (one line, naming the file) if the file does not fit."""
    source_net = build_zoo_classifier(zoo_name)
    try:
        source_net.load_parameters(path, ctx=mx.cpu())
    except (AssertionError, mx.base.MXNetError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParamsError('%s: not a Gluon model-zoo %s file (%s)' % (path, zoo_name, first)) \
            from None
    targets = _ordered_params(backbone_blocks(net))
    sources = [p for p in source_net.collect_params().values()
               if p.shape is not None and not p.name.startswith(source_net.prefix + 'dense')
               and not p.name.startswith(source_net.prefix + 'fc')]
    if len(sources) < len(targets):
        raise ParamsError('%s: %s has %d feature arrays, the backbone needs %d'
                          % (path, zoo_name, len(sources), len(targets)))
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    for target, source in zip(targets, sources):
        if len(target.shape) != len(source.shape) or any(
                t not in (0, s) for t, s in zip(target.shape, source.shape)):
            raise ParamsError('%s: shape mismatch for %s (from %s): file has %s, model '
                              'expects %s' % (path, target.name, source.name, source.shape,
                                              target.shape))
        load_into(target, source.data(), ctx)  # also completes a deferred shape
    return [p.name for p in targets]
