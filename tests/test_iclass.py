"""ImageNet classification tools (issue 5): lists, preprocessing, the optimizer,
validation against a direct computation, the prediction cache, a short training run and
the command line's errors. Everything runs on a generated ImageNet-layout folder."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

import iclass
from iclass import data as D
from iclass import train as T
from iclass.ilsvrc import main as cli_main
from rn38 import zoo
from rn38.params import released_keys, save_params

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
from make_imagenet import make_imagenet  # tests/, on the path under pytest

CLASSES = 8
LABEL = 'demo-cls_rna-a1-mini_cls%d' % CLASSES
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('imagenet'))
    make_imagenet(root, classes=CLASSES, per_class=2, val_per_class=2)
    return root


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """Random weights of the mini model, saved under its released-style file name."""
    mx.random.seed(3)
    net = iclass.get_model(LABEL)
    # Non-trivial BN statistics so inference really uses them.
    for name, p in net.collect_params().items():
        if name.endswith('running_mean'):
            p.set_data(mx.nd.random.uniform(-0.1, 0.1, p.shape))
        elif name.endswith('running_var'):
            p.set_data(mx.nd.random.uniform(0.5, 1.5, p.shape))
    path = str(tmp_path_factory.mktemp('models') / (LABEL + '_ep-0001.params'))
    save_params(net, path)
    return path


def val_config(root, weights, out, **kw):
    cfg = T.Config(phase='val', data_root=root, split='val', weights=weights, output=out,
                   batch_images=3, progress=False)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# ------------------------------------------------------------------ lists, images

def write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


def test_split_list_formats_and_location(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, 'a.lst'), '0\t3\tx/a.png\n1\t0\ty/b.JPEG\n\n')
    write(os.path.join(root, 'b.lst'), 'x/a.png\t3\n# comment\ny/b.JPEG 0\n')
    for split in ('a', 'b'):
        sl = D.parse_split_file(D.locate_split(root, split), root, classes=4)
        assert sl.images == [os.path.join(root, 'x/a.png'), os.path.join(root, 'y/b.JPEG')]
        assert sl.labels == [3, 0]
    # Falls back to the package's iclass/data/<dataset>/<split>.lst, the authors' place.
    with pytest.raises(D.DataError, match=r'iclass/data/ilsvrc-cls/nosuch\.lst'):
        D.locate_split(root, 'nosuch', 'ilsvrc-cls')


@pytest.mark.parametrize('text, pattern', [
    ('0\t1\ta.png\n1\tb.png\n', r'bad\.lst line 2: no class index'),
    ('0\t1\ta.png\nb.png\n', r'bad\.lst line 2: no class index'),
    ('0\t1\ta.png\n1\t4\tb.png\n', r'bad\.lst line 2: class index 4 outside 0\.\.3'),
    ('0\tcat\ta.png\n', r'bad\.lst line 1: class index .cat. is not an integer'),
    ('0\t-1\ta.png\n', r'bad\.lst line 1: class index -1'),
])
def test_split_list_errors_name_file_and_line(tmp_path, text, pattern):
    path = write(str(tmp_path / 'bad.lst'), text)
    with pytest.raises(D.DataError, match=pattern):
        D.parse_split_file(path, str(tmp_path), classes=4)


def test_missing_and_unreadable_images(tmp_path):
    root = str(tmp_path)
    Image.new('RGB', (8, 8)).save(os.path.join(root, 'ok.png'))
    write(os.path.join(root, 'broken.png'), 'not an image')
    write(os.path.join(root, 's.lst'), '0\t0\tok.png\n1\t1\tgone.png\n2\t1\tbroken.png\n')
    sl = D.load_split(root, 's', classes=2, check=False)
    with pytest.raises(D.DataError, match=r'gone\.png: image not found .*s\.lst line 2'):
        D.check_images(sl)
    ds = D.ImageListDataset(sl, D.EvalTransform(8))
    assert ds[0][0].shape == (1, 3, 8, 8)
    with pytest.raises(D.DataError, match=r'gone\.png: image not found'):
        ds[1]
    with pytest.raises(D.DataError, match=r'broken\.png: cannot read image .*line 3'):
        ds[2]


# ------------------------------------------------------------------- preprocessing

def test_interp_method_choice():
    assert D.interp_method((48, 64), (40, 53)) == Image.LANCZOS      # both shrink
    assert D.interp_method((48, 64), (56, 75)) == Image.BICUBIC      # both grow
    assert D.interp_method((48, 64), (56, 56)) == Image.BILINEAR     # mixed
    assert D.interp_method((48, 64), (48, 70)) == Image.BILINEAR     # one side unchanged
    assert D.interp_method((48, 64), (40, 53), choose=False) == Image.BICUBIC


def test_resize_shorter_and_crops():
    rng = np.random.RandomState(0)
    im = rng.randint(0, 255, (48, 64, 3)).astype(np.uint8)
    small = D.resize_shorter(im, 40)
    assert small.shape == (40, 53, 3)
    want = np.asarray(Image.fromarray(im).resize((53, 40), Image.LANCZOS))
    np.testing.assert_array_equal(small, want)
    big = D.resize_shorter(im.transpose(1, 0, 2), 56, choose=False)
    assert big.shape == (75, 56, 3)
    want = np.asarray(Image.fromarray(np.ascontiguousarray(im.transpose(1, 0, 2)))
                      .resize((56, 75), Image.BICUBIC))
    np.testing.assert_array_equal(big, want)
    assert D.resize_shorter(im, 48) is im
    # Centre offsets round up; three crops run along the longer side.
    assert D.crop_offsets(40, 53, 40) == [(0, 7)]
    assert D.crop_offsets(40, 53, 40, three=True) == [(0, 0), (0, 7), (0, 13)]
    assert D.crop_offsets(75, 56, 56, three=True) == [(0, 0), (10, 0), (19, 0)]
    out = D.EvalTransform(40, three_crops=True)(im)
    assert out.shape == (3, 3, 40, 40) and out.dtype == np.float32
    want = ((small[:, 13:53] / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(out[2], want, rtol=1e-5, atol=1e-5)


def test_random_sized_crop_ranges(monkeypatch):
    im = np.random.RandomState(0).randint(0, 255, (100, 120, 3)).astype(np.uint8)
    regions = []
    real_resize = D.resize

    def spy(region, h, w, choose=True):
        regions.append(region.shape[:2])
        return real_resize(region, h, w, choose)

    monkeypatch.setattr(D, 'resize', spy)
    rng = np.random.default_rng(1)
    for _ in range(300):
        assert D.random_sized_crop(im, 24, rng).shape == (24, 24, 3)
    areas = np.array([h * w for h, w in regions]) / (100.0 * 120)
    ratios = np.array([w / float(h) for h, w in regions])
    # Area 8%..100% of the image, aspect 3/4..4/3 either way round (up to rounding).
    assert areas.min() >= 0.075 and areas.max() <= 1.0 and np.median(areas) > 0.3
    assert ratios.min() >= 0.74 and ratios.max() <= 1.36
    assert (ratios > 1.05).sum() > 30 and (ratios < 0.95).sum() > 30
    # An image too thin for any region falls back to the centre crop.
    thin = np.arange(4 * 200 * 3, dtype=np.uint8).reshape(4, 200, 3)
    out = D.random_sized_crop(thin, 4, np.random.RandomState(0), area_range=(0.99, 1.0),
                              aspect_range=(1.0, 1.0))
    np.testing.assert_array_equal(out, thin[:, 98:102])


def test_colour_jitter_and_lighting():
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 1, (6, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(D.color_jitter(x, rng, 0, 0, 0), x)
    # Brightness alone: a uniform factor in [0.6, 1.4].
    y = D.color_jitter(x, np.random.RandomState(2), 0.4, 0, 0)
    factor = np.random.RandomState(2)
    factor.permutation(1)
    a = 1 + factor.uniform(-0.4, 0.4)
    np.testing.assert_allclose(y, x * a, rtol=1e-6)
    # Saturation alone keeps the grey level of every pixel, contrast the mean grey level.
    y = D.color_jitter(x, np.random.RandomState(3), 0, 0, 0.4)
    np.testing.assert_allclose(D.grey(y), D.grey(x), rtol=1e-5, atol=1e-6)
    y = D.color_jitter(x, np.random.RandomState(3), 0, 0.4, 0)
    assert D.grey(y).mean() == pytest.approx(D.grey(x).mean(), rel=1e-5)
    assert not np.allclose(y, x)
    # Lighting: eigvec @ (alpha * eigval) added, then / 1.1, alpha ~ N(0, 0.1).
    alpha = np.random.RandomState(4).normal(0, 0.1, 3)
    shift = D.PCA_EIGVEC.astype(np.float64) @ (alpha * D.PCA_EIGVAL)
    y = D.lighting(x, np.random.RandomState(4), 0.1)
    np.testing.assert_allclose(y, (x + shift) / 1.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.PCA_EIGVAL, [0.2175, 0.0188, 0.0045])


def test_train_transform_deterministic_and_bounded():
    im = np.random.RandomState(0).randint(0, 255, (48, 64, 3)).astype(np.uint8)
    t = D.TrainTransform(32)
    a = t(im, np.random.RandomState(7))
    b = t(im, np.random.RandomState(7))
    c = t(im, np.random.RandomState(8))
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rgb01 = a.transpose(1, 2, 0) * STD + MEAN           # undo normalisation: clipped to [0, 1]
    assert rgb01.min() >= -1e-5 and rgb01.max() <= 1 + 1e-5
    # The authors' order: crop, /255, jitter, lighting, clip, flip, normalise.
    rng = np.random.default_rng(11)
    x = D.random_sized_crop(im, 32, rng).astype(np.float32) / 255
    x = np.clip(D.lighting(D.color_jitter(x, rng), rng, 0.1), 0, 1)
    if D.randint(rng, 2) == 0:
        x = x[:, ::-1]
    np.testing.assert_allclose(t(im, np.random.default_rng(11)), D.normalize(x), atol=1e-5)
    # Flipping happens about half of the time.
    flat = np.full((40, 40, 3), 128, np.uint8)
    flat[:, :20] = 0
    lefts = [t(flat, np.random.RandomState(s))[:, :, 0].mean() <
             t(flat, np.random.RandomState(s))[:, :, -1].mean() for s in range(40)]
    assert 5 < sum(lefts) < 35


# ----------------------------------------------------------------------- optimizer

def test_torch_nesterov_matches_numpy_and_differs_from_nag():
    rng = np.random.RandomState(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(6)]
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.02]          # changing rate (step/linear schedules)
    want = T.torch_nesterov_reference(w0, [g * 0.5 for g in grads], lrs, 0.9, 1e-3)

    def run(name):
        opt = mx.optimizer.create(name, momentum=0.9, wd=1e-3, rescale_grad=0.5,
                                  learning_rate=0.1)
        w = mx.nd.array(w0)
        state = opt.create_state(0, w)
        for g, lr in zip(grads, lrs):
            opt.set_learning_rate(lr)
            opt.update(0, w, mx.nd.array(g), state)
        return w.asnumpy()

    np.testing.assert_allclose(run('torchnesterov'), want, rtol=1e-5, atol=1e-6)
    # The reference by hand, first step: g' = g + wd w; v = g'; w - lr (g' + 0.9 v).
    g1 = grads[0] + 1e-3 * w0.astype(np.float64)
    np.testing.assert_allclose(T.torch_nesterov_reference(w0, grads[:1], [0.1], 0.9, 1e-3),
                               w0 - 0.1 * 1.9 * g1, rtol=1e-6)
    # Second step: v = 0.9 v + g2'; w - lr (g2' + 0.9 v).
    w1 = w0 - 0.1 * 1.9 * g1
    g2 = grads[1] + 1e-3 * w1
    v2 = 0.9 * g1 + g2
    np.testing.assert_allclose(T.torch_nesterov_reference(w0, grads[:2], [0.1, 0.05], 0.9, 1e-3),
                               w1 - 0.05 * (g2 + 0.9 * v2), rtol=1e-6)
    # MXNet's 'nag' keeps lr-scaled momentum: not the same once the rate changes.
    assert np.abs(run('nag') - want).max() > 1e-4


def test_classifier_init_and_wd_mults():
    net = iclass.get_model('demo-cls_rna-a1-mini_cls5')
    T.init_classifier(net, seed=0)
    w, b = net.fc.weight.data().asnumpy(), net.fc.bias.data().asnumpy()
    bound = 1 / np.sqrt(w.shape[1])
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(b).max() > 0.3 * bound                  # bias drawn too, not zero
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.2)
    conv = net.collect_params()['res4a_branch2a_weight'].data().asnumpy()
    fan_in = np.prod(conv.shape[1:])
    assert conv.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1)     # gaussian, mag. 2
    assert abs(conv.mean()) < 0.1 * conv.std()
    T.set_authors_wd_mults(net)
    mults = {n: p.wd_mult for n, p in net.collect_params().items()}
    assert mults['linear5_weight'] == 1 and mults['conv1a_weight'] == 1
    assert mults['bn7_gamma'] == 1
    assert mults['linear5_bias'] == 0 and mults['bn7_beta'] == 0


# ---------------------------------------------------------------------- validation

def direct_probs(net, paths, scale, flip, three, choose=True):
    """Mean softmax over crops/flips, computed without the library's preprocessing."""
    out = []
    for path in paths:
        im = Image.open(path).convert('RGB')
        w, h = im.size
        if min(h, w) != scale:
            nh, nw = (scale, int(round(scale * w / h))) if h <= w else \
                (int(round(scale * h / w)), scale)
            if nh < h and nw < w:
                method = Image.LANCZOS if choose else Image.BICUBIC
            elif nh > h and nw > w:
                method = Image.BICUBIC
            else:
                method = Image.BILINEAR if choose else Image.BICUBIC
            im = im.resize((nw, nh), method)
        a = np.asarray(im, np.float64) / 255.0
        H, W = a.shape[:2]
        cy, cx = int(np.ceil((H - scale) / 2.0)), int(np.ceil((W - scale) / 2.0))
        if not three:
            corners = [(cy, cx)]
        elif H > W:
            corners = [(0, cx), (cy, cx), (H - scale, cx)]
        else:
            corners = [(cy, 0), (cy, cx), (cy, W - scale)]
        crops = [((a[y:y + scale, x:x + scale] - MEAN) / STD).transpose(2, 0, 1)
                 for y, x in corners]
        if flip:
            crops += [c[:, :, ::-1] for c in crops]
        scores = net(mx.nd.array(np.stack(crops))).asnumpy().astype(np.float64)
        p = np.exp(scores - scores.max(1, keepdims=True))
        out.append((p / p.sum(1, keepdims=True)).mean(0))
    return np.array(out)


