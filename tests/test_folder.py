"""Own data through ``issegm/folder.py``: a generated folder of images and colour masks,
trained and evaluated in fresh processes; one-line errors for unknown colours and ids."""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLORS = [(0, 255, 255), (0, 0, 255), (255, 255, 0)]  # urban, water, forest
IGNORE_COLOR = (0, 0, 0)
CLASSES_YAML = """classes:
  - {name: urban, color: [0, 255, 255]}
  - {name: water, color: [0, 0, 255]}
  - {name: unknown, color: [0, 0, 0], ignore: true}
  - {name: forest, color: [255, 255, 0]}
"""


def _label_map(rs, h=60, w=80):
    """Class ids 0..2 in three regions, a few ignored rows (3)."""
    lab = np.zeros((h, w), np.int64)
    lab[:, rs.randint(25, 45):] = 1
    lab[rs.randint(30, 45):, :] = 2
    lab[:2] = 3
    return lab


def make_colour_folder(root, splits=(('train', 4), ('val', 2)), seed=0):
    """``root/classes.yaml`` and ``root/<split>/<i>_sat.jpg`` + ``<i>_mask.png`` (RGB)."""
    rs = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'classes.yaml'), 'w') as f:
        f.write(CLASSES_YAML)
    palette = np.array(COLORS + [IGNORE_COLOR], np.uint8)
    for split, count in splits:
        os.makedirs(os.path.join(root, split), exist_ok=True)
        for i in range(count):
            lab = _label_map(rs)
            grey = (lab * 60 + 30 + rs.randint(0, 25, lab.shape)).astype(np.uint8)
            image = np.stack([grey, 255 - grey, grey // 2], -1)
            cv2.imwrite(os.path.join(root, split, '%04d_sat.jpg' % i), image[:, :, ::-1])
            cv2.imwrite(os.path.join(root, split, '%04d_mask.png' % i),
                        palette[lab][:, :, ::-1])
    return root


def _run(argv):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'issegm', 'folder.py')] + argv,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=REPO))
    return proc.returncode, proc.stdout + proc.stderr


def _common(root):
    return ['--data-root', root, '--image-suffix', '_sat.jpg', '--label-suffix', '_mask.png',
            '--gpus', 'cpu', '--no-progress']


def _reference_miou(root, split, label_dir):
    """mIoU from the written label PNGs and the colour masks, decoded here from the YAML's
    colours (entry order: urban, water, unknown = ignore, forest)."""
    entry_colors = [(0, 255, 255), (0, 0, 255), (0, 0, 0), (255, 255, 0)]
    entry_to_class = {0: 0, 1: 1, 3: 2}
    conf = np.zeros((3, 3), np.int64)
    masks = sorted(f for f in os.listdir(os.path.join(root, split)) if f.endswith('_mask.png'))
    for mask_name in masks:
        rgb = np.asarray(Image.open(os.path.join(root, split, mask_name)).convert('RGB'))
        gt = np.full(rgb.shape[:2], -1)
        for entry, color in enumerate(entry_colors):
            if entry in entry_to_class:
                gt[(rgb == color).all(-1)] = entry_to_class[entry]
        stem = mask_name[:-len('_mask.png')] + '_sat'
        raw_pred = np.asarray(Image.open(os.path.join(label_dir, stem + '.png')))
        pred = np.vectorize(lambda v: entry_to_class[int(v)])(raw_pred)
        valid = gt >= 0
        np.add.at(conf, (gt[valid], pred[valid]), 1)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    present = conf.sum(1) > 0
    return float(np.mean(inter[present] / union[present]))


