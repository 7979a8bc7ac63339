"""DeepLabv3 (Chen et al. 2017) from GluonCV's model zoo, scoring at output stride 8.

The network is ``gluoncv.model_zoo.DeepLabV3`` (dilated ResNet-v1s backbone, ASPP with
rates 12/24/36 and image pooling, 3x3 conv + BN + ReLU + Dropout 0.1, 1x1 to C), without
its auxiliary FCN head. Two adaptations so that it runs through this project's
pipeline: the scores are returned at stride 8 (before GluonCV's bilinear resize to a size
fixed at construction); our training samples labels at stride 8 and our evaluation
resizes probabilities as for the other networks. GluonCV's image-pooling branch also
resizes its 1x1 map to a fixed size; a bilinear resize of a 1x1 map is that value
everywhere, so it is replaced by a broadcast to the feature map, the same for any size.
GluonCV's lr x10 on its head is kept (the trainer's lr x2 on biases and betas replaces it
for those).
"""
from mxnet.gluon import HybridBlock

OUT_STRIDE = 8
# Our net names -> GluonCV's backbone names (``get_backbone``) and its ImageNet classifier.
BACKBONES = {'resnet101': ('resnet101', 'resnet101_v1s'), 'resnet50': ('resnet50', 'resnet50_v1s')}


def _broadcast_pooling_class():
    from gluoncv.model_zoo.deeplabv3 import _AsppPooling

    class BroadcastAsppPooling(_AsppPooling):
        """GluonCV's image pooling branch, broadcast to the input's size."""

        def hybrid_forward(self, F, x):
            return F.broadcast_like(self.gap(x), x, lhs_axes=(2, 3), rhs_axes=(2, 3))

    return BroadcastAsppPooling


class DeepLabV3Scores(HybridBlock):
    """``(N, 3, H, W)``, H and W multiples of 8 -> scores ``(N, classes, H/8, W/8)``."""

    BACKBONE = ('model.conv1', 'model.bn1', 'model.layer1', 'model.layer2', 'model.layer3',
                'model.layer4')

    def __init__(self, classes, backbone='resnet101'):
        super().__init__(prefix='')
        from gluoncv.model_zoo import DeepLabV3
        self.classes, self.feat_stride = classes, OUT_STRIDE
        with self.name_scope():
            self.model = DeepLabV3(classes, backbone=BACKBONES[backbone][0], aux=False,
                                   pretrained_base=False)
        self.model.head.aspp.concurent[-1].__class__ = _broadcast_pooling_class()
        self.head_names = (self.model.head.prefix.rstrip('_'),)
        self.zoo_classifier = BACKBONES[backbone][1]

    def hybrid_forward(self, F, x):
        _, c4 = self.model.base_forward(x)
        return self.model.head(c4)


def build(classes, backbone='resnet101'):
    net = DeepLabV3Scores(classes, backbone)
    return net
