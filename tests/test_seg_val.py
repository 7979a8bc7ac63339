"""--phase val as a user runs it, and VOC / ADE20K through the same entries."""
import glob
import json
import os
import shutil
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

import issegm
from issegm import cli
from issegm.datasets import get_dataset_spec
from issegm.evaluate import SegPredictor, val_output_dir
from rn38.params import save_params
from scripts_path import make_demo_dataset

MINI = 'cityscapes_rna-a1-mini_cls19_s8'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    make_demo_dataset(str(root), seed=3, train=4, val=3, height=64, width=128)
    models = tmp_path_factory.mktemp('models')
    net = issegm.get_model(MINI)
    net(mx.nd.zeros((1, 3, 32, 32)))
    weights = str(models / ('%s_ep-0007.params' % MINI))
    save_params(net, weights)
    return str(root), weights


def _val(root, weights, out, *extra):
    return cli.main('cityscapes', ['--phase', 'val', '--data-root', root, '--weights', weights,
                                   '--output', str(out), '--test-scales', '128', '--gpus', 'cpu',
                                   '--no-progress'] + list(extra))


def test_val_writes_official_format_and_scores_agree(demo, tmp_path):
    root, weights = demo
    assert _val(root, weights, tmp_path) == 0
    out = val_output_dir(str(tmp_path), weights, 'val')
    assert os.path.basename(out) == '%s_ep-0007' % MINI
    summary = json.load(open(os.path.join(out, 'summary.json')))
    assert summary['images_with_gt'] == 3
    assert summary['official']['mean_iou'] == pytest.approx(summary['mean_iou'], abs=1e-6)
    for name in ('class_iou.png', 'confusion.png', 'config.yaml', 'official.json'):
        assert os.path.isfile(os.path.join(out, name)), name
    labels = sorted(os.listdir(os.path.join(out, 'labels')))
    assert len(labels) == 3 and all(n.endswith('_leftImg8bit.png') for n in labels)
    # label ids (the official format), not train ids: e.g. road is 7, sky 23
    written = np.array(Image.open(os.path.join(out, 'labels', labels[0])))
    spec = get_dataset_spec('cityscapes')
    assert set(np.unique(written)) <= set(spec.train_to_label[:19].tolist())
    # the written prediction equals the predictor's argmax for that image
    net = issegm.get_model(MINI, pretrained=weights)
    image_path = os.path.join(root, 'leftImg8bit', 'val', labels[0].split('_')[0], labels[0])
    image = np.array(Image.open(image_path).convert('RGB'))
    pred = SegPredictor(net, scales=[128]).predict(image)
    np.testing.assert_array_equal(written, spec.train_to_label[pred])


def test_val_resumes_and_other_splits(demo, tmp_path):
    root, weights = demo
    assert _val(root, weights, tmp_path) == 0
    out = val_output_dir(str(tmp_path), weights, 'val')
    first = json.load(open(os.path.join(out, 'summary.json')))
    os.remove(os.path.join(out, 'summary.json'))
    victim = sorted(os.listdir(os.path.join(out, 'counts')))[0]
    os.remove(os.path.join(out, 'counts', victim))
    assert _val(root, weights, tmp_path) == 0
    again = json.load(open(os.path.join(out, 'summary.json')))
    assert again == first
    assert _val(root, weights, tmp_path, '--split', 'train', '--no-official-eval') == 0
    assert os.path.isdir(val_output_dir(str(tmp_path), weights, 'train'))


def test_val_bad_inputs(demo, tmp_path, capsys):
    root, weights = demo
    other = issegm.get_model('voc_rna-a1-mini_cls21_s8')
    other(mx.nd.zeros((1, 3, 32, 32)))
    wrong = str(tmp_path / ('%s_ep-0001.params' % MINI))  # a VOC net under a Cityscapes name
    save_params(other, wrong)
    assert _val(root, wrong, tmp_path) == 2
    empty = tmp_path / 'empty'
    (empty / 'leftImg8bit' / 'val').mkdir(parents=True)
    (empty / 'gtFine' / 'val').mkdir(parents=True)
    assert _val(str(empty), weights, tmp_path) == 2
    captured = capsys.readouterr()
    text = captured.err  # logs and errors go to stderr
    assert wrong in text and 'missing key arg:linear19' in text
    assert wrong not in captured.out
    assert str(empty) in text


