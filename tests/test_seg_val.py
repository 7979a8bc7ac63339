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
from issegm.evaluate import val_output_dir
from issegm.predictor import SegPredictor
from rn38.params import save_params
from conftest import load_script, make_demo_dataset

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
    assert summary['protocol']['pad_mode'] == 'stride'  # the authors' Cityscapes padding
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
    pred = SegPredictor(net, scales=[128], flip=True).predict(image)  # flipping: the default
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
    if '--test-flipping' not in extra:
        cmd += ['--no-test-flipping']   # the entry's default is the published protocol (flip)
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
    assert summary['protocol']['pad_mode'] == 'scale'  # the authors' VOC/ADE20K padding
    assert 'official' not in summary
    written = [np.array(Image.open(os.path.join(result, 'labels', n)))
               for n in sorted(os.listdir(os.path.join(result, 'labels')))]
    values = set(np.unique(np.concatenate([w.ravel() for w in written])))
    if dataset == 'ade20k':  # written back as 1..150, never the ignored 0
        assert values and min(values) >= 1 and max(values) <= 150
    else:
        assert max(values) <= 20



# ----------------------------------------------------------------------------- published protocol

# The evaluation commands of the released models, as the authors' README gives them.
AUTHORS_EVAL_COMMANDS = {
    'cityscapes': 'python issegm/voc.py --data-root data/cityscapes --output output --phase val '
                  '--weights models/cityscapes_rna-a1_cls19_s8_ep-0001.params --split val '
                  '--test-scales 2048 --test-flipping --gpus 0',
    'voc': 'python issegm/voc.py --data-root data/VOCdevkit --output output --phase val '
           '--weights models/voc_rna-a1_cls21_s8_ep-0001.params --split val --test-scales 500 '
           '--test-flipping --gpus 0',
    'ade20k': 'python issegm/voc.py --data-root data/ade20k --output output --phase val '
              '--weights models/ade20k_rna-a1_cls150_s8_ep-0001.params --split val '
              '--test-scales 500 --test-flipping --test-steps 2 --gpus 0',
}


def _authors_test_options(command):
    """The authors' parser (issegm/voc.py) for the test options of one command."""
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--test-scales', default=None, type=str)
    p.add_argument('--test-flipping', default=False, action='store_true')
    p.add_argument('--test-steps', default=1, type=int)
    args, _ = p.parse_known_args(command.split()[2:])
    return [int(x) for x in args.test_scales.split(',')], args.test_flipping, args.test_steps


@pytest.mark.parametrize('dataset', sorted(AUTHORS_EVAL_COMMANDS))
def test_entry_defaults_are_the_published_protocol(dataset, tmp_path):
    command = AUTHORS_EVAL_COMMANDS[dataset]
    released = os.path.basename(command.split('--weights ')[1].split()[0])
    weights = tmp_path / released
    weights.write_bytes(b'')
    base = ['--phase', 'val', '--weights', str(weights), '--gpus', 'cpu']
    cfg = cli.make_config(dataset, base)
    expected = _authors_test_options(command)
    assert (cfg.test_scales, cfg.test_flipping, cfg.test_steps) == expected
    # the authors' own flags still parse to the same settings
    own = cli.make_config(dataset, base + command.split('--split val ')[1].split()[:-2])
    assert (own.test_scales, own.test_flipping, own.test_steps) == expected
    for off in (['--no-test-flipping'], ['--test-flipping', '0']):
        assert cli.make_config(dataset, base + off).test_flipping is False
    assert cli.make_config(dataset, base + ['--test-flipping', '1']).test_flipping is True
    assert cli.make_config(dataset, base + ['--test-flipping', '--no-progress']).test_flipping


