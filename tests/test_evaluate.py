import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import issegm
from issegm.datasets import DataError, get_dataset_spec, list_samples
from issegm.evaluate import evaluate, output_paths
from issegm.official import official_cityscapes_eval
from issegm.predictor import (SegPredictor, receptive_radius, resize_maps, scaled_size,
                              walked_receptive_radius)
from issegm.metrics import ConfusionMatrix
from rn38.image import BICUBIC, BILINEAR, LANCZOS, interp_method
from rn38.net import ResNet38FCN, stage_table
from rn38.zoo import build_model

MINI = 'cityscapes_rna-a1-mini_cls19_s8'


# ----------------------------------------------------------------------------- helpers

def softmax(logits):
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


class ProbeNet(mx.gluon.Block):
    """A fake 2-class network of stride s that records its inputs.

    Logits at output cell (j, i): class 0 = 2 * input[0, j*s, i*s] + 0.1 * i (the ramp
    makes it not mirror-symmetric), class 1 = 0.
    """

    def __init__(self, stride):
        super().__init__()
        self.feat_stride = stride
        self.classes = 2
        self.inputs = []

    @staticmethod
    def logits(x, stride):
        sub = x[0, ::stride, ::stride]
        out = np.zeros((2,) + sub.shape, np.float32)
        out[0] = 2.0 * sub + 0.1 * np.arange(sub.shape[1])[np.newaxis]
        return out

    def forward(self, x):
        arr = x.asnumpy()
        self.inputs.append(arr[0])
        return mx.nd.array(self.logits(arr[0], self.feat_stride)[np.newaxis])


def identity_norm(net, **kwargs):
    """A predictor whose normalisation is x = pixel / 255 (mean 0, std 1)."""
    return SegPredictor(net, mean=(0, 0, 0), std=(1, 1, 1), **kwargs)


