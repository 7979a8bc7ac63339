"""Gluon model-zoo ImageNet architectures (``mxnet.gluon.model_zoo.vision``) as classifiers
of this project, by name: label ``<dataset>_gluon-<name with - for _>_cls<C>``, e.g.
``folder_gluon-resnet101-v1_cls50`` for ``resnet101_v1`` with 50 classes."""
import inspect

from mxnet.gluon import HybridBlock


def zoo_names():
    """The classifier constructors of ``mxnet.gluon.model_zoo.vision``, e.g. ``resnet101_v1``."""
    from mxnet.gluon.model_zoo import vision
    return sorted(n for n in dir(vision) if inspect.isfunction(getattr(vision, n))
                  and not n.startswith('get_'))


def label_net(name):
    """``resnet101_v1`` -> ``resnet101-v1`` (the label's net part)."""
    return name.replace('_', '-')


class GluonClassifier(HybridBlock):
    """``(N, 3, H, W) -> (N, classes)`` scores of the model-zoo network ``name`` (no weights).

    Its parameter names are fixed by a private name scope (``<arch>0_...``), so checkpoints
    written by one process load in another.
    """

    BACKBONE = ('model.features',)

    def __init__(self, name, classes):
        super().__init__(prefix='')
        from mxnet.gluon.model_zoo import vision
        self.classes, self.zoo_name = classes, name
        with self.name_scope():
            self.model = getattr(vision, name)(classes=classes, pretrained=False)
        self.head_names = (self.model.output.prefix.rstrip('_'),)
        self.feat_stride = 32

    @property
    def fc(self):
        """The final classification layer (what ``iclass.train.init_classifier`` sets)."""
        return self.model.output

    def hybrid_forward(self, F, x):
        return self.model(x)


def build(net_name, classes):
    return GluonClassifier(net_name.replace('-', '_'), classes)
