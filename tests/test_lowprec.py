"""bfloat16 / int8 inference (rn38/lowprec.py) through the entries, the int8 graph cache,
and evaluation spread over several devices (``--gpus cpu:2``)."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

import issegm
from issegm import cli
from issegm.evaluate import val_output_dir
from issegm.predictor import SegPredictor
from rn38 import lowprec
from rn38.params import load_params, save_params
from rn38.synthetic import net_entries, synthetic_arrays
from conftest import make_demo_dataset

MINI = 'cityscapes_rna-a1-mini_cls19_s8'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_BF16 = 'avx512_bf16' in lowprec.cpu_flags()


def _known_weights(path, salt=0):
    """The mini FCN with the project's deterministic synthetic weights, saved to ``path``."""
    net = issegm.get_model(MINI)
    net(mx.nd.zeros((1, 3, 32, 32)))
    arrays = synthetic_arrays(net_entries(net), salt=salt)
    load_params(net, {k: mx.nd.array(v) for k, v in arrays.items()})
    save_params(net, path)
    return net


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    make_demo_dataset(str(root), seed=5, train=4, val=3, height=64, width=128)
    weights = str(tmp_path_factory.mktemp('models') / ('%s_ep-0003.params' % MINI))
    _known_weights(weights)
    return str(root), weights


def _val(root, weights, out, *extra):
    return cli.main('cityscapes', ['--phase', 'val', '--data-root', root, '--weights', weights,
                                   '--output', str(out), '--test-scales', '128',
                                   '--no-progress', '--no-official-eval'] + list(extra))


def _labels(folder):
    """``{relative path: label ids}`` of the PNGs under ``<folder>/labels``."""
    top = os.path.join(folder, 'labels')
    found = {}
    for base, _, files in os.walk(top):
        for name in files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, top)] = np.array(Image.open(path))
    return found


def _agreement(a, b):
    assert sorted(a) == sorted(b)
    return np.mean([np.mean(a[n] == b[n]) for n in a])


def test_val_dtypes_agree_with_float32(demo, tmp_path):
    """--phase val in float32, bfloat16 and int8 on the same images: the label maps agree
    with float32 within the bounds, each dtype writes its own result folder."""
    root, weights = demo
    assert _val(root, weights, tmp_path, '--gpus', 'cpu') == 0
    reference = _labels(val_output_dir(str(tmp_path), weights, 'val'))
    assert _val(root, weights, tmp_path, '--gpus', 'cpu', '--dtype', 'int8',
                '--calib-images', '2', '--calib-mode', 'naive') == 0
    int8_dir = val_output_dir(str(tmp_path), weights, 'val') + '_int8_naive2'
    int8 = _labels(int8_dir)
    assert 0.85 <= _agreement(int8, reference) < 1.0  # close, but really int8
    config = open(os.path.join(int8_dir, 'config.yaml')).read()
    assert 'dtype: int8' in config
    if HAS_BF16:
        assert _val(root, weights, tmp_path, '--gpus', 'cpu', '--dtype', 'bfloat16') == 0
        bf16 = _labels(val_output_dir(str(tmp_path), weights, 'val') + '_bfloat16')
        assert 0.95 <= _agreement(bf16, reference) < 1.0


@pytest.mark.skipif('avx512_bf16' not in lowprec.cpu_flags(), reason='needs avx512_bf16')
def test_bfloat16_weights_converted_once_score_layer_float32():
    """The bfloat16 block holds its convolution weights in bfloat16 (converted once, not
    cast at every forward) and the score layer's in float32; its scores stay close to
    float32's (bfloat16 has 8 significant bits)."""
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    net.initialize(mx.init.Xavier(), force_reinit=True)
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (1, 3, 64, 96)))
    ref = net(x).asnumpy()
    block, ran = lowprec.lower_precision(net, 'bfloat16', [mx.cpu()])
    assert ran == 'bfloat16'
    dtypes = {name: np.dtype(p.data().dtype) for name, p in block.collect_params().items()}
    bf16 = np.dtype([('bfloat16', np.uint16)])
    convs = [n for n in dtypes if n.startswith('conv') and n.endswith('_weight')]
    assert convs and all(dtypes[n] == bf16 for n in convs)
    assert dtypes['linear19_weight'] == np.float32 and dtypes['linear19_bias'] == np.float32
    out = block(x).asnumpy()
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()


def test_bfloat16_without_instructions_falls_back_to_float32():
    with pytest.warns(UserWarning, match='avx512_bf16'):
        assert lowprec.check_dtype('bfloat16', [mx.cpu()], flags={'avx2'}) == 'float32'
    assert lowprec.check_dtype('int8', [mx.cpu()], flags={'avx512_vnni'}) == 'int8'