def direct_errors(probs, labels):
    top = np.argsort(-probs, axis=1)[:, :5]
    return (100.0 * np.mean(top[:, 0] != labels),
            100.0 * np.mean([lab not in row for row, lab in zip(top, labels)]))


def read_list(root, split='val'):
    rows = [line.rstrip('\n').split('\t') for line in open(os.path.join(root, split + '.lst'))]
    return [os.path.join(root, r[2]) for r in rows], np.array([int(r[1]) for r in rows])


@pytest.mark.parametrize('scales, flip, three', [
    ((40,), False, False),
    ((56, 40), True, True),
])
def test_validation_equals_direct_computation(imagenet, weights, tmp_path, scales, flip, three):
    cfg = val_config(imagenet, weights, str(tmp_path), test_scales=scales,
                     test_flipping=flip, test_3crops=three)
    res = T.validate(cfg)
    net = iclass.get_model(LABEL, pretrained=weights)
    paths, labels = read_list(imagenet)
    per_scale = [direct_probs(net, paths, s, flip, three) for s in scales]
    combined = np.mean(per_scale, axis=0)
    top1, top5 = direct_errors(combined, labels)
    assert res['images'] == len(paths) == 2 * CLASSES
    assert res['top1_error'] == pytest.approx(top1)
    assert res['top5_error'] == pytest.approx(top5)
    for s, probs in zip(scales, per_scale):
        e1, e5 = direct_errors(probs, labels)
        assert res['per_scale'][str(s)]['top1_error'] == pytest.approx(e1)
        assert res['per_scale'][str(s)]['top5_error'] == pytest.approx(e5)
        cached = np.load(T.cache_path(T.val_save_dir(cfg), s, cfg))['probs']
        np.testing.assert_allclose(cached, probs, rtol=1e-4, atol=1e-6)
    # Results and configuration are written beside the caches.
    save_dir = os.path.join(str(tmp_path), LABEL + '_ep-0001')
    assert json.load(open(os.path.join(save_dir, 'results.json'))) == \
        json.loads(json.dumps(res))
    assert os.path.isfile(os.path.join(save_dir, 'config.yaml'))


