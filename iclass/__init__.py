"""ImageNet classification with ResNet-38 Model A / A1 and Gluon model-zoo networks by name."""
from rn38 import zoo as _zoo

REGISTERED = _zoo.REGISTERED['classification']


def get_model(label, pretrained=None, ctx=None, **kwargs):
    """Classification network for ``label`` (e.g. ``ilsvrc-cls_rna-a1_cls1000``).

    ``pretrained``: path of a released-format ``.params`` file, or None to initialise.
    ``forward(x)``: ``(N, 3, H, W)`` float32 -> pre-softmax scores ``(N, classes)``.
    """
    return _zoo.get_model(label, 'classification', pretrained, ctx, **kwargs)
