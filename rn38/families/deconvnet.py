"""DeconvNet (Noh, Hong, Han 2015): a VGG16-BN encoder and its mirrored decoder.

Encoder: VGG16's 13 convolutions, each + BatchNorm + ReLU, 2x2/2 max pools that record
their argmax (:mod:`rn38.families.unpool`); ``fc6`` 7x7 conv 512 -> 4096 (no padding) +
BN + ReLU; ``fc7`` 1x1 conv 4096 -> 4096 + BN + ReLU. Decoder: ``fc6_deconv`` 7x7
transposed conv 4096 -> 512 + BN + ReLU, then per stage (5 down to 1) unpooling at the
recorded maxima and 3x3 transposed convolutions + BN + ReLU mirroring the encoder's
convolutions (the last one of a stage narrows to the previous stage's width), and
``seg_score`` 1x1 conv -> C. Scores are at full resolution (output stride 1).

``fc6`` without padding needs a 7x7 map at stride 32, so inputs are at least 224 pixels
(smaller ones are padded by :class:`PaddedInput`). No dropout.
"""
from mxnet.gluon import HybridBlock, nn

from .padding import PaddedInput
from .unpool import MaxPoolWithMask, unpool
from .vgg import conv_bn_relu, vgg16_encoder, vgg16_widths

FC6_KERNEL = 7


def decoder_widths(stages):
    """Output channels of the transposed convs of each decoder stage (stage 5 first)."""
    out = []
    for i in range(len(stages) - 1, -1, -1):
        widths = list(stages[i])
        widths[-1] = stages[i - 1][-1] if i > 0 else stages[0][-1]
        out.append((i + 1, stages[i][-1], tuple(widths)))
    return out


class DeconvNet(HybridBlock):
    """``(N, 3, H, W)``, H and W multiples of 32 and >= 224 -> scores ``(N, classes, H, W)``.

    ``width_divisor`` > 1 narrows every layer (tests only; 1 is the published network).
    """

    BACKBONE = ('stages',)

    def __init__(self, classes, width_divisor=1):
        super().__init__(prefix='')
        stages, fc = vgg16_widths(width_divisor)
        self.classes = classes
        with self.name_scope():
            self.stages, in_channels = vgg16_encoder(stages, batch_norm=True)
            self.pool = MaxPoolWithMask()
            self.fc = nn.HybridSequential(prefix='')
            self.fc.add(conv_bn_relu('fc6', in_channels, fc, FC6_KERNEL, 0, batch_norm=True),
                        conv_bn_relu('fc7', fc, fc, 1, 0, batch_norm=True),
                        conv_bn_relu('fc6_deconv', fc, in_channels, FC6_KERNEL, 0,
                                     batch_norm=True, transpose=True))
            self.decoder = nn.HybridSequential(prefix='')
            for stage, c_in, widths in decoder_widths(stages):
                seq = nn.HybridSequential(prefix='')
                for j, c in enumerate(widths):
                    seq.add(conv_bn_relu('deconv%d_%d' % (stage, j + 1), c_in, c,
                                         batch_norm=True, transpose=True))
                    c_in = c
                self.decoder.add(seq)
            self.score = nn.Conv2D(classes, 1, in_channels=c_in, prefix='seg_score_')
        self.head_names = tuple(
            ['fc6', 'fc6_bn', 'fc7', 'fc7_bn', 'fc6_deconv', 'fc6_deconv_bn', 'seg_score'] +
            ['deconv%d_%d%s' % (s, j + 1, bn) for s, _, w in decoder_widths(stages)
             for j in range(len(w)) for bn in ('', '_bn')])

    def hybrid_forward(self, F, x):
        masks = []
        for stage in self.stages:
            pooled_and_masks = self.pool(stage(x))
            x = pooled_and_masks[0]
            masks.append(pooled_and_masks[1:])
        x = self.fc(x)
        for stage, stage_masks in zip(self.decoder, reversed(masks)):
            x = stage(unpool(F, x, stage_masks))
        return self.score(x)


def build(classes, width_divisor=1):
    """DeconvNet for inputs of any size (padded to a multiple of 32, at least 224)."""
    inner = DeconvNet(classes, width_divisor)
    net = PaddedInput(inner, multiple=32, min_size=32 * FC6_KERNEL)
    net.classes, net.feat_stride, net.head_names = classes, 1, inner.head_names
    return net
