"""VGG16 convolution stages (Simonyan & Zisserman), the encoder of FCN32s and DeconvNet.

Parameter names follow the Caffe models of those papers: ``conv{stage}_{i}`` (3x3, pad 1,
bias) and, with BatchNorm, ``conv{stage}_{i}_bn``; pools are 2x2/2 max pools ``pool{stage}``.
"""
from mxnet.gluon import nn

# Output channels of the convolutions of the five stages.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Output channels of the fully connected layers fc6 and fc7, as 1x1 (or 7x7) convolutions.
VGG16_FC = 4096


def conv_bn_relu(name, in_channels, channels, kernel=3, pad=1, batch_norm=False,
                 transpose=False):
    """``name`` conv (or transposed conv) [+ ``name_bn`` BatchNorm] + ReLU as a sequence."""
    seq = nn.HybridSequential(prefix='')
    layer = nn.Conv2DTranspose if transpose else nn.Conv2D
    seq.add(layer(channels, kernel, padding=pad, in_channels=in_channels, use_bias=True,
                  prefix=name + '_'))
    if batch_norm:
        seq.add(nn.BatchNorm(in_channels=channels, prefix=name + '_bn_'))
    seq.add(nn.Activation('relu'))
    return seq


def vgg16_stage(stage, in_channels, widths, batch_norm=False):
    """Stage ``stage`` (1-based) without its pool: ``(N, in_channels, H, W) -> (N, widths[-1],
    H, W)``."""
    seq = nn.HybridSequential(prefix='')
    for i, channels in enumerate(widths):
        seq.add(conv_bn_relu('conv%d_%d' % (stage, i + 1), in_channels, channels,
                             batch_norm=batch_norm))
        in_channels = channels
    return seq


def vgg16_encoder(stages, batch_norm=False, pools=False):
    """VGG16's five stages (widths ``stages``, see :func:`vgg16_widths`) in one sequence,
    each followed by a 2x2/2 max pool if ``pools``. Returns ``(sequence, output channels)``;
    call it inside the network's ``name_scope`` (the parameter names are ``conv<s>_<i>``)."""
    seq = nn.HybridSequential(prefix='')
    in_channels = 3
    for i, widths in enumerate(stages):
        seq.add(vgg16_stage(i + 1, in_channels, widths, batch_norm=batch_norm))
        if pools:
            seq.add(nn.MaxPool2D(2, 2))
        in_channels = widths[-1]
    return seq, in_channels


def vgg16_widths(width_divisor=1):
    """``(stage widths, fc width)`` of the VGG16-based networks: :data:`VGG16_STAGES` (for
    :func:`vgg16_encoder`) and :data:`VGG16_FC` (``fc6``/``fc7`` channels), each divided by
    ``width_divisor`` (1 = the real network; larger values give narrow copies of the same
    structure for tests), at least 1."""
    stages = tuple(tuple(max(1, c // width_divisor) for c in stage) for stage in VGG16_STAGES)
    return stages, max(1, VGG16_FC // width_divisor)
