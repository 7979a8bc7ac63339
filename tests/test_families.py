"""The compared network families: registry, shapes and strides, gradients, FCN32s's layer
list, unpooling at the argmax, per-image standardisation, BatchNorm statistics modes."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from mxnet.gluon import nn

import issegm
from rn38 import zoo
from rn38.families import deconvnet, deeplabv3, fcn32s
from rn38.families.unpool import MaxPoolWithMask, MaxUnpool


def test_registry_lists_every_family():
    with pytest.raises(ValueError) as err:
        issegm.get_model('cityscapes_fcn32s-vgg19_cls19')
    message = str(err.value)
    for family, entry in zoo.FAMILIES.items():
        for net in entry.nets:
            assert (('%s-%s' % (family, net)) in message) == ('segmentation' in entry.tasks)
    with pytest.raises(ValueError) as err:
        zoo.build_model('folder_gluon-resnet7-v1_cls5', 'classification')
    for name in ('gluon-resnet101-v1', 'gluon-vgg16-bn', 'rna-a1'):
        assert name in str(err.value)
    with pytest.raises(ValueError, match='classification network only'):
        zoo.build_model('folder_gluon-resnet101-v1_cls5', 'segmentation')
    for label in ('cityscapes_fcn32s-vgg16_cls19', 'cityscapes_deeplabv3-resnet101_cls19',
                  'cityscapes_deconvnet-vgg16bn_cls19', 'cityscapes_rna-a1_cls19_s8'):
        assert label in message
    with pytest.raises(ValueError, match='families: deconvnet, deeplabv3, fcn32s, gluon, rna'):
        issegm.get_model('cityscapes_segnet-vgg16_cls19')
    with pytest.raises(ValueError, match='no output stride 8'):
        issegm.get_model('voc_fcn32s-vgg16_cls21_s8')
    spec = zoo.parse_label('ade20k_deeplabv3-resnet101_cls150')
    assert (spec.family, spec.net_name, spec.classes, spec.feat_stride) == \
        ('deeplabv3', 'resnet101', 150, 8)


def _layers(block):
    """Flattened ``(kind, in, out, kernel, stride, pad, extra)`` of the leaf layers in order."""
    out = []
    for child in block._children.values():
        if isinstance(child, (nn.Conv2D, nn.Conv2DTranspose)):
            kw = child._kwargs
            kind = 'deconv' if child._op_name == 'Deconvolution' else 'conv'
            out.append((kind, child._in_channels, child._channels, kw['kernel'], kw['stride'],
                        kw['pad'], 'bias' if not kw['no_bias'] else 'nobias'))
        elif isinstance(child, nn.MaxPool2D):
            kw = child._kwargs
            out.append(('maxpool', kw['kernel'], kw['stride'], kw['pad']))
        elif isinstance(child, nn.Activation):
            out.append(('relu',))
        elif isinstance(child, nn.Dropout):
            out.append(('dropout2d', child._rate, child._axes))
        else:
            out.extend(_layers(child))
    return out


def test_fcn32s_layer_list_equals_the_specification():
    net = fcn32s.FCN32s(classes=7)
    spec = []
    c_in = 3
    for widths in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for c in widths:
            spec += [('conv', c_in, c, (3, 3), (1, 1), (1, 1), 'bias'), ('relu',)]
            c_in = c
        spec.append(('maxpool', (2, 2), (2, 2), (0, 0)))
    spec += [('conv', 512, 4096, (1, 1), (1, 1), (0, 0), 'bias'), ('relu',),
             ('dropout2d', 0.5, (2, 3)),
             ('conv', 4096, 4096, (1, 1), (1, 1), (0, 0), 'bias'), ('relu',),
             ('dropout2d', 0.5, (2, 3)),
             ('conv', 4096, 7, (1, 1), (1, 1), (0, 0), 'bias'),
             ('deconv', 7, 7, (64, 64), (32, 32), (0, 0), 'nobias')]
    assert _layers(net) == spec
    assert sum(1 for layer in spec if layer[0] == 'conv' and layer[3] == (3, 3)) == 13


def _grad_check(net, x, first_param):
    net.collect_params().setattr('grad_req', 'write')
    with autograd.record():
        y = net(x)
        loss = (y * mx.nd.random.uniform(shape=y.shape)).sum()
    loss.backward()
    grad = net.collect_params()[first_param].grad()
    assert float(grad.abs().sum().asscalar()) > 0, 'no gradient reaches %s' % first_param
    return y


@pytest.mark.parametrize('hw', [(64, 96), (70, 100)])
def test_fcn32s_scores_full_resolution_and_gradient_reaches_conv1(hw):
    mx.random.seed(0)
    net = fcn32s.build(3, width_divisor=16)
    net.initialize(mx.init.Xavier())
    y = _grad_check(net, mx.nd.random.uniform(shape=(2, 3) + hw), 'conv1_1_weight')
    assert y.shape == (2, 3) + hw and net.feat_stride == 1


def test_fcn32s_upscore_is_class_wise_bilinear_and_centred():
    net = fcn32s.FCN32s(classes=2, width_divisor=16)
    net.initialize(mx.init.Xavier())
    scores = np.zeros((1, 2, 3, 3), np.float32)
    scores[0, 0] = 1.0
    up = net.upscore(mx.nd.array(scores)).asnumpy()
    assert up.shape == (1, 2, 128, 128)
    np.testing.assert_allclose(up[0, 0, 48:80, 48:80], 1.0, rtol=1e-5)  # interior: exact
    assert np.abs(up[0, 1]).max() == 0  # classes are not mixed
    impulse = np.zeros((1, 2, 3, 3), np.float32)
    impulse[0, 1, 1, 1] = 1.0
    crop = net(mx.nd.zeros((1, 3, 96, 96)))  # warm-up for shapes
    assert crop.shape == (1, 2, 96, 96)
    up = net.upscore(mx.nd.array(impulse)).asnumpy()[0, 1, 16:112, 16:112]
    # the crop centres cell 1's kernel on its block (pixels 32..63): symmetric about 47.5
    np.testing.assert_allclose(up, up[::-1, ::-1], atol=1e-6)
    assert np.unravel_index(up.argmax(), up.shape)[0] in (47, 48)


def test_deconvnet_scores_full_resolution_and_gradient_reaches_conv1():
    mx.random.seed(0)
    net = deconvnet.build(4, width_divisor=16)
    net.initialize(mx.init.Xavier())
    y = _grad_check(net, mx.nd.random.uniform(shape=(2, 3, 70, 90)), 'conv1_1_weight')
    assert y.shape == (2, 4, 70, 90) and net.feat_stride == 1
    names = list(net.collect_params())
    assert 'fc6_weight' in names and 'fc6_deconv_weight' in names and 'seg_score_weight' in names
    assert net.collect_params()['fc6_weight'].shape == (4096 // 16, 512 // 16, 7, 7)


def test_deeplabv3_stride_8_and_gradient_reaches_conv1():
    mx.random.seed(0)
    net = deeplabv3.build(5, backbone='resnet50')
    net.initialize(mx.init.Xavier(), force_reinit=True)
    first = next(iter(net.collect_params()))
    y = _grad_check(net, mx.nd.random.uniform(shape=(2, 3, 64, 96)), first)
    assert y.shape == (2, 5, 8, 12)
    # the image-pooling branch adapts to the input size (GluonCV's fixes it at build time)
    assert net(mx.nd.random.uniform(shape=(1, 3, 80, 48))).shape == (1, 5, 10, 6)


def test_deeplabv3_resnet101_through_get_model():
    net = issegm.get_model('voc_deeplabv3-resnet101_cls21')
    assert net.feat_stride == 8
    assert net(mx.nd.zeros((1, 3, 48, 64))).shape == (1, 21, 6, 8)
    # GluonCV's network does the work: 101 layers of its ResNet-v1s
    convs = [n for n in net.collect_params() if n.endswith('_weight') and 'conv' in n]
    assert len(convs) >= 100


def _numpy_unpool_reference(x, y):
    """Index-based max unpooling: each 2x2 window's first maximum (scan order) gets y."""
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(n):
        for j in range(c):
            for r in range(h // 2):
                for s in range(w // 2):
                    window = x[i, j, 2 * r:2 * r + 2, 2 * s:2 * s + 2]
                    k = int(np.argmax(window))  # first maximum in row-major order
                    out[i, j, 2 * r + k // 2, 2 * s + k % 2] = y[i, j, r, s]
    return out


@pytest.mark.parametrize('hybridize', [False, True])
def test_unpooling_puts_values_at_the_argmax_first_on_ties(hybridize):
    rs = np.random.RandomState(1)
    x = rs.randint(0, 3, (2, 3, 6, 8)).astype(np.float32)  # many ties
    y = rs.uniform(1, 2, (2, 3, 3, 4)).astype(np.float32)
    pool, unpool = MaxPoolWithMask(), MaxUnpool()
    if hybridize:
        pool.hybridize()
        unpool.hybridize()
    outs = pool(mx.nd.array(x))
    np.testing.assert_array_equal(outs[0].asnumpy(), x.reshape(2, 3, 3, 2, 4, 2).max((3, 5)))
    got = unpool(mx.nd.array(y), *outs[1:]).asnumpy()
    np.testing.assert_array_equal(got, _numpy_unpool_reference(x, y))
    # exactly one position per window
    assert (got != 0).reshape(2, 3, 3, 2, 4, 2).sum((3, 5)).max() == 1


def _standardize_reference(image):
    values = image.astype(np.float64).ravel()
    n = values.size
    mean = values.sum() / n
    std = np.sqrt(((values - mean) ** 2).sum() / n)
    return (image - mean) / max(std, 1.0 / np.sqrt(n))


def test_per_image_standardization_equals_the_formula():
    from issegm.image_norm import per_image_standardization
    rs = np.random.RandomState(0)
    image = rs.randint(0, 256, (3, 17, 23)).astype(np.float32)
    np.testing.assert_allclose(per_image_standardization(image),
                               _standardize_reference(image), rtol=1e-5, atol=1e-5)
    flat = np.full((3, 4, 5), 7.0, np.float32)  # std 0: divided by 1/sqrt(60), all zeros
    np.testing.assert_array_equal(per_image_standardization(flat), 0)
    tiny = flat.copy()
    tiny[0, 0, 0] = 7.001  # std below 1/sqrt(N): the clamp applies
    np.testing.assert_allclose(per_image_standardization(tiny), _standardize_reference(tiny),
                               rtol=1e-4, atol=1e-6)


def _tensorflow_definition(image):
    """TensorFlow 1's algorithm, step by step in float32 on an (H, W, C) image: the
    variance as E[x^2] - E[x]^2 clipped at 0, the scale max(stddev, rsqrt(H*W*C))."""
    x = image.astype(np.float32)
    n = np.float32(x.size)
    mean = x.mean(dtype=np.float32)
    variance = max(np.float32(np.square(x).mean(dtype=np.float32) - np.square(mean)), 0)
    scale = max(np.sqrt(np.float32(variance)), np.float32(1) / np.sqrt(n))
    return (x - mean) / scale


def test_per_image_standardization_equals_the_tensorflow_definition():
    from issegm.image_norm import per_image_standardization
    rs = np.random.RandomState(2)
    for image in (rs.randint(0, 256, (24, 31, 3)).astype(np.uint8),
                  np.full((5, 6, 3), 200, np.uint8)):
        np.testing.assert_allclose(per_image_standardization(image),
                                   _tensorflow_definition(image), rtol=1e-4, atol=1e-4)


def test_per_image_standardization_equals_tensorflow():
    tf = pytest.importorskip('tensorflow')
    from issegm.image_norm import per_image_standardization
    image = np.random.RandomState(0).randint(0, 256, (16, 20, 3)).astype(np.float32)
    expected = tf.image.per_image_standardization(image).numpy()
    np.testing.assert_allclose(per_image_standardization(image), expected, rtol=1e-4,
                               atol=1e-4)


def test_per_image_training_crop_is_standardised():
    from issegm.image_norm import PerImageTrainTransform, RAW_PIXELS
    from issegm.transforms import SegTrainTransform
    rs = np.random.RandomState(0)
    image = rs.randint(0, 256, (40, 50, 3)).astype(np.uint8)
    label = rs.randint(0, 3, (40, 50)).astype(np.uint8)
    base = SegTrainTransform(32, 8, 50, (1.0, 1.0), mean=RAW_PIXELS[0], std=RAW_PIXELS[1])
    params = base.sample_params(image.shape[:2], np.random.default_rng(3))
    raw, samples = base.apply(image, label, params)
    assert raw.min() >= 0 and raw.max() <= 255 and raw.max() > 1  # raw pixel values
    wrapped = PerImageTrainTransform(base)
    data, samples2 = wrapped(image, label, np.random.default_rng(3))
    np.testing.assert_allclose(data, _standardize_reference(raw), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(samples, samples2)


def test_frozen_backbone_updates_only_head_statistics():
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', head='bn-2conv',
                           bn_stats='frozen-backbone')
    aux = {k: v.data().asnumpy().copy() for k, v in net.collect_params().items()
           if k.endswith(('running_mean', 'running_var'))}
    x = mx.nd.random.uniform(shape=(2, 3, 48, 48))
    with autograd.record():
        net(x).sum().backward()
    changed = sorted(k for k, v in net.collect_params().items()
                     if k in aux and not np.array_equal(v.data().asnumpy(), aux[k]))
    assert changed == ['conv6a_bn_running_mean', 'conv6a_bn_running_var']
    # 'batch' updates the backbone's too, 'frozen' none
    for mode, expect_backbone in (('batch', True), ('frozen', False)):
        net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', head='bn-2conv',
                               bn_stats=mode)
        before = net.collect_params()['bn7_running_mean'].data().asnumpy().copy()
        with autograd.record():
            net(x).sum().backward()
        after = net.collect_params()['bn7_running_mean'].data().asnumpy()
        assert (not np.array_equal(before, after)) == expect_backbone


def test_frozen_backbone_on_a_compared_family():
    net = deconvnet.build(3, width_divisor=16)
    zoo.set_bn_statistics(net, 'frozen-backbone')
    net.initialize(mx.init.Xavier())
    before = {k: v.data().asnumpy().copy() for k, v in net.collect_params().items()
              if k.endswith('running_mean')}
    with autograd.record():
        net(mx.nd.random.uniform(shape=(2, 3, 64, 64))).sum().backward()
    changed = {k for k, v in net.collect_params().items()
               if k in before and not np.array_equal(v.data().asnumpy(), before[k])}
    assert changed and all(k.startswith(('fc', 'deconv')) for k in changed)
    assert not any(k.startswith('conv') for k in changed)


def test_zoo_backbone_weights_load_from_a_path(tmp_path):
    """A GluonCV ImageNet classifier file (built and saved here, nothing downloaded)
    becomes the DeepLabv3 backbone; the head keeps its initialisation."""
    from gluoncv.model_zoo import get_model
    source = get_model('resnet50_v1s', pretrained=False)
    source.initialize(mx.init.Normal(0.05))
    source(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / 'resnet50_v1s-imagenet.params')
    source.save_parameters(path)
    net = issegm.get_model('voc_deeplabv3-resnet50_cls21', pretrained=path)
    src = [p for p in source.collect_params().values() if 'dense' not in p.name]
    from rn38.families.backbone import backbone_blocks
    dst = [p for b in backbone_blocks(net) for p in b.collect_params().values()]
    assert len(dst) == len(src)
    for a, b in zip(dst, src):
        np.testing.assert_array_equal(a.data().asnumpy(), b.data().asnumpy())
    assert len(net.load_report['loaded']) == len(dst) and net.load_report['skipped']
    with pytest.raises(ValueError, match='not a Gluon model-zoo resnet101_v1s file'):
        issegm.get_model('voc_deeplabv3-resnet101_cls21', pretrained=path)