def test_flip_crops_and_scales_are_averaged(imagenet, weights, tmp_path):
    """Multi-scale = mean of the single-scale caches; flip = mean of plain and mirrored."""
    base = dict(test_scales=(40,), test_3crops=True)
    T.validate(val_config(imagenet, weights, str(tmp_path), **base))
    T.validate(val_config(imagenet, weights, str(tmp_path), test_flipping=True, **base))
    cfg = val_config(imagenet, weights, str(tmp_path), **base)
    save_dir = T.val_save_dir(cfg)
    plain = np.load(T.cache_path(save_dir, 40, cfg))['probs']
    cfg.test_flipping = True
    both = np.load(T.cache_path(save_dir, 40, cfg))['probs']
    net = iclass.get_model(LABEL, pretrained=weights)
    paths, _ = read_list(imagenet)
    flipped_only = []
    for path in paths:
        x = np.stack([D.EvalTransform(40, True)(D.read_image(path))])[0][..., ::-1]
        s = mx.nd.softmax(net(mx.nd.array(x.copy())), axis=1).asnumpy()
        flipped_only.append(s.mean(0))
    np.testing.assert_allclose(both, (plain + np.array(flipped_only)) / 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(plain.sum(1), 1, rtol=1e-5)


def test_cache_skips_finished_scales(imagenet, weights, tmp_path, monkeypatch):
    out = str(tmp_path)
    first = T.validate(val_config(imagenet, weights, out, test_scales=(40,),
                                  cache_dtype='float16'))
    calls = []
    real = T.predict_scale

    def counting(net, split_list, scale, *a, **k):
        calls.append(scale)
        return real(net, split_list, scale, *a, **k)

    monkeypatch.setattr(T, 'predict_scale', counting)
    again = T.validate(val_config(imagenet, weights, out, test_scales=(40,),
                                  cache_dtype='float16'))
    assert calls == [] and again['top1_error'] == first['top1_error']
    two = T.validate(val_config(imagenet, weights, out, test_scales=(56, 40),
                                cache_dtype='float16'))
    assert calls == [56]                               # only the new scale is computed
    assert set(two['per_scale']) == {'40', '56'}
    cfg = val_config(imagenet, weights, out)
    with np.load(T.cache_path(T.val_save_dir(cfg), 40, cfg), allow_pickle=False) as f:
        assert f['probs'].dtype == np.float16
    # Another cache dtype is another key: recomputed, equal to a run into an empty folder.
    f32 = T.validate(val_config(imagenet, weights, out, test_scales=(40,)))
    assert calls == [56, 40]
    fresh = T.validate(val_config(imagenet, weights, str(tmp_path / 'fresh'), test_scales=(40,)))
    assert f32['per_scale'] == fresh['per_scale']
    with np.load(T.cache_path(T.val_save_dir(cfg), 40, cfg), allow_pickle=False) as f:
        assert f['probs'].dtype == np.float32
    calls[:] = [56]
    # A flipped run has its own cache: nothing is reused wrongly.
    T.validate(val_config(imagenet, weights, out, test_scales=(40,), test_flipping=True))
    assert calls == [56, 40]
    # A cache written for another list is not reused.
    lst = os.path.join(imagenet, 'val.lst')
    lines = open(lst).read().splitlines()
    sub = os.path.join(out, 'sub')
    os.makedirs(sub)
    write(os.path.join(sub, 'val.lst'), '\n'.join(
        l.replace('val/', os.path.join(imagenet, 'val') + '/') for l in lines[:-1]) + '\n')
    cfg = val_config(sub, weights, out, test_scales=(40,))
    res = T.validate(cfg)
    assert calls == [56, 40, 40] and res['images'] == len(lines) - 1


def _validate_process(root, weights, out, *extra):
    """``iclass/ilsvrc.py --phase val`` in a fresh process -> (results.json, cache, log)."""
    cmd = [sys.executable, os.path.join(REPO, 'iclass', 'ilsvrc.py'), '--data-root', root,
           '--phase', 'val', '--weights', weights, '--split', 'val', '--test-scales', '40',
           '--batch-images', '4', '--output', str(out), '--no-progress'] + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = os.path.join(str(out), LABEL + '_ep-0001')
    results = json.load(open(os.path.join(folder, 'results.json')))
    caches = sorted(n for n in os.listdir(folder) if n.startswith('preds_'))
    with np.load(os.path.join(folder, caches[0])) as f:
        probs = f['probs']
    return results, probs, proc.stderr


def test_cache_of_other_weights_or_data_is_recomputed(imagenet, weights, tmp_path):
    """Same weights file name and list, other content: the cache is not reused, and the
    results equal a validation into an empty folder."""
    models = tmp_path / 'models'
    models.mkdir()
    path = str(models / os.path.basename(weights))
    with open(weights, 'rb') as src, open(path, 'wb') as dst:
        dst.write(src.read())
    out = tmp_path / 'out'
    first, first_probs, _ = _validate_process(imagenet, path, out)
    mx.random.seed(21)
    save_params(iclass.get_model(LABEL), path)                # new content, same name
    again, probs, log = _validate_process(imagenet, path, out)
    fresh, fresh_probs, _ = _validate_process(imagenet, path, tmp_path / 'fresh')
    np.testing.assert_array_equal(probs, fresh_probs)
    assert not np.allclose(probs, first_probs)                # the change matters
    keep = ('top1_error', 'top5_error', 'per_scale', 'weights_sha256')
    assert {k: again[k] for k in keep} == {k: fresh[k] for k in keep}
    assert first['weights_sha256'] != again['weights_sha256']
    why = [l for l in log.splitlines() if 'not reused' in l]
    assert len(why) == 1 and 'weights_sha256' in why[0]
    # an image rewritten in place (same list, same names) changes the list digest
    data = tmp_path / 'data'
    import shutil
    shutil.copytree(imagenet, str(data))  # same names, sizes, times: the same key as before
    base_probs = probs
    image = sorted(p for p in (data / 'val').rglob('*') if p.is_file())[0]
    im = Image.open(str(image))
    im.transpose(Image.FLIP_TOP_BOTTOM).rotate(90).save(str(image), format=im.format)
    changed, changed_probs, log = _validate_process(str(data), path, out)
    fresh, fresh_probs, _ = _validate_process(str(data), path, tmp_path / 'fresh2')
    np.testing.assert_array_equal(changed_probs, fresh_probs)
    assert not np.array_equal(changed_probs, base_probs)
    assert any('not reused' in l and 'list_sha256' in l for l in log.splitlines())


# ------------------------------------------------------------------ command line

def test_cli_from_repo_root(imagenet, weights, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, 'iclass/ilsvrc.py', '--data-root', imagenet, '--phase', 'val',
           '--weights', weights, '--split', 'val', '--test-scales', '40', '--test-flipping',
           '--batch-images', '4', '--output', str(tmp_path), '--no-progress']
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'top-1 error' in proc.stdout
    res = json.load(open(os.path.join(str(tmp_path), LABEL + '_ep-0001', 'results.json')))
    assert res['flipping'] and res['scales'] == [40]


def run_cli_error(capsys, argv):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    return err[0]


def test_cli_bad_input_is_one_line(imagenet, weights, tmp_path, capsys):
    def val_args(root, w=weights):
        return ['--phase', 'val', '--data-root', root, '--weights', w, '--test-scales', '40',
                '--output', str(tmp_path), '--no-progress']

    def data_copy(name, edit):
        root = str(tmp_path / name)
        os.makedirs(root)
        lines = open(os.path.join(imagenet, 'val.lst')).read().splitlines()
        lines = [l.replace('val/', os.path.join(imagenet, 'val') + '/') for l in lines]
        write(os.path.join(root, 'val.lst'), '\n'.join(edit(lines)) + '\n')
        return root

    root = data_copy('missing', lambda ls: ls + ['99\t1\t/nowhere/lost.JPEG'])
    assert '/nowhere/lost.JPEG: image not found' in run_cli_error(capsys, val_args(root))
    root = data_copy('badclass', lambda ls: ls[:1] + ['1\t%d\t%s' % (CLASSES, ls[1].split('\t')[2])])
    msg = run_cli_error(capsys, val_args(root))
    assert 'val.lst line 2: class index %d outside 0..%d' % (CLASSES, CLASSES - 1) in msg
    root = data_copy('nolabel', lambda ls: ls[:2] + [ls[2].split('\t')[2]])
    assert 'val.lst line 3: no class index' in run_cli_error(capsys, val_args(root))
    # Weights of another model (5 classes) under this model's name. (Model A and A1 have
    # the same parameters, so only their labels tell them apart.)
    other = iclass.get_model('demo-cls_rna-a1-mini_cls5')
    wrong = str(tmp_path / (LABEL + '_ep-0002.params'))
    save_params(other, wrong)
    msg = run_cli_error(capsys, val_args(imagenet, wrong))
    assert wrong in msg and 'linear8' in msg
    # A weights file whose name carries no model label.
    plain = str(tmp_path / 'weights.params')
    save_params(other, plain)
    msg = run_cli_error(capsys, val_args(imagenet, plain))
    assert plain in msg and '--model' in msg
    msg = run_cli_error(capsys, ['--phase', 'val', '--data-root', imagenet, '--test-scales',
                                 'x40'])
    assert msg == "error: --test-scales takes comma-separated integers, got 'x40'"


# ------------------------------------------------------------------------ training

TRAIN_LABEL = 'demo-cls_rna-a1-mini_cls5'


def train_setup(tmp_path, per_class, **options):
    """A 5-class generated folder and a training config of the mini net on it:
    ``(root, output folder, label, Config)``."""
    root, out = str(tmp_path / 'data'), str(tmp_path / 'out')
    make_imagenet(root, classes=5, per_class=per_class)
    cfg = T.Config(phase='train', data_root=root, split='train', model=TRAIN_LABEL, output=out,
                   crop_size=32, progress=False, **options)
    return root, out, TRAIN_LABEL, cfg


def test_short_training_lowers_loss_and_resumes(tmp_path):
    root, out, label, cfg = train_setup(tmp_path, 4, batch_images=10, base_lr=0.1,
                                        lr_type='linear', to_epoch=6, stop_epoch=4)
    history = T.train(cfg)
    losses = [e['loss'] for e in history['epochs']]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.1, losses
    ckpt = os.path.join(out, label + '_ep-0004.params')
    assert os.path.isfile(ckpt)
    net = iclass.get_model(label, pretrained=ckpt)          # released format, strict load
    assert net.fc.weight.shape == (5, 128)
    # The optimizer state saved beside it (no pickle): the authors' optimizer and
    # hyper-parameters, a momentum buffer for every trained parameter, keyed by name.
    stem = ckpt[:-len('.params')]
    meta = json.load(open(stem + '.states.json'))
    assert meta['optimizer'] == 'torchnesterov'
    assert (meta['settings']['momentum'], meta['settings']['wd']) == (0.9, 0.0001)
    states = mx.nd.load(stem + '.states.nd')
    params = net.collect_params()
    trained = [n for n in params if not n.endswith(('running_mean', 'running_var'))]
    assert sorted(states) == sorted(trained)
    assert all(states[n].shape == params[n].shape for n in trained)
    assert not os.path.exists(os.path.join(out, label + '_ep-0003.states.nd'))
    # Resume from the checkpoint: epochs 5..6 only, lr continues along the same schedule.
    cfg2 = T.Config(phase='train', data_root=root, split='train', weights=ckpt, output=out,
                    batch_images=10, crop_size=32, base_lr=0.1, lr_type='linear', to_epoch=6,
                    progress=False)
    history2 = T.train(cfg2)
    assert [e['epoch'] for e in history2['epochs']] == [1, 2, 3, 4, 5, 6]
    assert history2['epochs'][:4] == history['epochs']
    assert os.path.isfile(os.path.join(out, label + '_ep-0006.params'))
    lrs = [u['lr'] for u in history2['updates']]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * lrs[0] + 1e-6


def test_validation_on_two_devices_matches_one(imagenet, weights, tmp_path):
    one = val_config(imagenet, weights, str(tmp_path / 'one'), test_scales=(40,),
                     test_3crops=True)
    two = val_config(imagenet, weights, str(tmp_path / 'two'), test_scales=(40,),
                     test_3crops=True, gpus='cpu:2', prefetch_threads=2, prefetcher='process')
    r1, r2 = T.validate(one), T.validate(two)
    assert (r1['top1_error'], r1['top5_error']) == (r2['top1_error'], r2['top5_error'])
    p1 = np.load(T.cache_path(T.val_save_dir(one), 40, one))['probs']
    p2 = np.load(T.cache_path(T.val_save_dir(two), 40, two))['probs']
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-7)