def test_low_precision_on_gpu_is_a_one_line_error(demo, tmp_path):
    """int8/bfloat16 with GPU contexts: one line saying CPU only. On a machine without the
    GPU the entry stops earlier, on the device itself, still with one line and nothing
    written; the dtype rule is checked on GPU contexts directly (creating them allocates
    nothing)."""
    root, weights = demo
    proc = subprocess.run(
        [sys.executable, 'issegm/cityscapes.py', '--phase', 'val', '--data-root', root,
         '--weights', weights, '--output', str(tmp_path), '--gpus', '0', '--dtype', 'int8',
         '--no-progress'], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith('[')]
    expected = 'CPU only' if mx.context.num_gpus() > 0 else '--gpus 0'
    assert len(lines) == 1 and expected in lines[0] and 'Traceback' not in proc.stderr
    assert not os.listdir(str(tmp_path))  # nothing done
    for dtype in ('int8', 'bfloat16'):
        with pytest.raises(lowprec.LowPrecisionError, match='runs on the CPU only'):
            lowprec.check_dtype(dtype, [mx.gpu(0), mx.gpu(1)])
    assert lowprec.check_dtype('float32', [mx.gpu(0)]) == 'float32'


def test_int8_cache_reused_and_invalidated(tmp_path):
    """The quantized graph is written next to the weights and read back without
    calibrating; new weights (same file name) or other calibration images calibrate again."""
    weights = str(tmp_path / ('%s_ep-0001.params' % MINI))
    rng = np.random.RandomState(0)
    calib = [rng.uniform(-2, 2, (1, 3, 64, 128)).astype(np.float32) for _ in range(2)]
    x = mx.nd.array(rng.uniform(-2, 2, (1, 3, 64, 96)))
    calls = []

    def batches():
        calls.append(1)
        return calib

    def quantize(images=('a', 'b')):
        net = issegm.get_model(MINI, pretrained=weights)
        net.hybridize(static_alloc=True)
        block, info = lowprec.quantize_int8(net, [mx.cpu()], batches, 'naive', weights,
                                            settings={'calib_images': list(images)})
        return block(x).asnumpy(), info

    _known_weights(weights)
    first, info1 = quantize()
    assert info1['calibrated'] and len(calls) == 1
    assert os.path.isfile(info1['cache'] + '-symbol.json')
    assert os.path.isfile(info1['cache'] + '-0000.params')
    again, info2 = quantize()
    assert not info2['calibrated'] and len(calls) == 1 and info2['cache'] == info1['cache']
    np.testing.assert_array_equal(again, first)
    _, info3 = quantize(('a', 'c'))  # another calibration set
    assert info3['calibrated'] and len(calls) == 2 and info3['cache'] != info1['cache']

    _known_weights(weights, salt=7)  # retrained: same name, other content
    changed, info4 = quantize()
    assert info4['calibrated'] and len(calls) == 3
    assert info4['cache'] not in (info1['cache'], info3['cache'])
    assert not np.array_equal(changed, first)


def test_int8_graph_keeps_its_state_between_forwards_and_follows_new_shapes(tmp_path):
    """The int8 block runs as a static-shape graph (MXNet 1.9 otherwise re-creates the
    oneDNN operators' state, the quantized and reordered weights, at every forward: one
    224 image at 1.54x float32's speed instead of 3.35x); a new input shape still gives the
    outputs a freshly built block gives for it."""
    weights = str(tmp_path / ('%s_ep-0001.params' % MINI))
    _known_weights(weights)
    rng = np.random.RandomState(3)
    calib = [rng.uniform(-2, 2, (1, 3, 64, 96)).astype(np.float32)]
    a = mx.nd.array(rng.uniform(-2, 2, (1, 3, 64, 96)))
    b = mx.nd.array(rng.uniform(-2, 2, (2, 3, 80, 48)))

    def lowered():
        net = issegm.get_model(MINI, pretrained=weights)
        return lowprec.lower_precision(net, 'int8', [mx.cpu()], calib_batches=lambda: calib,
                                       calib_mode='naive')[0]

    block = lowered()
    assert dict(block._flags).get('static_shape') is True
    outs = [block(x).asnumpy() for x in (a, b, a)]
    fresh_b = lowered()(b).asnumpy()
    np.testing.assert_array_equal(outs[1], fresh_b)
    np.testing.assert_array_equal(outs[2], outs[0])


def test_evaluation_on_two_devices_equals_one(demo, tmp_path):
    """--gpus cpu:2 spreads the images over two contexts; everything written is equal."""
    root, weights = demo
    one, two = tmp_path / 'one', tmp_path / 'two'
    assert _val(root, weights, one, '--gpus', 'cpu', '--save-predictions') == 0
    assert _val(root, weights, two, '--gpus', 'cpu:2', '--save-predictions') == 0
    dir1 = val_output_dir(str(one), weights, 'val')
    dir2 = val_output_dir(str(two), weights, 'val')
    for sub in ('labels', 'color', 'probs', 'counts'):
        names = sorted(os.listdir(os.path.join(dir1, sub)))
        assert names and names == sorted(os.listdir(os.path.join(dir2, sub)))
        for name in names:
            if name.endswith('.npz'):
                with np.load(os.path.join(dir1, sub, name)) as a, \
                        np.load(os.path.join(dir2, sub, name)) as b:
                    for key in a.files:
                        np.testing.assert_array_equal(a[key], b[key])
            else:
                with open(os.path.join(dir1, sub, name), 'rb') as a, \
                        open(os.path.join(dir2, sub, name), 'rb') as b:
                    assert a.read() == b.read(), (sub, name)
    s1 = json.load(open(os.path.join(dir1, 'summary.json')))
    s2 = json.load(open(os.path.join(dir2, 'summary.json')))
    assert s1 == s2


