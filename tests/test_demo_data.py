"""The synthetic Cityscapes-layout demo dataset (scripts/make_demo_data.py)."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_script
from issegm.datasets import get_dataset_spec, list_samples, read_label
from rn38.image import read_image

SCRIPT = os.path.join(REPO, 'scripts', 'make_demo_data.py')


@pytest.fixture(scope='module')
def demo():
    return load_script('make_demo_data')


@pytest.fixture(scope='module')
def demo_root(demo, tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    demo.make_demo_dataset(root, seed=3, train=9, val=3, height=64, width=128)
    return root


def relative_files(root):
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, '**', '*'),
                                                              recursive=True)
                  if os.path.isfile(p))


def test_layout_is_exactly_cityscapes(demo_root):
    expected = []
    for split, cities, count in (('train', ('aachen', 'bochum', 'bremen'), 9),
                                 ('val', ('frankfurt', 'lindau', 'munster'), 3)):
        for i in range(count):
            city = cities[i % 3]
            stem = '%s_000000_%06d' % (city, i // 3)
            expected.append('leftImg8bit/%s/%s/%s_leftImg8bit.png' % (split, city, stem))
            for kind in ('labelIds', 'instanceIds', 'color'):
                expected.append('gtFine/%s/%s/%s_gtFine_%s.png' % (split, city, stem, kind))
    assert relative_files(demo_root) == sorted(expected)
    spec = get_dataset_spec('cityscapes')
    samples = list_samples(spec, demo_root, 'train')
    assert len(samples) == 9 and len(list_samples(spec, demo_root, 'trainval')) == 12
    image = read_image(samples[0][0])
    assert image.shape == (64, 128, 3)
    assert read_label(spec, samples[0][1], image.shape).shape == (64, 128)


def test_deterministic_by_seed(demo, tmp_path):
    def contents(root):
        return {p: open(os.path.join(root, p), 'rb').read() for p in relative_files(root)}
    a, b, c = (str(tmp_path / n) for n in 'abc')
    demo.make_demo_dataset(a, seed=1, train=3, val=1, height=32, width=64)
    demo.make_demo_dataset(b, seed=1, train=3, val=1, height=32, width=64)
    demo.make_demo_dataset(c, seed=2, train=3, val=1, height=32, width=64)
    first, second, other = contents(a), contents(b), contents(c)
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[p] != other[p] for p in first if p.endswith('_leftImg8bit.png'))


def test_labels_valid_and_scene_classes_present(demo_root):
    spec = get_dataset_spec('cityscapes')
    ids = set()
    for path in glob.glob(os.path.join(demo_root, 'gtFine', '*', '*', '*_labelIds.png')):
        with Image.open(path) as im:
            assert im.mode == 'L'
            ids |= set(np.unique(np.asarray(im)).tolist())
    assert ids <= spec.valid_raw_values
    # road sidewalk building pole sign vegetation sky person car + ego vehicle
    assert {1, 7, 8, 11, 17, 21, 22, 23, 24, 26} <= ids
    assert len({spec.label_to_train[i] for i in ids} - {255}) >= 10


def test_instance_and_colour_files_consistent(demo, demo_root):
    colors = demo.cityscapes_colors()
    instance_total = 0
    for label_path in glob.glob(os.path.join(demo_root, 'gtFine', '*', '*', '*_labelIds.png')):
        label = np.asarray(Image.open(label_path))
        instance = np.asarray(Image.open(label_path.replace('_labelIds', '_instanceIds')))
        assert instance.dtype == np.uint16 or instance.dtype == np.int32  # 16-bit PNG
        is_object = instance >= 1000
        np.testing.assert_array_equal(is_object, np.isin(label, (24, 26)))
        np.testing.assert_array_equal(instance[~is_object], label[~is_object])
        np.testing.assert_array_equal(instance[is_object] // 1000, label[is_object])
        for cls in (24, 26):  # per-class instance numbers are 0..k-1
            ks = np.unique(instance[label == cls] % 1000)
            if ks.size:
                assert ks.max() < 1000 and set(ks.tolist()) <= set(range(ks.max() + 1))
        instance_total += len(np.unique(instance[is_object]))
        rgba = np.asarray(Image.open(label_path.replace('_labelIds', '_color')))
        assert rgba.shape == label.shape + (4,) and (rgba[..., 3] == 255).all()
        np.testing.assert_array_equal(rgba[..., :3], colors[label])
    assert instance_total >= 12  # at least one car and one person per image


def test_class_appearance_is_learnable(demo_root):
    """Nearest class-mean colour per pixel, fitted on train, must beat the majority class
    on val by far: classes have distinct (noisy) colours."""
    def pixels(split):
        xs, ys = [], []
        for image_path, label_path in list_samples(get_dataset_spec('cityscapes'), demo_root,
                                                   split):
            xs.append(read_image(image_path).reshape(-1, 3).astype(np.float64))
            ys.append(np.asarray(Image.open(label_path)).ravel())
        return np.concatenate(xs), np.concatenate(ys)
    x, y = pixels('train')
    xv, yv = pixels('val')
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    pred = classes[((xv[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    accuracy = (pred == yv).mean()
    majority = np.bincount(yv).max() / yv.size
    assert accuracy > 2 * majority and accuracy > 0.45, (accuracy, majority)


def test_command_line(tmp_path):
    out = str(tmp_path / 'cli')
    done = subprocess.run([sys.executable, SCRIPT, '--out', out, '--train', '2', '--val', '1',
                           '--height', '32', '--width', '64', '--seed', '4', '--no-color'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'wrote 2 train + 1 val images (32x64)' in done.stdout
    assert len(relative_files(out)) == 3 * 3
    bad = subprocess.run([sys.executable, SCRIPT, '--out', out, '--height', '8'],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith('error: ') and \
        'at least 32x32' in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr


def test_default_size(demo, tmp_path):
    written = demo.make_demo_dataset(str(tmp_path / 'd'))
    assert (len(written['train']), len(written['val'])) == (24, 8)
    assert read_image(written['train'][0]).shape == (128, 256, 3)