def test_training_on_two_devices_with_mirror(tmp_path):
    _, out, label, cfg = train_setup(tmp_path, 2, batch_images=4, base_lr=0.05, lr_type='step',
                                     lr_steps=(1,), to_epoch=1, gpus='cpu:2',
                                     backward_do_mirror=True)
    history = T.train(cfg)
    lrs = [u['lr'] for u in history['updates']]
    assert lrs == pytest.approx([0.05, 0.005])          # 10 images, batches of 4: 2 updates
    assert np.isfinite(history['epochs'][0]['loss'])
    ckpt = os.path.join(out, label + '_ep-0001.params')
    net = iclass.get_model(label, pretrained=ckpt)
    assert os.path.isfile(ckpt[:-len('.params')] + '.states.nd')
    assert np.isfinite(net.fc.weight.data().asnumpy()).all()


def _pool_pads(net):
    from mxnet.gluon import nn
    pads = []

    def visit(block):
        if isinstance(block, nn.MaxPool2D):
            pads.append(block._kwargs['pad'])
        for child in block._children.values():
            visit(child)
    visit(net)
    return pads

def test_resume_on_two_devices_equals_uninterrupted(tmp_path):
    """TorchNesterov's velocity saved and restored on two devices with a kvstore: a run
    stopped after epoch 1 and resumed ends with the weights of an uninterrupted run."""
    root, out, label, cfg = train_setup(tmp_path, 2, batch_images=4, base_lr=0.05,
                                        lr_type='step', lr_steps=(3,), to_epoch=2,
                                        gpus='cpu:2',
                                        kvstore='device')
    straight = T.train(cfg)
    split = str(tmp_path / 'split')
    T.train(dataclasses.replace(cfg, output=split, stop_epoch=1))
    ckpt = os.path.join(split, label + '_ep-0001.params')
    cold = str(tmp_path / 'cold')
    os.makedirs(cold)
    shutil.copy(ckpt, cold)                       # the weights only, no optimizer state
    resumed = T.train(dataclasses.replace(cfg, output=split, weights=ckpt, model=None))
    assert [u['lr'] for u in resumed['updates']] == [u['lr'] for u in straight['updates']]
    a = mx.nd.load(os.path.join(out, label + '_ep-0002.params'))
    b = mx.nd.load(os.path.join(split, label + '_ep-0002.params'))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=k)
    # without the velocity the resumed run differs: the test can fail
    T.train(dataclasses.replace(cfg, output=cold, weights=os.path.join(cold, label +
                                                                       '_ep-0001.params'),
                                model=None))
    c = mx.nd.load(os.path.join(cold, label + '_ep-0002.params'))
    assert max(np.abs(a[k].asnumpy() - c[k].asnumpy()).max() for k in a) > 1e-4