def test_test_flipping_takes_only_0_or_1(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser('voc').parse_args(['--test-flipping', 'yes'])
    assert exc.value.code == 2
    assert '--test-flipping' in capsys.readouterr().err


def test_ilsvrc_defaults_are_the_published_protocol(tmp_path):
    # ademxapp README: both released classifiers are evaluated with --test-scales 320,
    # --no-choose-interp-method and no flipping; their training keeps the filter choice.
    from iclass.ilsvrc import build_parser, config_from_args
    weights = str(tmp_path / 'ilsvrc-cls_rna-a1_cls1000_ep-0001.params')
    val = config_from_args(build_parser().parse_args(
        ['--data-root', str(tmp_path), '--phase', 'val', '--weights', weights]))
    assert (val.test_scales, val.test_flipping, val.choose_interp_method) == ((320,), False, False)
    train = config_from_args(build_parser().parse_args(['--data-root', str(tmp_path)]))
    assert train.choose_interp_method is True
    for argv, want in ((['--no-choose-interp-method'], False), (['--choose-interp-method'], True),
                       (['--choose-interp-method', '0'], False)):
        cfg = config_from_args(build_parser().parse_args(
            ['--data-root', str(tmp_path), '--phase', 'val'] + argv))
        assert cfg.choose_interp_method is want


# ----------------------------------------------------------------------------- coco, context, --dataset

# COCO category ids of VOC's 20 object classes, from COCO's instances annotation files,
# in VOC's class order.
COCO_IDS_OF_VOC = {'aeroplane': 5, 'bicycle': 2, 'bird': 16, 'boat': 9, 'bottle': 44, 'bus': 6,
                   'car': 3, 'cat': 17, 'chair': 62, 'cow': 21, 'diningtable': 67, 'dog': 18,
                   'horse': 19, 'motorbike': 4, 'person': 1, 'pottedplant': 64, 'sheep': 20,
                   'sofa': 63, 'train': 7, 'tvmonitor': 72}
VOC_ORDER = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
             'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
             'sheep', 'sofa', 'train', 'tvmonitor']


def test_coco_spec_maps_category_ids_to_voc_classes(tmp_path):
    from issegm.datasets import DataError, read_label
    spec = get_dataset_spec('coco')
    assert spec.classes == 21
    # the authors' list of valid COCO values: 0 and the 80 category ids (max 90)
    assert len(spec.valid_raw_values) == 81 and 0 in spec.valid_raw_values
    assert max(spec.valid_raw_values) == 90 and 12 not in spec.valid_raw_values
    raw = np.zeros((4, 25), np.uint8)
    for k, name in enumerate(VOC_ORDER[1:]):
        raw[0, k] = COCO_IDS_OF_VOC[name]
    raw[1, :3] = (88, 90, 8)  # teddy bear, toothbrush, truck: not VOC classes
    path = str(tmp_path / 'coco.png')
    Image.fromarray(raw).save(path)
    got = read_label(spec, path)
    assert got[0, :20].tolist() == list(range(1, 21))
    assert (got[1:] == 0).all() and got[0, 20:].tolist() == [0] * 5
    # results are written back as COCO category ids
    assert spec.train_to_label[got[0, :20]].tolist() == raw[0, :20].tolist()
    Image.fromarray(np.full((2, 2), 12, np.uint8)).save(path)
    with pytest.raises(DataError, match='unknown label id 12'):
        read_label(spec, path)


def test_pascal_context_spec_is_background_plus_59(tmp_path):
    from issegm.datasets import read_label
    spec = get_dataset_spec('pascal-context')
    # the authors: 60 classes, labels 0..59 used as they are; 0 is the background class
    assert spec.classes == 60 and spec.class_names[0] == 'background'
    assert len(set(spec.class_names)) == 60
    raw = np.arange(60, dtype=np.uint8).reshape(6, 10)
    path = str(tmp_path / 'ctx.png')
    Image.fromarray(raw).save(path)
    np.testing.assert_array_equal(read_label(spec, path), raw)