def test_predict_on_two_devices_equals_one(demo, tmp_path):
    from issegm import predict
    root, weights = demo
    images = os.path.join(root, 'leftImg8bit', 'val')
    for out, gpus in (('one', 'cpu'), ('two', 'cpu:2')):
        assert predict.main(['--weights', weights, '--input', images, '--output',
                             str(tmp_path / out), '--gpus', gpus, '--no-progress']) == 0
    a, b = _labels(str(tmp_path / 'one')), _labels(str(tmp_path / 'two'))
    assert len(a) == 3 and _agreement(a, b) == 1.0


def test_tiles_batched_equal_one_at_a_time():
    """Sliding windows of equal size run as one batch: the same numbers as one window per
    forward, and (with the exact margin) as the whole input."""
    net = issegm.get_model(MINI)
    net.hybridize(static_alloc=True)
    x = np.random.RandomState(1).uniform(-2, 2, (3, 96, 160)).astype(np.float32)
    whole = SegPredictor(net).forward_probs(x)
    kw = dict(max_input_pixels=32 * 32, tile_size=32, tile_margin=320)
    single = SegPredictor(net, tile_batch=1, **kw)
    batched = SegPredictor(net, tile_batch=8, **kw)
    out1, out8 = single.forward_probs(x), batched.forward_probs(x)
    np.testing.assert_array_equal(out8, out1)
    assert batched.timings['forwards'] == single.timings['forwards'] == 15
    np.testing.assert_allclose(out8, whole, rtol=1e-4, atol=1e-6)


def test_ilsvrc_val_dtypes(tmp_path):
    """iclass/ilsvrc.py --phase val --dtype: int8 calibrates on the train list, writes its
    own prediction cache, and its probabilities stay close to float32's."""
    import iclass
    from iclass import train as cls_train
    from iclass.ilsvrc import main as cls_main
    from make_imagenet import make_imagenet
    root = str(tmp_path / 'imagenet')
    make_imagenet(root, classes=5, per_class=2, val_per_class=2)
    label = 'demo-cls_rna-a1-mini_cls5'
    net = iclass.get_model(label)
    net(mx.nd.zeros((1, 3, 32, 32)))
    load_params(net, {k: mx.nd.array(v) for k, v in synthetic_arrays(net_entries(net)).items()})
    weights = str(tmp_path / ('%s_ep-0001.params' % label))
    save_params(net, weights)
    probs = {}
    for dtype in ('float32', 'int8'):
        cls_main(['--phase', 'val', '--data-root', root, '--weights', weights,
                  '--test-scales', '40', '--output', str(tmp_path / 'out'), '--no-progress',
                  '--dtype', dtype, '--calib-images', '3', '--calib-mode', 'naive'])
        cfg = cls_train.Config(weights=weights, output=str(tmp_path / 'out'), split='val',
                               dtype=dtype, calib_images=3, calib_mode='naive',
                               choose_interp_method=False)  # the entry's published default
        path = cls_train.cache_path(cls_train.val_save_dir(cfg), 40, cfg)
        with np.load(path) as f:
            probs[dtype] = f['probs']
    assert os.path.basename(path) == 'preds_s40_bicubic_int8_naive3.npz'
    assert [n for n in os.listdir(str(tmp_path)) if '.int8-' in n and n.endswith('.params')]
    assert not np.array_equal(probs['int8'], probs['float32'])
    np.testing.assert_allclose(probs['int8'], probs['float32'], atol=0.05)


def test_tiles_batched_within_the_pixel_budget():
    """By default as many equal windows per forward as fit in max_input_pixels."""
    net = issegm.get_model(MINI)
    net.hybridize(static_alloc=True)
    x = np.random.RandomState(2).uniform(-2, 2, (3, 96, 160)).astype(np.float32)
    kw = dict(max_input_pixels=10000, tile_size=32, tile_margin=16)
    batched, single = SegPredictor(net, **kw), SegPredictor(net, tile_batch=1, **kw)
    calls = []
    run = batched._run
    batched._run = lambda windows: calls.append(windows.shape) or run(windows)
    np.testing.assert_array_equal(batched.forward_probs(x), single.forward_probs(x))
    assert max(n * h * w for n, _, h, w in calls) <= 10000
    assert max(n for n, _, _, _ in calls) > 1 and sum(n for n, _, _, _ in calls) == 15
