"""Semantic segmentation with the dilated ResNet-38 (Model A1) FCNs and the compared families."""
from rn38 import zoo as _zoo

REGISTERED = _zoo.REGISTERED['segmentation']


def get_model(label, pretrained=None, ctx=None, **kwargs):
    """Segmentation network for ``label`` (e.g. ``cityscapes_rna-a1_cls19_s8``).

    ``pretrained``: path of a released-format ``.params`` file (an ``ilsvrc-cls_*`` file
    loads the backbone only and initialises the head), or None to initialise.
    ``forward(x)``: ``(N, 3, H, W)`` float32 -> scores ``(N, C, ceil(H/s), ceil(W/s))``.
    """
    return _zoo.get_model(label, 'segmentation', pretrained, ctx, **kwargs)