def _val_process(root, weights, out, *extra):
    """``issegm/cityscapes.py --phase val`` in a fresh process; returns its summary.json."""
    cmd = [sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py'), '--phase', 'val',
           '--data-root', root, '--weights', weights, '--output', str(out), '--gpus', 'cpu',
           '--no-progress', '--no-official-eval'] + list(extra)
    if '--test-scales' not in extra:
        cmd += ['--test-scales', '128']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = val_output_dir(str(out), weights, 'val')
    with open(os.path.join(folder, 'summary.json')) as f:
        summary = json.load(f)
    with np.load(os.path.join(folder, 'confusion.npz')) as f:
        confusion = {k: f[k] for k in f.files}
    labels = {n: open(os.path.join(folder, 'labels', n), 'rb').read()
              for n in sorted(os.listdir(os.path.join(folder, 'labels')))}
    return summary, confusion, labels, proc.stderr


@pytest.fixture(scope='module')
def earlier_eval(demo, tmp_path_factory):
    """An evaluation folder at scale 128, no flipping, T = 1, the demo weights."""
    root, weights = demo
    out = tmp_path_factory.mktemp('earlier')
    _val_process(root, weights, out)
    return str(out)


def _other_weights(weights, folder):
    """Other content under the same file name (so the same result folder)."""
    mx.random.seed(11)
    net = issegm.get_model(MINI)
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = os.path.join(str(folder), os.path.basename(weights))
    save_params(net, path)
    return path


@pytest.mark.parametrize('change', ['scales', 'flipping', 'steps', 'weights'])
def test_reevaluation_after_a_change_equals_a_fresh_one(demo, earlier_eval, tmp_path, change):
    root, weights = demo
    extra = {'scales': ['--test-scales', '96'], 'flipping': ['--test-flipping'],
             'steps': ['--test-steps', '2'], 'weights': []}[change]
    if change == 'weights':
        weights = _other_weights(weights, tmp_path / 'models')
    reused = tmp_path / 'reused'
    shutil.copytree(earlier_eval, str(reused))
    before = json.load(open(os.path.join(val_output_dir(str(reused), weights, 'val'),
                                         'summary.json')))
    summary, confusion, labels, log = _val_process(root, weights, reused, *extra)
    fresh = _val_process(root, weights, tmp_path / 'fresh', *extra)
    assert summary == fresh[0]
    assert labels == fresh[2]
    for k in confusion:
        np.testing.assert_array_equal(confusion[k], fresh[1][k])
    # the change matters (else this test could not fail) and the log says why it recomputed
    def scores(d):
        return {k: v for k, v in d.items() if k not in ('key', 'protocol')}
    assert scores(before) != scores(summary)
    lines = [l for l in log.splitlines() if 'do not match this evaluation' in l]
    assert len(lines) == 1, log[-2000:]
    assert {'scales': 'protocol.scales', 'flipping': 'protocol.flip',
            'steps': 'protocol.test_steps', 'weights': 'weights_sha256'}[change] in lines[0]
    assert '3 images computed, 0 resumed' in log
    # the earlier results are kept aside, not lost
    folder = val_output_dir(str(reused), weights, 'val')
    aside = [n for n in os.listdir(folder) if n.startswith('superseded-')]
    assert len(aside) == 1
    assert json.load(open(os.path.join(folder, aside[0], 'summary.json'))) == before


