"""Semantic segmentation with the dilated ResNet-38 (Model A1) FCNs and the compared families."""
# rn38.zoo (and with it MXNet) is loaded by the first use, not by importing this package
# (see rn38.runtime.use_all_cores).


def __getattr__(name):
    if name == 'REGISTERED':  # the registered labels of this task
        from rn38 import zoo
        return zoo.REGISTERED['segmentation']
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


def get_model(label, pretrained=None, ctx=None, **kwargs):
    """Segmentation network for ``label`` (e.g. ``cityscapes_rna-a1_cls19_s8``).

    ``pretrained``: path of a released-format ``.params`` file (an ``ilsvrc-cls_*`` file
    loads the backbone only and initialises the head), or None to initialise.
    ``forward(x)``: ``(N, 3, H, W)`` float32 -> scores ``(N, C, ceil(H/s), ceil(W/s))``.
    """
    from rn38 import zoo
    return zoo.get_model(label, 'segmentation', pretrained, ctx, **kwargs)