def test_validation_during_training_records_top1(tmp_path):
    """--val-every: top-1/top-5 of each validated checkpoint, computed here directly from
    the images, and the best checkpoint kept."""
    root, out, label, cfg = train_setup(tmp_path, 4, batch_images=10, base_lr=0.1,
                                        to_epoch=3, val_every=1, keep_checkpoints=0,
                                        test_scales=(40,))
    history = T.train(cfg)
    paths, labels = read_list(root)
    tops = []
    for e in history['epochs']:
        ckpt = os.path.join(out, label + '_ep-%04d.params' % e['epoch'])
        net = iclass.get_model(label, pretrained=ckpt)
        probs = direct_probs(net, paths, 40, False, False)
        order = np.argsort(-probs, axis=1, kind='stable')
        assert e['val_top1'] == pytest.approx(np.mean(order[:, 0] == labels), abs=1e-9)
        assert e['val_top5'] == pytest.approx(
            np.mean((order[:, :5] == labels[:, None]).any(axis=1)), abs=1e-9)
        tops.append(e['val_top1'])
    best_epoch = 1 + int(np.argmax(tops))
    best = mx.nd.load(os.path.join(out, label + '_best.params'))
    ref = mx.nd.load(os.path.join(out, label + '_ep-%04d.params' % best_epoch))
    assert all(np.array_equal(best[k].asnumpy(), ref[k].asnumpy()) for k in ref)
    csv_text = open(os.path.join(out, 'epochs.csv')).read()
    assert 'val_top1' in csv_text.splitlines()[0]


