"""FCN-32s with a VGG16 encoder (Long, Shelhamer, Darrell), as specified in issue 12.

Layers: VGG16's 13 3x3 convolutions (pad 1) + ReLU with 2x2/2 max pools after each of
the five stages; ``fc6`` 1x1 conv 512 -> 4096 + ReLU + Dropout 0.5; ``fc7`` 1x1 conv
4096 -> 4096 + ReLU + Dropout 0.5; ``score_fr`` 1x1 conv 4096 -> C; ``upscore`` a 64x64
transposed convolution, stride 32, no bias (class-wise bilinear at start, then
learned).

``upscore`` turns a ``(H/32, W/32)`` map into ``H + 32`` x ``W + 32`` pixels; the crop
keeps rows/columns ``16 .. 16 + H``, which centres the 64-pixel kernel of each cell on
that cell's 32x32 block. Scores are therefore at full resolution (output stride 1).
Dropout is channel-wise (whole feature maps, PyTorch's Dropout2d): ``nn.Dropout`` with
``axes=(2, 3)`` shares the mask over the spatial axes.
"""
import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from .padding import PaddedInput
from .vgg import vgg16_encoder, vgg16_widths

UPSCORE_KERNEL, UPSCORE_STRIDE = 64, 32


class ClassWiseBilinear(mx.init.Initializer):
    """Bilinear upsampling of each class map on its own: the bilinear kernel on the
    diagonal ``weight[c, c]``, zeros elsewhere (``mx.init.Bilinear`` mixes all classes)."""

    def _init_weight(self, _, arr):
        k = arr.shape[-1]
        f = (k + 1) // 2
        centre = (k - 1) / 2.0 if k % 2 else f - 0.5
        taps = 1 - abs(mx.nd.arange(k) - centre) / f
        kernel = mx.nd.dot(taps.reshape((k, 1)), taps.reshape((1, k)))
        weight = mx.nd.zeros(arr.shape)
        for c in range(min(arr.shape[0], arr.shape[1])):
            weight[c, c] = kernel
        arr[:] = weight
HEAD_NAMES = ('fc6', 'fc7', 'score_fr', 'upscore')


class FCN32s(HybridBlock):
    """``(N, 3, H, W)``, H and W multiples of 32 -> scores ``(N, classes, H, W)``.

    ``width_divisor`` > 1 narrows every layer (tests only; 1 is the specified network).
    """

    BACKBONE = ('encoder',)

    def __init__(self, classes, width_divisor=1, dropout=0.5):
        super().__init__(prefix='')
        stages, fc = vgg16_widths(width_divisor)
        self.classes = classes
        with self.name_scope():
            self.encoder, in_channels = vgg16_encoder(stages, pools=True)
            self.head = nn.HybridSequential(prefix='')
            self.head.add(nn.Conv2D(fc, 1, in_channels=in_channels, prefix='fc6_'),
                          nn.Activation('relu'), nn.Dropout(dropout, axes=(2, 3)),
                          nn.Conv2D(fc, 1, in_channels=fc, prefix='fc7_'),
                          nn.Activation('relu'), nn.Dropout(dropout, axes=(2, 3)),
                          nn.Conv2D(classes, 1, in_channels=fc, prefix='score_fr_'))
            self.upscore = nn.Conv2DTranspose(
                classes, UPSCORE_KERNEL, strides=UPSCORE_STRIDE, use_bias=False,
                in_channels=classes, weight_initializer=ClassWiseBilinear(), prefix='upscore_')

    def hybrid_forward(self, F, x):
        up = self.upscore(self.head(self.encoder(x)))
        offset = (UPSCORE_KERNEL - UPSCORE_STRIDE) // 2
        up = F.slice(up, begin=(None, None, offset, offset), end=(None, None, None, None))
        return F.slice_like(up, x, axes=(2, 3))


def build(classes, width_divisor=1):
    """FCN32s for inputs of any size (padded to a multiple of 32): stride-1 scores."""
    net = PaddedInput(FCN32s(classes, width_divisor), multiple=32)
    net.classes, net.feat_stride, net.head_names = classes, 1, HEAD_NAMES
    return net
