"""ImageNet classification with ResNet-38 Model A / A1 and Gluon model-zoo networks by name."""
# rn38.zoo (and with it MXNet) is loaded by the first use, not by importing this package
# (see rn38.runtime.use_all_cores).


def __getattr__(name):
    if name == 'REGISTERED':  # the registered labels of this task
        from rn38 import zoo
        return zoo.REGISTERED['classification']
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


def get_model(label, pretrained=None, ctx=None, **kwargs):
    """Classification network for ``label`` (e.g. ``ilsvrc-cls_rna-a1_cls1000``).

    ``pretrained``: path of a released-format ``.params`` file, or None to initialise.
    ``forward(x)``: ``(N, 3, H, W)`` float32 -> pre-softmax scores ``(N, classes)``.
    """
    from rn38 import zoo
    return zoo.get_model(label, 'classification', pretrained, ctx, **kwargs)