def _write_coco(root, n, rs):
    """COCO-style data as the authors list it: <split>.lst, PNGs of category ids."""
    os.makedirs(os.path.join(root, 'images'))
    os.makedirs(os.path.join(root, 'labels'))
    lines = []
    for k in range(n):
        label = np.zeros((64, 72), np.uint8)
        label[8:40, 10:50] = rs.choice([1, 18, 62, 88])  # person, dog, chair, teddy bear
        image = rs.randint(0, 255, (64, 72, 3)).astype(np.uint8)
        cv2.imwrite(os.path.join(root, 'images', '%d.jpg' % k), image)
        cv2.imwrite(os.path.join(root, 'labels', '%d.png' % k), label)
        lines.append('images/%d.jpg\tlabels/%d.png' % (k, k))
    for split in ('train', 'val'):
        with open(os.path.join(root, split + '.lst'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def test_dataset_override_pretrains_on_coco_and_evaluates_on_voc(tmp_path):
    coco, voc = str(tmp_path / 'coco'), str(tmp_path / 'voc')
    _write_coco(coco, 2, np.random.RandomState(1))
    _write_voc(voc, 2, np.random.RandomState(2))
    out = tmp_path / 'out'
    label = 'voc_rna-a1-mini_cls21_s8_coco'
    cfg = cli.make_config('voc', ['--phase', 'train', '--dataset', 'coco', '--model', label])
    assert cfg.dataset == 'coco' and cfg.data_root == os.path.join('data', 'coco')
    assert cli.main('voc', ['--phase', 'train', '--dataset', 'coco', '--data-root', coco,
                            '--model', label, '--output', str(out), '--batch-images', '2',
                            '--crop-size', '48', '--origin-size', '72', '--to-epoch', '1',
                            '--gpus', 'cpu', '--no-progress']) == 0
    weights = str(out / ('%s_ep-0001.params' % label))
    assert cli.main('voc', ['--phase', 'val', '--dataset', 'ade20k', '--weights', weights]) == 2
    assert cli.main('ade20k', ['--phase', 'val', '--weights', weights]) == 2
    # the same weights evaluated on VOC data, and on COCO data (results in COCO ids)
    for dataset, root, written in (('voc', voc, set(range(21)) | {255}),
                                   ('coco', coco, {0} | set(COCO_IDS_OF_VOC.values()))):
        res = tmp_path / dataset
        assert cli.main('voc', ['--phase', 'val', '--dataset', dataset, '--data-root', root,
                                '--weights', weights, '--output', str(res), '--test-scales',
                                '72', '--gpus', 'cpu', '--no-progress']) == 0
        result = val_output_dir(str(res), weights, 'val')
        summary = json.load(open(os.path.join(result, 'summary.json')))
        assert summary['dataset'] == dataset and summary['images_with_gt'] == 2
        labels = os.path.join(result, 'labels')
        values = set(np.unique(np.concatenate(
            [np.array(Image.open(os.path.join(labels, n))).ravel()
             for n in os.listdir(labels)])).tolist())
        assert values <= written


# ----------------------------------------------------------------------------- SBD lists

# The first lines of the authors' issegm/data/voc/train+.lst (paths relative to VOCdevkit)
# and two of its SBD lines; 2007_000033 and 2007_000042 are VOC val images, never listed.
AUTHORS_TRAIN_PLUS = [
    'VOC2012/JPEGImages/2007_000032.jpg\tVOC2012/SegmentationClass/2007_000032.png',
    'VOC2012/JPEGImages/2007_000039.jpg\tVOC2012/SegmentationClass/2007_000039.png',
    'VOC2012/JPEGImages/2007_000063.jpg\tVOC2012/SegmentationClass/2007_000063.png',
    'VOC2012/JPEGImages/2008_000002.jpg\t../sbd/dataset/clsImg/2008_000002.png',
    'VOC2012/JPEGImages/2008_000008.jpg\t../sbd/dataset/clsImg/2008_000008.png',
]


def _write_sbd_world(base, rs):
    import scipy.io
    voc = os.path.join(base, 'VOCdevkit', 'VOC2012')
    sbd = os.path.join(base, 'sbd', 'dataset')
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(voc, d))
    os.makedirs(os.path.join(sbd, 'cls'))
    splits = {os.path.join(voc, 'ImageSets', 'Segmentation', 'train.txt'):
              ['2007_000032', '2007_000039', '2007_000063'],
              os.path.join(voc, 'ImageSets', 'Segmentation', 'val.txt'):
              ['2007_000033', '2007_000042'],
              os.path.join(sbd, 'train.txt'): ['2008_000008', '2007_000032', '2007_000033'],
              os.path.join(sbd, 'val.txt'): ['2007_000042', '2008_000002', '2007_000039']}
    for path, ids in splits.items():
        with open(path, 'w') as f:
            f.write('\n'.join(ids) + '\n')
    segs = {}
    for k, i in enumerate(sorted({i for ids in splits.values() for i in ids})):
        h, w = 30 + k, 40 + 2 * k
        cv2.imwrite(os.path.join(voc, 'JPEGImages', i + '.jpg'),
                    rs.randint(0, 255, (h, w, 3)).astype(np.uint8))
        label = rs.randint(0, 21, (h, w)).astype(np.uint8)
        Image.fromarray(label).save(os.path.join(voc, 'SegmentationClass', i + '.png'))
        segs[i] = rs.randint(0, 21, (h, w)).astype(np.uint8)
        scipy.io.savemat(os.path.join(sbd, 'cls', i + '.mat'), {'GTcls': {
            'Segmentation': segs[i], 'Boundaries': np.zeros((21, 1), object),
            'CategoriesPresent': np.unique(segs[i])}})
    return voc, os.path.dirname(sbd), segs


def test_make_sbd_lists_writes_the_authors_train_plus(tmp_path, capsys):
    tool = load_script('make_sbd_lists')
    voc, sbd, segs = _write_sbd_world(str(tmp_path), np.random.RandomState(0))
    # listed relative to VOCdevkit, the lines are the authors' own
    out = os.path.join(os.path.dirname(voc), 'train+.lst')
    assert tool.main(['--voc-root', voc, '--sbd-root', sbd, '--out', out,
                      '--no-progress']) == 0
    assert open(out).read().splitlines() == AUTHORS_TRAIN_PLUS
    # the default list sits in the VOC root, which the voc entry reads as --split train+
    assert tool.main(['--voc-root', voc, '--sbd-root', sbd, '--no-progress']) == 0
    spec = get_dataset_spec('voc')
    from issegm.datasets import list_samples, read_label
    samples = list_samples(spec, voc, 'train+')
    assert [os.path.basename(i) for i, _ in samples] == \
        [line.split('\t')[0].split('/')[-1] for line in AUTHORS_TRAIN_PLUS]
    for image, label in samples[3:]:
        i = os.path.basename(image)[:-4]
        assert os.path.normpath(label) == os.path.join(sbd, 'dataset', 'clsImg', i + '.png')
        np.testing.assert_array_equal(read_label(spec, label), segs[i])  # the .mat's map
    # a changed .mat is converted again; a damaged one is a one-line error naming it
    import scipy.io
    mat = os.path.join(sbd, 'dataset', 'cls', '2008_000002.mat')
    new = (segs['2008_000002'] + 1) % 21
    scipy.io.savemat(mat, {'GTcls': {'Segmentation': new}})
    assert tool.main(['--voc-root', voc, '--sbd-root', sbd, '--no-progress']) == 0
    np.testing.assert_array_equal(read_label(spec, samples[3][1]), new)
    capsys.readouterr()
    with open(mat, 'wb') as f:
        f.write(b'not a mat file')
    assert tool.main(['--voc-root', voc, '--sbd-root', sbd, '--no-progress']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: %s: ' % mat)
    os.remove(mat)
    assert tool.main(['--voc-root', voc, '--sbd-root', sbd, '--no-progress']) == 2
    assert 'SBD class file not found' in capsys.readouterr().err