def test_pool_style_reaches_model_a(imagenet, tmp_path):
    """Model A's max pools: pad 1 ('same', the authors' pool_top_infer_style=None) for a new
    model; 'caffe' (pad 0) for the released Model A; otherwise what the training run
    recorded beside the weights; --pool-top-infer-style overrides."""
    label = 'demo-cls_rna-a-mini_cls%d' % CLASSES
    assert set(_pool_pads(iclass.get_model(label))) == {(1, 1)}
    assert set(_pool_pads(iclass.get_model(label, pool_style='caffe'))) == {(0, 0)}
    assert zoo.recorded_pool_style('models/ilsvrc-cls_rna-a_cls1000_ep-0001.params') == 'caffe'
    assert T.eval_pool_style(None, 'models/ilsvrc-cls_rna-a_cls1000_ep-0001.params') == 'caffe'
    assert T.eval_pool_style('same', 'models/ilsvrc-cls_rna-a_cls1000_ep-0001.params') == 'same'
    mx.random.seed(5)
    folder = tmp_path / 'w'
    folder.mkdir()
    path = str(folder / (label + '_ep-0003.params'))
    save_params(iclass.get_model(label), path)
    probs = {}

    def evaluate(style, name):
        cfg = val_config(imagenet, path, str(tmp_path / name), test_scales=(64,),
                         pool_top_infer_style=style)
        T.validate(cfg)
        return np.load(T.cache_path(T.val_save_dir(cfg), 64, cfg))['probs']
    for style in ('caffe', 'same'):
        probs[style] = evaluate(style, style)
    np.testing.assert_array_equal(evaluate(None, 'unknown'), probs['same'])   # no record
    write(str(folder / (label + '_config.yaml')), 'pool_top_infer_style: caffe\n')
    np.testing.assert_array_equal(evaluate(None, 'recorded'), probs['caffe'])
    assert np.abs(probs['same'] - probs['caffe']).max() > 1e-4
    paths, _ = read_list(imagenet)
    net = iclass.get_model(label, pretrained=path, pool_style='same')
    np.testing.assert_allclose(probs['same'], direct_probs(net, paths, 64, False, False),
                               rtol=1e-4, atol=1e-6)


