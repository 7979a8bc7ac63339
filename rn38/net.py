"""ResNet-38 ("Wider or Deeper", Wu, Shen, van den Hengel 2019) as Gluon HybridBlocks.

A network is described by a stage table: one :class:`Level` row per level, as in the
authors' own description. Model A and Model A1 differ only in their rows (how a level is
left: max pooling or a strided first block of the next level), and so do the dilated
(FCN) variants (the stride of a level is turned into dilation).

Parameter names are the released ones (``res4b3_branch2b1_weight``, ``bn7_gamma``, ...);
the only difference with the released files is Gluon's ``running_mean``/``running_var``
for the file's ``moving_mean``/``moving_var``, handled in :mod:`rn38.params`.
"""
import math
from collections import namedtuple

from mxnet.gluon import nn, HybridBlock

BN_EPS = 1.001e-5

Level = namedtuple('Level', ['blocks', 'channels', 'kernels', 'down', 'dilate', 'dropout'])
Level.__doc__ = """One row of the stage table.

blocks:   residual blocks on the level (0 on level 1, which is the ``conv1a`` convolution).
channels: output channels of each convolution of a block (of ``conv1a`` on level 1).
kernels:  kernel size of each convolution of a block.
down:     how the feature stride doubles after this level: ``'pool'`` (3x3 max pool
          ``pool{level}`` after the level), ``'conv'`` (the first block of the next level
          has stride 2) or ``'none'``.
dilate:   keep stride 1 and double the dilation of the following levels instead (FCN);
          with ``down='pool'`` the pool becomes a 3x3 max pool of stride 1 and padding 1
          (the authors' ``_ds_by_pl``).
dropout:  dropout rate before the last convolution of each block of this level.
"""

_B33 = (3, 3)
_B131 = (1, 3, 1)


def _table(down, dilate_levels=(), dropout=(0.0, 0.0)):
    """The released ResNet-38 table with one down-sampling mode, dilation on some levels."""
    widths = [(64,), (128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048),
              (1024, 2048, 4096)]
    blocks = [0, 3, 3, 6, 3, 1, 1]
    rows = []
    for i, (b, c) in enumerate(zip(blocks, widths)):
        level = i + 1
        rows.append(Level(b, c, _B33 if len(c) == 2 else (_B131 if len(c) == 3 else (3,)),
                          down if level <= 5 else 'none', level in dilate_levels,
                          {6: dropout[0], 7: dropout[1]}.get(level, 0.0)))
    return tuple(rows)


def _small_table(down, dilate_levels=(), dropout=(0.0, 0.0)):
    """A narrow, shallow table with the same structure, for demos and tests."""
    widths = [(16,), (16, 16), (32, 32), (48, 48), (48, 64), (32, 64, 96), (48, 96, 128)]
    blocks = [0, 1, 1, 2, 1, 1, 1]
    return tuple(r._replace(blocks=b, channels=c)
                 for r, b, c in zip(_table(down, dilate_levels, dropout), blocks, widths))


# Segmentation A1 models drop out before the last 1x1 conv of levels 6 and 7 (the
# authors' ``rna_feat_a1(dropout=True)``; their ``rna_feat_a`` has no dropout).
SEG_DROPOUT = (0.3, 0.5)


def stage_table(net_name, feat_stride=32, segmentation=False):
    """Stage table of ``net_name`` (``a``, ``a1``, ``a1-mini``, ``a-mini``) at ``feat_stride``.

    Raises ValueError for an unknown name or a stride the family does not have.
    """
    builders = {'a': (_table, 'pool'), 'a1': (_table, 'conv'),
                'a-mini': (_small_table, 'pool'), 'a1-mini': (_small_table, 'conv')}
    if net_name not in builders:
        raise ValueError('unknown network rna-%s; known: %s'
                         % (net_name, ', '.join('rna-' + n for n in sorted(builders))))
    build, down = builders[net_name]
    # Levels whose down-sampling becomes dilation, per feature stride (the authors'
    # ``rna_feat_a1`` and ``rna_feat_a`` tables).
    strides = {32: (), 16: (5,), 8: (4, 5)} if down == 'conv' else {32: (), 16: (5,)}
    if feat_stride not in strides:
        raise ValueError('rna-%s has no feature stride %d; valid: %s'
                         % (net_name, feat_stride, sorted(strides)))
    dropout = SEG_DROPOUT if segmentation and down == 'conv' else (0.0, 0.0)
    return build(down, strides[feat_stride], dropout)


