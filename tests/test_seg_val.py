"""--phase val as a user runs it, and VOC / ADE20K through the same entries."""
import json
import os

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
from conftest import make_demo_dataset

MINI = 'cityscapes_rna-a1-mini_cls19_s8'


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
    text = capsys.readouterr().out
    assert wrong in text and 'missing key arg:linear19' in text
    assert str(empty) in text


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