def test_training_records_the_pool_style_for_evaluation(imagenet, tmp_path):
    label = 'demo-cls_rna-a-mini_cls%d' % CLASSES
    out = str(tmp_path / 'out')
    cfg = T.Config(phase='train', data_root=imagenet, split='train', model=label, output=out,
                   batch_images=5, crop_size=64, base_lr=0.01, to_epoch=1, progress=False)
    T.train(cfg)
    import yaml
    with open(os.path.join(out, label + '_config.yaml')) as f:
        assert yaml.safe_load(f)['pool_top_infer_style'] == 'same'
    weights = os.path.join(out, label + '_ep-0001.params')
    assert zoo.recorded_pool_style(weights) == 'same'
    cfg = val_config(imagenet, weights, str(tmp_path / 'val'), test_scales=(64,))
    T.validate(cfg)
    assert cfg.pool_top_infer_style == 'same'
    assert T.cache_path(T.val_save_dir(cfg), 64, cfg).endswith('preds_s64.npz')


def test_finetune_from_other_classifier_loads_backbone(tmp_path):
    root = str(tmp_path / 'data')
    make_imagenet(root, classes=5, per_class=2)
    mx.random.seed(9)
    source = iclass.get_model('ilsvrc-cls_rna-a1-mini_cls1000')
    pre = str(tmp_path / 'ilsvrc-cls_rna-a1-mini_cls1000_ep-0007.params')
    save_params(source, pre)
    label = 'demo-cls_rna-a1-mini_cls5'
    cfg = T.Config(phase='train', data_root=root, split='train', model=label, weights=pre,
                   output=str(tmp_path / 'out'), batch_images=5, crop_size=32, base_lr=0.0,
                   to_epoch=1, progress=False)
    history = T.train(cfg)
    assert [e['epoch'] for e in history['epochs']] == [1]      # a new model starts at 0
    tuned = mx.nd.load(os.path.join(str(tmp_path / 'out'), label + '_ep-0001.params'))
    orig = mx.nd.load(pre)
    # lr 0: the backbone is the pre-trained one; the new 5-way head is initialised.
    np.testing.assert_array_equal(tuned['arg:res4b1_branch2a_weight'].asnumpy(),
                                  orig['arg:res4b1_branch2a_weight'].asnumpy())
    assert tuned['arg:linear5_weight'].shape == (5, 128) and 'arg:linear1000_weight' not in tuned


def test_too_small_scale_is_a_clear_error(imagenet, tmp_path, capsys):
    label = 'demo-cls_rna-a-mini_cls%d' % CLASSES
    path = str(tmp_path / (label + '_ep-0001.params'))
    save_params(iclass.get_model(label), path)
    msg = run_cli_error(capsys, ['--phase', 'val', '--data-root', imagenet, '--weights', path,
                                 '--test-scales', '32', '--no-progress',
                                 '--pool-top-infer-style', 'caffe'])
    assert 'cannot run on 32x32 crops' in msg


def test_a1_tuned_from_model_a_loads_every_matching_array(tmp_path):
    """The authors' recipe ``--model ilsvrc-cls_rna-a1_cls1000_from-a --weights
    ilsvrc-cls_rna-a_cls1000_ep-0001.params`` (mini nets here): ``mod.fit(...,
    allow_missing=True)`` copies every array of the file whose name and shape the new
    network has -- the 1000-way ``linear1000`` included -- and initialises only the rest.
    With lr 0 the saved epoch-1 weights must be the file's for all of those."""
    root = str(tmp_path / 'data')
    make_imagenet(root, classes=5, per_class=2)
    mx.random.seed(21)
    pre = str(tmp_path / 'ilsvrc-cls_rna-a-mini_cls1000_ep-0001.params')
    save_params(iclass.get_model('ilsvrc-cls_rna-a-mini_cls1000'), pre)
    label = 'ilsvrc-cls_rna-a1-mini_cls1000_from-a'
    out = str(tmp_path / 'out')
    cfg = T.Config(phase='train', data_root=root, split='train', model=label, weights=pre,
                   output=out, batch_images=5, crop_size=32, base_lr=0.0, to_epoch=1,
                   progress=False)
    T.train(cfg)
    tuned = mx.nd.load(os.path.join(out, label + '_ep-0001.params'))
    orig = mx.nd.load(pre)
    # the authors' rule, written out: a target array is copied iff its key is in the file
    # with the same shape. Model A and A1 have the same arrays (A pools where A1 strides),
    # so every array is copied, the classifier included.
    copied = [k for k in tuned if k.startswith('arg:') and k in orig
              and orig[k].shape == tuned[k].shape]
    assert 'arg:linear1000_weight' in copied and 'arg:linear1000_bias' in copied
    assert len(copied) == len([k for k in tuned if k.startswith('arg:')])
    for k in copied:
        np.testing.assert_array_equal(tuned[k].asnumpy(), orig[k].asnumpy(), err_msg=k)
    log = open(os.path.join(out, label + '.log')).read()
    assert '%d arrays loaded, 0 initialised anew' % len(orig) in log