@pytest.mark.parametrize('model, extra', [
    ('folder_rna-a1-mini_cls3_s8', ['--head', 'bn-2conv', '--bn-stats', 'frozen-backbone',
                                    '--image-norm', 'per-image']),
    pytest.param('folder_fcn32s-vgg16_cls3', ['--loss', 'softmax', '--bn-stats', 'batch'],
                 marks=pytest.mark.slow),  # full-size VGG16: ~30 s
])
def test_own_colour_masks_train_and_evaluate_end_to_end(tmp_path, model, extra):
    root = make_colour_folder(str(tmp_path / 'data'))
    out = str(tmp_path / 'out')
    code, log = _run(['--phase', 'train', '--model', model, '--crop-size', '48',
                      '--origin-size', '64', '--batch-images', '2', '--to-epoch', '1',
                      '--output', out] + extra + _common(root))
    assert code == 0, log
    weights = os.path.join(out, model + '_ep-0001.params')
    assert os.path.isfile(weights) and os.path.isfile(os.path.join(out, 'loss_curve.png'))
    code, log = _run(['--phase', 'val', '--weights', weights, '--test-scales', '80'] +
                     [a for a in extra if a in ('--head', 'bn-2conv', '--image-norm',
                                                'per-image')] + _common(root))
    assert code == 0, log
    result = os.path.join(out, model + '_ep-0001')
    with open(os.path.join(result, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['class_names'] == ['urban', 'water', 'forest']
    assert summary['images_with_gt'] == 2
    assert summary['mean_iou'] == pytest.approx(
        _reference_miou(root, 'val', os.path.join(result, 'labels')), abs=1e-9)
    if '--bn-stats' in extra and 'frozen-backbone' in extra:
        arrays = mx.nd.load(weights)
        head = arrays['aux:conv6a_bn_moving_mean'].asnumpy()
        backbone = arrays['aux:bn7_moving_mean'].asnumpy()
        assert np.abs(head).sum() > 0  # learned in the head
        assert np.abs(backbone).sum() == 0  # frozen at its initial value elsewhere


def test_unknown_colour_is_a_one_line_error(tmp_path):
    root = make_colour_folder(str(tmp_path / 'data'), splits=(('train', 2),))
    mask = os.path.join(root, 'train', '0001_mask.png')
    rgb = cv2.imread(mask)
    rgb[10, 20] = (56, 34, 12)  # BGR of RGB (12, 34, 56)
    cv2.imwrite(mask, rgb)
    code, log = _run(['--phase', 'train', '--model', 'folder_rna-a1-mini_cls3_s8',
                      '--crop-size', '48', '--origin-size', '64', '--batch-images', '2',
                      '--to-epoch', '1', '--output', str(tmp_path / 'out')] + _common(root))
    assert code == 2
    assert 'Traceback' not in log
    lines = [line for line in log.splitlines() if mask in line]
    assert lines and '(12, 34, 56)' in lines[0]


def test_index_labels_and_unknown_index(tmp_path):
    root = str(tmp_path / 'data')
    os.makedirs(os.path.join(root, 'train'))
    with open(os.path.join(root, 'classes.yaml'), 'w') as f:
        f.write('classes:\n  - {name: a}\n  - {name: b}\n')
    from issegm.datasets import DataError, folder_spec, list_samples, read_label
    for i, bad in enumerate((False, True)):
        lab = np.zeros((8, 8), np.uint8)
        lab[4:] = 1
        lab[0, 0] = 255  # ignore
        if bad:
            lab[3, 3] = 7
        cv2.imwrite(os.path.join(root, 'train', '%d.jpg' % i), np.zeros((8, 8, 3), np.uint8))
        Image.fromarray(lab).save(os.path.join(root, 'train', '%d.png' % i))
    spec = folder_spec(root)
    assert spec.classes == 2 and spec.class_names == ['a', 'b']
    samples = list_samples(spec, root, 'train')
    good = read_label(spec, samples[0][1])
    assert good[0, 0] == 255 and good[5, 0] == 1 and good[1, 1] == 0
    with pytest.raises(DataError, match=r'1\.png: unknown label id 7'):
        read_label(spec, samples[1][1])
    # the entry: one line, exit 2; the default model takes its class count from the YAML
    code, log = _run(['--phase', 'train', '--crop-size', '8', '--origin-size', '8',
                      '--batch-images', '2', '--to-epoch', '1', '--output',
                      str(tmp_path / 'out'), '--data-root', root, '--gpus', 'cpu',
                      '--no-progress'])
    assert code == 2 and 'Traceback' not in log and 'unknown label id 7' in log
    assert 'folder_rna-a1_cls2_s8' in log


def _make_class_folders(root, seed=0):
    rs = np.random.RandomState(seed)
    for split, count in (('train', 4), ('val', 2)):
        for c, name in enumerate(['cat', 'dog', 'eel']):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                image = np.full((40, 48, 3), 40 + 80 * c, np.uint8) + \
                    rs.randint(0, 30, (40, 48, 3)).astype(np.uint8)
                Image.fromarray(image).save(os.path.join(folder, '%d.jpg' % i))


def test_gluon_classifier_by_name_on_an_image_folder(tmp_path):
    """``iclass/ilsvrc.py`` trains a Gluon model-zoo ResNet by name on an image folder,
    starting from a model-zoo ImageNet ``.params`` file (made here: nothing downloaded),
    and validates the checkpoint."""
    from mxnet.gluon.model_zoo import vision
    root = str(tmp_path / 'cls')
    _make_class_folders(root)
    source = vision.resnet18_v1(pretrained=False)
    source.initialize(mx.init.Xavier())
    source(mx.nd.zeros((1, 3, 32, 32)))
    imagenet = str(tmp_path / 'resnet18_v1-imagenet.params')
    source.save_parameters(imagenet)
    out = str(tmp_path / 'out')
    label = 'folder_gluon-resnet18-v1_cls3'
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'iclass', 'ilsvrc.py'), '--phase', 'train',
         '--data-root', root, '--model', label, '--weights', imagenet, '--crop-size', '32',
         '--batch-images', '4', '--to-epoch', '1', '--base-lr', '0', '--output', out,
         '--no-progress'], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    checkpoint = os.path.join(out, label + '_ep-0001.params')
    saved = mx.nd.load(checkpoint)
    first_conv = [k for k in saved if k.endswith('conv0_weight')][0]
    # lr 0: the backbone is exactly the ImageNet file's, the 3-class head is new
    np.testing.assert_array_equal(saved[first_conv].asnumpy(),
                                  source.features[0].weight.data().asnumpy())
    head = [k for k in saved if k.endswith('dense0_weight')][0]
    assert saved[head].shape == (3, 512)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'iclass', 'ilsvrc.py'), '--phase', 'val',
         '--data-root', root, '--weights', checkpoint, '--test-scales', '32', '--no-progress'],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, label + '_ep-0001', 'results.json')) as f:
        results = json.load(f)
    assert results['images'] == 6 and results['model'] == label
    assert round(results['top1_error'] * 6 / 100, 6) == int(round(results['top1_error'] * 6 / 100))