def table_feat_stride(table):
    """Total down-sampling factor of a stage table."""
    return 2 ** sum(1 for r in table[:-1] if r.down != 'none' and not r.dilate)


def path_radius(geometry):
    """Receptive-field radius (input pixels, rounded up) of a chain of windows.

    ``geometry``: ``(kernel, stride, dilation)`` of each convolution / pooling along the
    longest path, in forward order; each adds ``dilation * (kernel - 1) / 2`` times the
    stride of its input.
    """
    radius, stride = 0.0, 1
    for kernel, step, dilation in geometry:
        radius += dilation * (kernel - 1) / 2.0 * stride
        stride *= step
    return int(math.ceil(radius))


class BNReLU(HybridBlock):
    """BatchNorm then ReLU; the pre-activation of a residual conv."""

    def __init__(self, name, in_channels, freeze_bn=False, **kwargs):
        super().__init__(prefix='', **kwargs)
        with self.name_scope():
            self.bn = nn.BatchNorm(epsilon=BN_EPS, use_global_stats=freeze_bn,
                                   in_channels=in_channels, prefix=name + '_')

    def hybrid_forward(self, F, x):
        return F.relu(self.bn(x))


def _conv(name, in_channels, channels, kernel, stride=1, dilation=1, use_bias=False):
    if kernel == 1:
        dilation = 1
    return nn.Conv2D(channels, kernel, strides=stride, padding=dilation * (kernel // 2),
                     dilation=dilation, use_bias=use_bias, in_channels=in_channels,
                     prefix=name + '_')


class ResBlock(HybridBlock):
    """Pre-activation residual block ``res{name}``.

    Each conv ``res{name}_branch2{a,b1,b2}`` is preceded by ``bn{name}_branch2*`` + ReLU.
    With ``projection``, the shortcut is the 1x1 conv ``res{name}_branch1`` applied to the
    pre-activated input (output of the first BN+ReLU); otherwise it is the raw input.
    ``stride`` applies to the first conv and the shortcut; ``dilation`` to the first conv,
    ``dilation_rest`` to the others. ``dropout`` acts before the last conv.
    """

    def __init__(self, name, in_channels, channels, kernels, stride=1, dilation=1,
                 dilation_rest=None,
                 projection=False, dropout=0.0, freeze_bn=False, **kwargs):
        super().__init__(prefix='', **kwargs)
        dilation_rest = dilation if dilation_rest is None else dilation_rest
        suffixes = ['branch2a'] + ['branch2b%d' % i for i in range(1, len(channels))]
        self.dropout_rate = dropout
        # (kernel, stride, dilation) of the convolutions of the main branch, which reaches
        # further than the 1x1 shortcut
        self.geometry = tuple(
            (k, stride if i == 0 else 1, 1 if k == 1 else (dilation if i == 0 else dilation_rest))
            for i, k in enumerate(kernels))
        with self.name_scope():
            self.pre = nn.HybridSequential(prefix='')
            self.convs = nn.HybridSequential(prefix='')
            conv_in = [in_channels] + list(channels[:-1])
            for i, (c_in, c, k, s) in enumerate(zip(conv_in, channels, kernels, suffixes)):
                self.pre.add(BNReLU('bn%s_%s' % (name, s), c_in, freeze_bn))
                self.convs.add(_conv('res%s_%s' % (name, s), c_in, c, k,
                                     stride if i == 0 else 1,
                                     dilation if i == 0 else dilation_rest))
            self.shortcut = _conv('res%s_branch1' % name, in_channels, channels[-1], 1,
                                  stride) if projection else None
            self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def hybrid_forward(self, F, x):
        branch = x
        last = len(self.convs) - 1
        for i, (pre, conv) in enumerate(zip(self.pre, self.convs)):
            branch = pre(branch)
            if i == 0:
                preact = branch
            if i == last and self.dropout is not None:
                branch = self.dropout(branch)
            branch = conv(branch)
        shortcut = self.shortcut(preact) if self.shortcut is not None else x
        return shortcut + branch


def _block_names(level, blocks):
    return ['%da' % level] + ['%db%d' % (level, i) for i in range(1, blocks)]


class ResNet38Features(HybridBlock):
    """The backbone up to ``relu7``: ``(N, 3, H, W) -> (N, C7, H/s, W/s)`` (ceil for A1).

    ``table`` is a stage table (tuple of :class:`Level`), ``pool_pad`` the padding of the
    3x3/2 max pools of Model A (0 = the authors' "caffe" style of the released Model A).
    """

    def __init__(self, table, pool_pad=0, freeze_bn=False, **kwargs):
        super().__init__(prefix='', **kwargs)
        self.table = tuple(table)
        self.feat_stride = table_feat_stride(self.table)
        self.out_channels = self.table[-1].channels[-1]
        geometry = [(table[0].kernels[0], 1, 1)]
        with self.name_scope():
            # Top-level stages, in order; their ResBlocks are the units of recomputation in
            # memory-saving training (recompute_units).
            self.stages = nn.HybridSequential(prefix='')
            channels = table[0].channels[0]
            self.stages.add(_conv('conv1a', 3, channels, table[0].kernels[0]))
            dilation = 1
            for level in range(2, len(table) + 1):
                row, prev = table[level - 1], table[level - 2]
                if prev.down == 'pool':
                    if prev.dilate:  # stride-1 pool padded by the dilation, then dilate
                        self.stages.add(nn.MaxPool2D(3, 1, dilation))
                        geometry.append((3, 1, 1))
                        dilation *= 2
                    else:
                        self.stages.add(nn.MaxPool2D(3, 2, pool_pad))
                        geometry.append((3, 2, 1))
                stride, dil_first, dil_rest = 1, dilation, dilation
                if prev.down == 'conv':
                    if prev.dilate:
                        dil_rest = dilation * 2
                        dilation *= 2
                    else:
                        stride = 2
                level_blocks = nn.HybridSequential(prefix='')
                for i, name in enumerate(_block_names(level, row.blocks)):
                    level_blocks.add(ResBlock(
                        name, channels if i == 0 else row.channels[-1], row.channels,
                        row.kernels,
                        stride=stride if i == 0 else 1,
                        dilation=dil_first if i == 0 else dilation,
                        dilation_rest=dil_rest if i == 0 else dilation,
                        projection=(i == 0), dropout=row.dropout, freeze_bn=freeze_bn))
                    geometry.extend(level_blocks[-1].geometry)
                self.stages.add(level_blocks)
                channels = row.channels[-1]
            self.stages.add(BNReLU('bn7', channels, freeze_bn))
        self.geometry = tuple(geometry)

    @property
    def receptive_radius(self):
        """Receptive-field radius of ``relu7`` in input pixels (see :func:`path_radius`)."""
        return path_radius(self.geometry)

    def recompute_units(self):
        """The blocks that applied in order equal ``forward``: ``conv1a``, [``pool1``],
        ``res2a``, ``res2b1``, ..., the ``bn7`` + ReLU; the units of segment recomputation
        (:mod:`rn38.recompute`). Each parameter belongs to exactly one unit."""
        units = []
        for stage in self.stages:
            if isinstance(stage, nn.HybridSequential):
                units.extend(stage)
            else:
                units.append(stage)
        return units

    def hybrid_forward(self, F, x):
        return self.stages(x)


class GlobalPoolFC(HybridBlock):
    """The classifier tail: global average pool, then the FC layer ``linear{classes}``.

    ``(N, C, H, W)`` -> ``(N, classes)``.
    """

    def __init__(self, classes, in_channels, **kwargs):
        super().__init__(prefix='', **kwargs)
        with self.name_scope():
            self.fc = nn.Dense(classes, in_units=in_channels, prefix='linear%d_' % classes)

    def hybrid_forward(self, F, x):
        return self.fc(F.Pooling(x, kernel=(1, 1), pool_type='avg', global_pool=True))


class ResNet38Classifier(HybridBlock):
    """Classification network: backbone, global average pool, FC ``linear{classes}``.

    ``forward(x)``: ``(N, 3, H, W)`` -> pre-softmax scores ``(N, classes)``.
    """

    def __init__(self, table, classes, pool_pad=0, freeze_bn=False, **kwargs):
        super().__init__(prefix='', **kwargs)
        self.classes = classes
        with self.name_scope():
            self.features = ResNet38Features(table, pool_pad, freeze_bn)
            self.tail = GlobalPoolFC(classes, self.features.out_channels)
        self.feat_stride = self.features.feat_stride
        self.head_names = ('linear%d' % classes,)

    @property
    def fc(self):
        """The FC layer ``linear{classes}`` (``nn.Dense``)."""
        return self.tail.fc

    def recompute_units(self):
        """The backbone's units, then the pool + FC tail (see
        :meth:`ResNet38Features.recompute_units`)."""
        return self.features.recompute_units() + [self.tail]

    def hybrid_forward(self, F, x):
        return self.tail(self.features(x))


class ResNet38FCN(HybridBlock):
    """Dilated FCN: backbone, then the head.

    ``head='2conv'``: ``conv6a`` (3x3, dilation 12, bias) + ReLU, then ``linear{classes}``
    (3x3, dilation 12, bias); ``head='1conv'``: ``linear{classes}`` directly on ``relu7``;
    ``head='bn-2conv'``: a BatchNorm ``conv6a_bn`` on ``relu7`` before ``conv6a`` (the ResNet38
    Watershed semantic branch).
    ``forward(x)``: ``(N, 3, H, W)`` -> scores ``(N, classes, ceil(H/s), ceil(W/s))``
    (Model A: with ``pool_pad=1``; pad 0 floors at each 3x3/2 pool).
    """

    HEADS = ('2conv', '1conv', 'bn-2conv')

    def __init__(self, table, classes, head='2conv', head_channels=512, head_dilation=12,
                 freeze_bn=False, pool_pad=0, **kwargs):
        super().__init__(prefix='', **kwargs)
        if head not in self.HEADS:
            raise ValueError('unknown head %r; valid: %s' % (head, ', '.join(self.HEADS)))
        self.classes = classes
        with self.name_scope():
            self.features = ResNet38Features(table, pool_pad, freeze_bn)
            self.head = nn.HybridSequential(prefix='')
            if head == 'bn-2conv':
                self.head.add(nn.BatchNorm(epsilon=BN_EPS, use_global_stats=freeze_bn,
                                           in_channels=self.features.out_channels,
                                           prefix='conv6a_bn_'))
            if head in ('2conv', 'bn-2conv'):
                self.head.add(_conv('conv6a', self.features.out_channels, head_channels, 3,
                                    dilation=head_dilation, use_bias=True))
                self.head.add(nn.Activation('relu'))
            self.head.add(_conv('linear%d' % classes, self.features.out_channels
                                if head == '1conv' else head_channels, classes, 3,
                                dilation=head_dilation, use_bias=True))
        self.feat_stride = self.features.feat_stride
        self.head_names = {'2conv': ('conv6a', 'linear%d' % classes),
                           'bn-2conv': ('conv6a_bn', 'conv6a', 'linear%d' % classes),
                           '1conv': ('linear%d' % classes,)}[head]
        self.geometry = self.features.geometry + ((3, 1, head_dilation),) * (
            1 if head == '1conv' else 2)

    @property
    def receptive_radius(self):
        """Receptive-field radius of the scores in input pixels (see :func:`path_radius`):
        what a sliding window needs around its core for exact results."""
        return path_radius(self.geometry)

    def recompute_units(self):
        """The backbone's units, then the head (see
        :meth:`ResNet38Features.recompute_units`)."""
        return self.features.recompute_units() + [self.head]

    def hybrid_forward(self, F, x):
        return self.head(self.features(x))