def test_allow_missing_initialises_only_what_is_absent_or_differs(tmp_path):
    mx.random.seed(22)
    arrays = mx.nd.load(save_and_path(iclass.get_model('ilsvrc-cls_rna-a-mini_cls1000'),
                                      tmp_path))
    gone, reshaped = 'arg:res3a_branch2a_weight', 'arg:linear1000_bias'
    del arrays[gone]
    arrays[reshaped] = mx.nd.zeros((7,))
    arrays['arg:not_in_the_network'] = mx.nd.zeros((2,))
    path = str(tmp_path / 'edited_ep-0001.params')
    mx.nd.save(path, arrays)
    net = iclass.get_model('ilsvrc-cls_rna-a1-mini_cls1000', pretrained=path,
                           allow_missing=True)
    report = net.load_report
    assert report['skipped'] == sorted([gone, reshaped]) and report['mismatched'] == [reshaped]
    assert report['ignored'] == ['arg:not_in_the_network']
    keys = released_keys(net)
    assert sorted(report['loaded']) == sorted(set(keys) - {gone, reshaped})
    for k in report['loaded']:
        np.testing.assert_array_equal(keys[k].data().asnumpy(), arrays[k].asnumpy(), err_msg=k)
    fresh = keys[gone].data().asnumpy()
    assert np.isfinite(fresh).all() and fresh.std() > 0
    with pytest.raises(ValueError, match='missing key'):
        iclass.get_model('ilsvrc-cls_rna-a1-mini_cls1000', pretrained=path)   # strict


def save_and_path(net, tmp_path):
    path = str(tmp_path / 'source_ep-0001.params')
    save_params(net, path)
    return path

def test_resume_without_momentum_and_refused_optimizer_change(tmp_path, capsys):
    """--momentum 0 keeps no buffers (an empty state file) and resumes; a state written by
    another optimizer is refused with one line naming the file."""
    root, out, label, cfg = train_setup(tmp_path, 2, batch_images=5, base_lr=0.05,
                                        to_epoch=2, stop_epoch=1, momentum=0.0)
    T.train(cfg)
    ckpt = os.path.join(out, label + '_ep-0001.params')
    assert mx.nd.load(ckpt[:-len('.params')] + '.states.nd') == []
    history = T.train(dataclasses.replace(cfg, weights=ckpt, model=None, stop_epoch=None))
    assert [e['epoch'] for e in history['epochs']] == [1, 2]
    ckpt2 = os.path.join(out, label + '_ep-0002.params')
    meta_path = ckpt2[:-len('.params')] + '.states.json'
    meta = json.load(open(meta_path))
    assert meta['optimizer'] == 'torchnesterov' and meta['settings']['momentum'] == 0.0
    with open(meta_path, 'w') as f:
        json.dump(dict(meta, optimizer='sgd'), f)
    capsys.readouterr()
    assert cli_main(['--phase', 'train', '--data-root', root, '--weights', ckpt2,
                     '--output', out, '--crop-size', '32', '--batch-images', '5',
                     '--to-epoch', '3', '--no-progress']) == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith('error: ')]
    assert len(errors) == 1 and meta_path in errors[0]
    assert 'sgd' in errors[0] and 'torchnesterov' in errors[0]


def test_no_hybridize_trains_the_same_and_a_finished_run_has_nothing_to_do(tmp_path):
    """``hybridize=False`` (``--no-hybridize``) is respected and changes nothing but the
    execution; resuming a run whose epochs are all done writes nothing (the shared driver,
    as segmentation does)."""
    from rn38.params import read_params
    _, out, label, cfg = train_setup(tmp_path, 2, batch_images=5, base_lr=0.05, to_epoch=1)
    first = T.train(cfg)
    eager = str(tmp_path / 'eager')
    second = T.train(dataclasses.replace(cfg, output=eager, hybridize=False))
    # same start, same batches: the first loss agrees to float precision; the updates
    # then differ only by the graph's rounding (oneDNN fusions)
    assert second['updates'][0]['loss'] == pytest.approx(first['updates'][0]['loss'], rel=1e-5)
    ckpt = os.path.join(out, label + '_ep-0001.params')
    hybrid = read_params(ckpt)
    imperative = read_params(os.path.join(eager, label + '_ep-0001.params'))
    assert set(hybrid) == set(imperative)
    for name in hybrid:
        np.testing.assert_allclose(imperative[name].asnumpy(), hybrid[name].asnumpy(),
                                   rtol=1e-2, atol=2e-3, err_msg=name)
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    history = T.train(dataclasses.replace(cfg, weights=ckpt, model=None))
    assert history['epochs'] == [] and history['updates'] == []
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)
            if not f.endswith('.log')} == {f: t for f, t in before.items()
                                            if not f.endswith('.log')}