def small_rf_net(seed=0):
    """Stride-4 conv net with biases; receptive radius 1 + 1 + 2 + 2*1*4 = 12 px."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, padding=1, in_channels=3), nn.Activation('relu'),
            nn.Conv2D(6, 3, strides=2, padding=1, in_channels=6), nn.Activation('relu'),
            nn.Conv2D(6, 3, strides=2, padding=1, in_channels=6), nn.Activation('relu'),
            nn.Conv2D(3, 3, padding=2, dilation=2, in_channels=6))
    net.initialize(mx.init.Normal(0.5))
    rs = np.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith('bias'):
            p.set_data(mx.nd.array(rs.uniform(-1, 1, p.shape)))
    net.feat_stride, net.classes = 4, 3
    return net


# A few Cityscapes labelIds: unlabeled, ego vehicle (ignored), road, sidewalk, building,
# vegetation, sky, person, car.
CS_IDS = (0, 1, 7, 8, 11, 21, 23, 24, 26)


def make_cityscapes_like(root, n=3, height=24, width=40, seed=0, split='val'):
    """A Cityscapes-layout folder: leftImg8bit, gtFine labelIds and instanceIds PNGs."""
    rs = np.random.RandomState(seed)
    city = 'testcity'
    img_dir = os.path.join(root, 'leftImg8bit', split, city)
    gt_dir = os.path.join(root, 'gtFine', split, city)
    os.makedirs(img_dir)
    os.makedirs(gt_dir)
    for k in range(n):
        stem = '%s_%06d_%06d' % (city, 0, 19 + k)
        image = rs.randint(0, 256, (height, width, 3)).astype(np.uint8)
        cells = rs.choice(CS_IDS, (height // 4 + 1, width // 4 + 1))
        label = np.kron(cells, np.ones((4, 4), np.int64))[:height, :width].astype(np.uint8)
        inst = label.astype(np.uint16)
        for lid in (24, 26):  # one instance per 4x4 block of person / car
            ys, xs = np.nonzero(label == lid)
            inst[ys, xs] = lid * 1000 + (ys // 4) * 50 + xs // 4
        cv2.imwrite(os.path.join(img_dir, stem + '_leftImg8bit.png'), image[:, :, ::-1])
        cv2.imwrite(os.path.join(gt_dir, stem + '_gtFine_labelIds.png'), label)
        cv2.imwrite(os.path.join(gt_dir, stem + '_gtFine_instanceIds.png'), inst)
    return root


class FixedPredictor:
    """Deterministic prediction from the image alone: train id = red channel % C."""

    def __init__(self, num_classes=19):
        self.num_classes = num_classes
        self.calls = 0

    def predict_probs(self, image):
        self.calls += 1
        pred = image[:, :, 0].astype(np.int64) % self.num_classes
        probs = np.zeros((self.num_classes,) + pred.shape, np.float32)
        np.put_along_axis(probs, pred[np.newaxis], 0.9, axis=0)
        return probs


# ----------------------------------------------------------------------------- geometry

def test_scaled_size_longer_side_and_rounding():
    assert scaled_size(1024, 2048, 1024) == (512, 1024)
    assert scaled_size(1024, 2048, 2048) == (1024, 2048)
    assert scaled_size(30, 40, 20) == (15, 20)
    assert scaled_size(40, 30, 20) == (20, 15)
    assert scaled_size(333, 500, None) == (333, 500)
    assert scaled_size(5, 8, 4) == (2, 4)  # 2.5 rounds to even, as numpy did for them
    assert scaled_size(7, 8, 4) == (4, 4)  # 3.5 -> 4


def test_interp_method_follows_the_authors_rule():
    assert interp_method((100, 200), (50, 100)) == LANCZOS
    assert interp_method((50, 100), (100, 200)) == BICUBIC
    assert interp_method((100, 200), (100, 100)) == BILINEAR
    assert interp_method((100, 200), (120, 150)) == BILINEAR


def test_receptive_radius():
    assert receptive_radius(small_rf_net()) == 12
    assert receptive_radius(build_model('cityscapes_rna-a1_cls19_s8', 'segmentation')) == 470
    assert receptive_radius(build_model(MINI, 'segmentation')) == 318


@pytest.mark.parametrize('net_name,stride,head', [
    ('a1', 8, '2conv'), ('a1', 16, '1conv'), ('a1', 32, 'bn-2conv'), ('a', 16, '2conv'),
    ('a', 32, '2conv'), ('a1-mini', 8, '1conv'), ('a-mini', 16, 'bn-2conv')])
def test_network_states_the_radius_its_layers_have(net_name, stride, head):
    """The FCN's radius from its stage table equals the walk over the built layers (no
    parameters allocated)."""
    net = ResNet38FCN(stage_table(net_name, stride, segmentation=True), 19, head=head)
    assert net.receptive_radius == walked_receptive_radius(net) > 0


# ----------------------------------------------------------------------------- protocol

def test_single_step_input_is_the_image_top_left_zero_padded():
    net = ProbeNet(stride=4)
    pred = identity_norm(net)
    rs = np.random.RandomState(0)
    image = rs.randint(0, 256, (6, 10, 3)).astype(np.uint8)
    probs = pred.predict_probs(image)
    assert len(net.inputs) == 1
    x = net.inputs[0]
    assert x.shape == (3, 8, 12)  # padded up to multiples of the stride
    np.testing.assert_allclose(x[:, :6, :10], image.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert not x[:, 6:].any() and not x[:, :, 10:].any()
    assert probs.shape == (2, 6, 10)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_mean_std_normalisation():
    net = ProbeNet(stride=4)
    pred = SegPredictor(net)  # ImageNet mean/std
    image = np.full((4, 4, 3), 51, np.uint8)
    pred.predict_probs(image)
    expected = (0.2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(net.inputs[0][:, 0, 0], expected, rtol=1e-5)


def expected_shifted_input(image_chw, dy, dx, in_h, in_w):
    c, h, w = image_chw.shape
    x = np.zeros((c, in_h, in_w), np.float32)
    for y in range(h):
        for xx in range(w):
            sy, sx = y + dy, xx + dx
            if 0 <= sy < h and 0 <= sx < w:
                x[:, y, xx] = image_chw[:, sy, sx]
    return x


@pytest.mark.parametrize('flip', [False, True])
def test_test_steps_half_stride_offsets_interleaving_and_flipping(flip):
    stride, steps = 8, 2
    net = ProbeNet(stride)
    pred = identity_norm(net, test_steps=steps, flip=flip)
    rs = np.random.RandomState(1)
    image = rs.randint(0, 256, (12, 20, 3)).astype(np.uint8)
    norm = pred.normalize(image)
    fine = pred.fine_probs(norm)
    assert fine.shape == (2, 2 * 2, 3 * 2)  # (16/8 * T, 24/8 * T)
    inputs = net.inputs
    assert len(inputs) == steps * steps * (2 if flip else 1)
    plain = inputs[::2] if flip else inputs
    if flip:  # the second forward of each pass is the mirrored padded input
        for a, b in zip(inputs[::2], inputs[1::2]):
            np.testing.assert_array_equal(b, a[:, :, ::-1])
    # canvas offset s//2 = 4, window offsets p//2 + k*p = 2, 6 (p = 4): shifts -2, +2
    shifts = {0: -2, 1: 2}
    found = set()
    for iy in range(steps):
        for ix in range(steps):
            want = expected_shifted_input(norm.transpose(2, 0, 1), shifts[iy], shifts[ix],
                                          16, 24)
            match = [k for k, x in enumerate(plain) if np.allclose(x, want, atol=1e-6)]
            assert len(match) == 1, (iy, ix)
            found.add(match[0])
            probs = softmax(ProbeNet.logits(want, stride))
            if flip:
                mirrored = softmax(ProbeNet.logits(want[:, :, ::-1], stride))[:, :, ::-1]
                probs = 0.5 * (probs + mirrored)
            np.testing.assert_allclose(fine[:, iy::steps, ix::steps], probs, atol=1e-6)
    assert len(found) == steps * steps


def test_test_steps_must_divide_stride():
    with pytest.raises(ValueError, match='divide'):
        SegPredictor(ProbeNet(8), test_steps=3)


def test_square_padding_mode_pads_to_the_test_scale():
    net = ProbeNet(stride=4)
    pred = identity_norm(net, scales=[18], pad_mode='scale')
    image = np.zeros((9, 18, 3), np.uint8)
    pred.predict_probs(image)
    assert net.inputs[0].shape == (3, 20, 20)


def test_scores_resized_back_bicubic_then_to_image_size():
    net = ProbeNet(stride=4)
    pred = identity_norm(net, scales=[20])
    rs = np.random.RandomState(2)
    image = rs.randint(0, 256, (30, 40, 3)).astype(np.uint8)
    probs = pred.predict_probs(image)
    assert probs.shape == (2, 30, 40)
    x = net.inputs[0]
    assert x.shape == (3, 16, 20)  # image resized to 15 x 20, padded to 16 x 20
    # the network's probabilities (4 x 5 cells) -> input size (bicubic x4) -> crop 15 x 20
    # -> image size 30 x 40 (both sides grow: bicubic)
    net_probs = softmax(ProbeNet.logits(x, 4))
    up = resize_maps(net_probs, (16, 20), BICUBIC)[:, :15, :20]
    want = resize_maps(np.ascontiguousarray(up), (30, 40), BICUBIC)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    # the argmax is taken after resizing: boundaries at pixel, not cell, resolution
    labels = pred.predict(image)
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_multi_scale_average_is_in_probability():
    rs = np.random.RandomState(3)
    image = rs.randint(0, 256, (18, 26, 3)).astype(np.uint8)
    both = identity_norm(ProbeNet(4), scales=[16, 40]).predict_probs(image)
    a = identity_norm(ProbeNet(4), scales=[16]).predict_probs(image)
    b = identity_norm(ProbeNet(4), scales=[40]).predict_probs(image)
    np.testing.assert_allclose(both, 0.5 * (a + b), atol=1e-6)
    np.testing.assert_allclose(both.sum(0), 1.0, atol=1e-5)
    assert np.abs(a - b).max() > 1e-3  # the scales do differ


# ----------------------------------------------------------------------------- tiling

def test_sliding_window_equals_whole_image_small_net():
    net = small_rf_net()
    rs = np.random.RandomState(4)
    image = rs.randint(0, 256, (37, 61, 3)).astype(np.uint8)
    whole = SegPredictor(net).predict_probs(image)
    tiled_pred = SegPredictor(net, max_input_pixels=100, tile_size=8)
    assert tiled_pred.tile_margin == 12
    tiled = tiled_pred.predict_probs(image)
    assert tiled_pred.timings['forwards'] == 5 * 8  # 40 x 64 input in 8 x 8 cores
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # a margin below the receptive field is only an approximation
    rough = SegPredictor(net, max_input_pixels=100, tile_size=8, tile_margin=4)
    assert np.abs(rough.predict_probs(image) - whole).max() > 1e-3


def test_sliding_window_equals_whole_image_mini_resnet38_with_flip_and_steps():
    net = issegm.get_model(MINI)
    rs = np.random.RandomState(5)
    # wider than 2 margins (2 x 320) plus a core: some windows touch neither border
    image = rs.randint(0, 256, (12, 1000, 3)).astype(np.uint8)
    kwargs = dict(flip=True, test_steps=2)
    whole = SegPredictor(net, **kwargs).predict_probs(image)
    tiled_pred = SegPredictor(net, max_input_pixels=2000, tile_size=128, **kwargs)
    assert tiled_pred.tile_margin == 320
    tiled = tiled_pred.predict_probs(image)
    assert tiled_pred.timings['forwards'] == 8 * 4 * 2
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


# ----------------------------------------------------------------------------- evaluate

@pytest.fixture
def cs_root(tmp_path):
    return make_cityscapes_like(str(tmp_path / 'cityscapes'))


def read_png(path):
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_evaluate_writes_official_format_and_scores(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, cs_root, 'val')
    out = str(tmp_path / 'out')
    result = evaluate(FixedPredictor(), spec, samples, out, progress=False)
    expected = ConfusionMatrix(19)
    for image_path, label_path in samples:
        name = os.path.basename(image_path)[:-4]
        assert name.endswith('_leftImg8bit')
        paths = output_paths(out, name)
        image = read_png(image_path)[:, :, ::-1]
        pred = image[:, :, 0] % 19
        ids = read_png(paths['label'])
        assert ids.dtype == np.uint8 and ids.ndim == 2
        np.testing.assert_array_equal(ids, spec.train_to_label[pred])  # label ids
        assert set(np.unique(ids)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                                        26, 27, 28, 31, 32, 33}
        np.testing.assert_array_equal(read_png(paths['color'])[:, :, ::-1],
                                      spec.palette[pred])
        gt = spec.label_to_train[read_png(label_path)]
        correct = read_png(paths['correct'])
        np.testing.assert_array_equal(correct[gt == 255], 255)
        valid = gt != 255
        np.testing.assert_array_equal(correct[valid], np.where(pred == gt, 127, 0)[valid])
        expected.update(pred, gt)
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['images'] == 3 and summary['images_with_gt'] == 3
    assert summary['pixels'] == expected.total
    assert summary['mean_iou'] == pytest.approx(expected.mean_iou())
    assert summary['pixel_accuracy'] == pytest.approx(expected.pixel_accuracy())
    assert summary['class_iou']['road'] == pytest.approx(expected.class_iou()[0])
    assert result['mean_iou'] == summary['mean_iou'] and result['computed'] == 3
    np.testing.assert_array_equal(ConfusionMatrix.load(os.path.join(out, 'confusion.npz'))
                                  .matrix, expected.matrix)
    for pic in ('class_iou.png', 'confusion.png'):
        assert read_png(os.path.join(out, pic)).shape[2] in (3, 4)


def test_resume_gives_identical_summary(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, cs_root, 'val')
    full_dir = str(tmp_path / 'full')
    evaluate(FixedPredictor(), spec, samples, full_dir, progress=False, plots=False)
    with open(os.path.join(full_dir, 'summary.json')) as f:
        full = f.read()
    # an interrupted run: only the first two images done, no summary yet
    part_dir = str(tmp_path / 'part')
    evaluate(FixedPredictor(), spec, samples[:2], part_dir, progress=False, plots=False)
    os.remove(os.path.join(part_dir, 'summary.json'))
    predictor = FixedPredictor()
    result = evaluate(predictor, spec, samples, part_dir, progress=False, plots=False)
    assert predictor.calls == 1 and result['resumed'] == 2 and result['computed'] == 1
    with open(os.path.join(part_dir, 'summary.json')) as f:
        assert f.read() == full
    # an image whose record is missing is redone; resume=False redoes everything
    os.remove(output_paths(part_dir, sample_stem(samples[0]))['counts'])
    predictor = FixedPredictor()
    evaluate(predictor, spec, samples, part_dir, progress=False, plots=False)
    assert predictor.calls == 1
    predictor = FixedPredictor()
    evaluate(predictor, spec, samples, part_dir, progress=False, plots=False, resume=False)
    assert predictor.calls == 3
    with open(os.path.join(part_dir, 'summary.json')) as f:
        assert f.read() == full


def sample_stem(sample):
    return os.path.splitext(os.path.basename(sample[0]))[0]


def test_official_cityscapes_eval_agrees_with_ours(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, cs_root, 'val')
    out = str(tmp_path / 'out')
    ours = evaluate(FixedPredictor(), spec, samples, out, progress=False, plots=False)
    theirs = official_cityscapes_eval(os.path.join(out, 'labels'), cs_root, 'val')
    assert theirs['mean_iou'] == pytest.approx(ours['mean_iou'], abs=1e-9)
    for name, value in ours['class_iou'].items():
        if value is None:
            assert theirs['class_iou'][name] is None
        else:
            assert theirs['class_iou'][name] == pytest.approx(value, abs=1e-9)
    assert set(theirs['class_iiou']) == {'person', 'rider', 'car', 'truck', 'bus', 'train',
                                         'motorcycle', 'bicycle'}
    assert theirs['class_iiou']['car'] is not None and 0 <= theirs['mean_iiou'] <= 1
    assert 'vehicle' in theirs['category_iou'] and 'vehicle' in theirs['category_iiou']
    # a missing prediction is a one-line DataError
    os.remove(output_paths(out, sample_stem(samples[1]))['label'])
    with pytest.raises(DataError, match='Found no prediction'):
        official_cityscapes_eval(os.path.join(out, 'labels'), cs_root, 'val')


def test_evaluate_with_the_mini_network(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, cs_root, 'val')[:2]
    predictor = SegPredictor(issegm.get_model(MINI), flip=True)
    result = evaluate(predictor, spec, samples, str(tmp_path / 'out'), progress=False,
                      plots=False)
    assert result['images_with_gt'] == 2 and 0 <= result['mean_iou'] <= 1
    assert result['protocol']['flip'] is True
    assert result['timing']['network'] > 0


def test_bad_inputs_are_one_line_errors_naming_the_file(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, cs_root, 'val')
    with pytest.raises(DataError, match='empty'):
        evaluate(FixedPredictor(), spec, [], str(tmp_path / 'a'), progress=False)
    broken = str(tmp_path / 'broken_leftImg8bit.png')
    with open(broken, 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(DataError) as err:
        evaluate(FixedPredictor(), spec, [(broken, samples[0][1])], str(tmp_path / 'b'),
                 progress=False)
    assert str(err.value).startswith(broken) and '\n' not in str(err.value)
    # ground truth of another size
    small = str(tmp_path / 'small_gtFine_labelIds.png')
    cv2.imwrite(small, np.full((5, 7), 7, np.uint8))
    with pytest.raises(DataError) as err:
        evaluate(FixedPredictor(), spec, [(samples[0][0], small)], str(tmp_path / 'c'),
                 progress=False)
    assert str(err.value).startswith(small) and '\n' not in str(err.value)


def test_images_without_ground_truth(cs_root, tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = [(image, None) for image, _ in list_samples(spec, cs_root, 'val')]
    out = str(tmp_path / 'out')
    result = evaluate(FixedPredictor(), spec, samples, out, progress=False)
    assert result['images_with_gt'] == 0 and 'mean_iou' not in result
    names = sorted(os.listdir(os.path.join(out, 'labels')))
    assert len(names) == 3 and not os.path.exists(os.path.join(out, 'correct'))


def load_make_demo_dataset():
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'scripts', 'make_demo_data.py')
    module_spec = importlib.util.spec_from_file_location('make_demo_data', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.make_demo_dataset


class OraclePredictor:
    """Ground truth with every 7th column set to class 13 (car): a good, fixed prediction."""

    def __init__(self, spec, samples):
        self.by_image = {}
        for image_path, label_path in samples:
            image = read_png(image_path)[:, :, ::-1]
            gt = spec.label_to_train[read_png(label_path)].astype(np.int64)
            gt[gt == 255] = 0
            gt[:, ::7] = 13
            self.by_image[image.tobytes()] = gt

    def predict_probs(self, image):
        pred = self.by_image[np.ascontiguousarray(image).tobytes()]
        probs = np.zeros((19,) + pred.shape, np.float32)
        np.put_along_axis(probs, pred[np.newaxis], 1.0, axis=0)
        return probs


def test_official_eval_agrees_on_demo_street_scenes(tmp_path):
    root = str(tmp_path / 'demo')
    load_make_demo_dataset()(root, seed=0, train=0, val=3, height=48, width=96)
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, root, 'val')
    out = str(tmp_path / 'out')
    ours = evaluate(OraclePredictor(spec, samples), spec, samples, out, progress=False,
                    plots=False)
    theirs = official_cityscapes_eval(os.path.join(out, 'labels'), root, 'val')
    assert ours['mean_iou'] > 0.5
    assert theirs['mean_iou'] == pytest.approx(ours['mean_iou'], abs=1e-9)
    for name, value in ours['class_iou'].items():
        assert (theirs['class_iou'][name] is None) == (value is None)
        if value is not None:
            assert theirs['class_iou'][name] == pytest.approx(value, abs=1e-9)
    assert 0 < theirs['class_iiou']['car'] <= 1 and 0 < theirs['mean_category_iiou'] <= 1


# ----------------------------------------------------------------------------- saved predictions

def _authors_interp_preds_as(im_size, net_preds, pred_stride, imh, imw):
    """ademxapp issegm/voc.py ``interp_preds_as`` (with their entry's
    ``choose_interpolation_method``): each class map PIL-CUBIC resized by ``pred_stride``,
    cropped to ``imh x imw``, then resized to ``im_size`` with ``util.get_interp_method``."""
    from PIL import Image
    imh0, imw0 = im_size
    out = []
    for pred in net_preds.astype(np.single):
        input_h, input_w = pred.shape[0] * pred_stride, pred.shape[1] * pred_stride
        up = np.array(Image.fromarray(pred).resize((input_w, input_h), Image.BICUBIC))
        if imh0 == imh:
            out.append(up[:imh, :imw])
            continue
        if imh0 < imh and imw0 < imw:
            method = Image.LANCZOS
        elif imh0 > imh and imw0 > imw:
            method = Image.BICUBIC
        else:
            method = Image.BILINEAR
        out.append(np.array(Image.fromarray(up[:imh, :imw]).resize((imw0, imh0), method)))
    return np.array(out)


def test_saved_predictions_rebuild_the_written_labels_exactly(tmp_path):
    from issegm.outputs import rebuild_prediction
    root = make_cityscapes_like(str(tmp_path / 'cs'), n=2, height=36, width=60)
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, root, 'val')
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    out = str(tmp_path / 'out')
    multi = SegPredictor(net, scales=[None, 45, 80], flip=True, test_steps=2)
    evaluate(multi, spec, samples, out, save_predictions=True, progress=False)
    single = SegPredictor(net, scales=[45], flip=True, test_steps=2, pad_mode='scale')
    evaluate(single, spec, samples, out + '1', save_predictions=True, progress=False)
    fixes = 0
    for image_path, _ in samples:
        name = os.path.basename(image_path)[:-4]
        image = read_png(image_path)[:, :, ::-1].copy()
        for pred, folder in ((multi, out), (single, out + '1')):
            paths = output_paths(folder, name)
            probs, train_ids = rebuild_prediction(paths['probs'])
            np.testing.assert_array_equal(spec.train_to_label[train_ids],
                                          read_png(paths['label']))
            np.testing.assert_allclose(probs, pred.predict_probs(image), atol=2e-3)
            with np.load(paths['probs'], allow_pickle=False) as f:
                record = {k: f[k] for k in f.files}
            fixes += record['label_fix_index'].size
            assert record['image_size'].tolist() == [36, 60]
            assert record['flip'] and record['test_steps'] == 2 and record['pred_stride'] == 4
            assert record['pass_offsets'].tolist() == [2, 6] and record['canvas_offset'] == 4
        # multi-scale: one map per scale, at stride 4 on the padded input
        assert record['scales'].tolist() == [45]
        assert record['fine_0'].shape == (19, 12, 12) and record['fine_0'].dtype == np.float16
    # single scale: the stored map is what the authors stored, and their interpolation of
    # it gives the rebuilt probabilities
    with np.load(output_paths(out, name)['probs'], allow_pickle=False) as f:
        assert f['scales'].tolist() == [0, 45, 80]
        assert [f['fine_%d' % k].shape for k in range(3)] == [(19, 10, 16), (19, 8, 12),
                                                               (19, 12, 20)]
        assert f['resized_sizes'].tolist() == [[36, 60], [27, 45], [48, 80]]
    probs, _ = rebuild_prediction(output_paths(out + '1', name)['probs'])
    with np.load(output_paths(out + '1', name)['probs'], allow_pickle=False) as f:
        theirs = _authors_interp_preds_as(f['image_size'], f['fine_0'], int(f['pred_stride']),
                                          *f['resized_sizes'][0])
    np.testing.assert_array_equal(probs, theirs)
    assert fixes < 0.01 * 36 * 60 * 4


def test_saved_prediction_of_a_cityscapes_image_is_under_2_mb(tmp_path):
    # the stride-8 19-class maps of a 1024x2048 image at the published scale 2048: the same
    # shapes as the released model's (the mini net differs only in its inner widths)
    from issegm.outputs import prediction_record_bytes, rebuild_prediction
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    image = np.random.RandomState(0).randint(0, 256, (1024, 2048, 3)).astype(np.uint8)
    probs, maps = SegPredictor(net, scales=[2048]).predict_maps(image)
    train_ids = probs.argmax(0).astype(np.uint8)
    data = prediction_record_bytes(maps, train_ids)
    assert len(data) < 2 * 2 ** 20
    assert maps['fine'][0].shape == (19, 128, 256)
    assert maps['fine'][0].size * 2 < 1.3e6  # float16, before compression
    path = str(tmp_path / 'p.npz')
    with open(path, 'wb') as f:
        f.write(data)
    np.testing.assert_array_equal(rebuild_prediction(path)[1], train_ids)


def test_rebuild_prediction_rejects_other_files(tmp_path):
    from issegm.outputs import rebuild_prediction
    path = str(tmp_path / 'old.npz')
    np.savez(path, probs=np.zeros((2, 3, 3), np.float16))
    with pytest.raises(DataError, match='old.npz: not a'):
        rebuild_prediction(path)
    with open(path, 'wb') as f:
        f.write(b'junk')
    with pytest.raises(DataError, match='old.npz: cannot read'):
        rebuild_prediction(path)