def test_unchanged_reevaluation_resumes_everything(demo, earlier_eval, tmp_path):
    root, weights = demo
    reused = tmp_path / 'reused'
    shutil.copytree(earlier_eval, str(reused))
    before = json.load(open(os.path.join(val_output_dir(str(reused), weights, 'val'),
                                         'summary.json')))
    summary, _, _, log = _val_process(root, weights, reused)
    assert '0 images computed, 3 resumed' in log and summary == before
    # a changed data file (same name, other content) is a new evaluation too
    data = tmp_path / 'data'
    shutil.copytree(root, str(data))
    image = sorted(glob.glob(str(data / 'leftImg8bit' / 'val' / '*' / '*.png')))[0]
    pixels = cv2.imread(image)
    cv2.imwrite(image, 255 - pixels)
    _, _, _, log = _val_process(str(data), weights, reused)
    assert 'files.sha256' in log and '3 images computed, 0 resumed' in log


def _write_voc(root, n, rs):
    spec = get_dataset_spec('voc')
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    ids = ['2007_%06d' % i for i in range(n)]
    for i in ids:
        label = np.zeros((60, 80), np.uint8)
        label[10:40, 20:60] = rs.randint(1, 21)
        label[40:42] = 255
        image = (spec.palette[np.where(label == 255, 0, label)] * 0.8
                 + rs.randint(0, 50, (60, 80, 3))).astype(np.uint8)
        cv2.imwrite(os.path.join(root, 'JPEGImages', i + '.jpg'), image[:, :, ::-1])
        png = Image.fromarray(label, mode='P')
        png.putpalette(spec.palette.ravel().tolist())
        png.save(os.path.join(root, 'SegmentationClass', i + '.png'))
    for split in ('train', 'val'):
        with open(os.path.join(root, 'ImageSets', 'Segmentation', split + '.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')


def _write_ade(root, n, rs):
    for split in ('training', 'validation'):
        os.makedirs(os.path.join(root, 'images', split), exist_ok=True)
        os.makedirs(os.path.join(root, 'annotations', split), exist_ok=True)
        for k in range(n):
            name = 'ADE_%s_%08d' % ('train' if split == 'training' else 'val', k + 1)
            label = np.zeros((50, 70), np.uint8)  # 0: ignored ("other")
            label[5:30, 10:50] = rs.randint(1, 151)
            label[30:, :] = 150
            image = rs.randint(0, 255, (50, 70, 3)).astype(np.uint8)
            cv2.imwrite(os.path.join(root, 'images', split, name + '.jpg'), image)
            cv2.imwrite(os.path.join(root, 'annotations', split, name + '.png'), label)


@pytest.mark.parametrize('dataset,label,writer', [
    ('voc', 'voc_rna-a1-mini_cls21_s8', _write_voc),
    ('ade20k', 'ade20k_rna-a1-mini_cls150_s8', _write_ade)])
def test_other_datasets_train_and_evaluate(dataset, label, writer, tmp_path):
    root = str(tmp_path / 'data')
    writer(root, 4, np.random.RandomState(0))
    out = tmp_path / 'out'
    assert cli.main(dataset, ['--phase', 'train', '--data-root', root, '--model', label,
                              '--output', str(out), '--batch-images', '2', '--crop-size', '48',
                              '--origin-size', '80', '--to-epoch', '1', '--gpus', 'cpu',
                              '--no-progress']) == 0
    weights = str(out / ('%s_ep-0001.params' % label))
    assert os.path.isfile(weights)
    assert cli.main(dataset, ['--phase', 'val', '--data-root', root, '--weights', weights,
                              '--test-scales', '80', '--gpus', 'cpu', '--no-progress']) == 0
    result = val_output_dir(str(out), weights, 'val')
    summary = json.load(open(os.path.join(result, 'summary.json')))
    assert summary['num_classes'] == (21 if dataset == 'voc' else 150)
    assert summary['images_with_gt'] == 4
    written = [np.array(Image.open(os.path.join(result, 'labels', n)))
               for n in sorted(os.listdir(os.path.join(result, 'labels')))]
    values = set(np.unique(np.concatenate([w.ravel() for w in written])))
    if dataset == 'ade20k':  # written back as 1..150, never the ignored 0
        assert values and min(values) >= 1 and max(values) <= 150
    else:
        assert max(values) <= 20
