"""Segmentation training end to end, as a user runs it: issegm/cityscapes.py --phase train."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from issegm import cli
from rn38.params import read_params, save_params
from conftest import REPO, make_demo_dataset

MINI = 'cityscapes_rna-a1-mini_cls19_s8'


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    make_demo_dataset(str(root), seed=1, train=8, val=2, height=64, width=128)
    return str(root)


def _argv(root, out, *extra):
    return ['--phase', 'train', '--data-root', root, '--model', MINI, '--output', str(out),
            '--batch-images', '4', '--crop-size', '48', '--origin-size', '128',
            '--base-lr', '0.02', '--to-epoch', '2', '--no-progress', '--gpus', 'cpu',
            '--prefetch-threads', '1'] + list(extra)


def _weights(path):
    return {k: v.asnumpy() for k, v in read_params(path).items()}


def test_training_writes_released_checkpoints_and_reports(demo_root, tmp_path):
    out = tmp_path / 'run'
    assert cli.main('cityscapes', _argv(demo_root, out)) == 0
    names = sorted(os.listdir(out))
    for epoch in (1, 2):
        assert '%s_ep-%04d.params' % (MINI, epoch) in names
        assert '%s_ep-%04d.states' % (MINI, epoch) in names
    assert not [n for n in names if 'tmp' in n]
    for n in ('epochs.csv', 'history.json', 'loss_curve.png', MINI + '.log',
              MINI + '_train_config.yaml'):
        assert n in names, n
    keys = set(read_params(str(out / ('%s_ep-0002.params' % MINI))))
    assert 'aux:bn7_moving_mean' in keys and 'arg:linear19_weight' in keys
    history = json.load(open(out / 'history.json'))
    assert [e['epoch'] for e in history['epochs']] == [1, 2]
    assert len(history['updates']) == 4 and all(np.isfinite(u['loss']) for u in history['updates'])
    assert all(e['data_wait_seconds'] >= 0 for e in history['epochs'])
    with open(out / 'loss_curve.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the model learns: the loss of the last updates is below the first ones'
    losses = [u['loss'] for u in history['updates']]
    assert np.mean(losses[-2:]) < losses[0]


def test_resume_continues_exactly(demo_root, tmp_path):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert cli.main('cityscapes', _argv(demo_root, straight)) == 0
    assert cli.main('cityscapes', _argv(demo_root, split, '--stop-epoch', '1')) == 0
    assert not os.path.exists(split / ('%s_ep-0002.params' % MINI))
    first = str(split / ('%s_ep-0001.params' % MINI))
    assert cli.main('cityscapes', _argv(demo_root, split, '--weights', first)) == 0
    a = _weights(str(straight / ('%s_ep-0002.params' % MINI)))
    b = _weights(str(split / ('%s_ep-0002.params' % MINI)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    h = json.load(open(split / 'history.json'))
    assert [e['epoch'] for e in h['epochs']] == [1, 2]
    lr_a = [u['lr'] for u in json.load(open(straight / 'history.json'))['updates']]
    assert [u['lr'] for u in h['updates']] == lr_a


def test_linear_schedule_over_to_epoch(demo_root, tmp_path):
    out = tmp_path / 'lin'
    assert cli.main('cityscapes', _argv(demo_root, out, '--lr-type', 'linear',
                                        '--stop-epoch', '1')) == 0
    lrs = [u['lr'] for u in json.load(open(out / 'history.json'))['updates']]
    assert lrs == pytest.approx([0.02 * (1 - n / 4.0) for n in (1, 2)])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    import issegm
    net = issegm.get_model(MINI)
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / ('%s_ep-0001.params' % MINI))
    save_params(net, path)
    before = open(path, 'rb').read()

    def broken_save(fname, data):
        with open(fname, 'wb') as f:
            f.write(b'half a file')
        raise KeyboardInterrupt('killed while writing')

    monkeypatch.setattr(mx.nd, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_params(net, path)
    assert open(path, 'rb').read() == before
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def _run_cli(argv):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py')] + argv,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_bad_inputs_give_one_line_errors(demo_root, tmp_path):
    import shutil
    root = tmp_path / 'bad'
    shutil.copytree(demo_root, root)
    labels = sorted((root / 'gtFine' / 'train').rglob('*_labelIds.png'))
    os.remove(labels[0])
    code, out = _run_cli(_argv(str(root), tmp_path / 'o1'))
    assert code == 2
    assert 'ERROR' in out and str(labels[0]) in out and 'Traceback' not in out

    root2 = tmp_path / 'bad2'
    shutil.copytree(demo_root, root2)
    lab = sorted((root2 / 'gtFine' / 'train').rglob('*_labelIds.png'))[0]
    import cv2
    arr = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    arr[0, 0] = 77  # not a Cityscapes label id
    cv2.imwrite(str(lab), arr)
    code, out = _run_cli(_argv(str(root2), tmp_path / 'o2', '--stop-epoch', '1'))
    assert code == 2 and str(lab) in out and 'unknown label id 77' in out
    assert 'Traceback' not in out

    code, out = _run_cli(_argv(demo_root, tmp_path / 'o3', '--crop-size', '400'))
    assert code == 2 and 'crop' in out and 'Traceback' not in out

    other = tmp_path / 'cityscapes_rna-a1-mini_cls19_s16_ep-0001.params'
    net = __import__('issegm').get_model('cityscapes_rna-a1-mini_cls19_s16', head='1conv')
    net(mx.nd.zeros((1, 3, 32, 32)))
    save_params(net, str(other))
    code, out = _run_cli(_argv(demo_root, tmp_path / 'o4', '--weights', str(other)))
    assert code == 2 and str(other) in out and 'missing key arg:conv6a' in out


def test_two_cpu_devices_train(demo_root, tmp_path):
    out = tmp_path / 'two'
    assert cli.main('cityscapes', _argv(demo_root, out, '--gpus', 'cpu:2', '--stop-epoch', '1',
                                        '--kvstore', 'local')) == 0
    assert os.path.isfile(out / ('%s_ep-0001.params' % MINI))


@pytest.mark.slow
def test_released_a1_s8_configuration_short_run(demo_root, tmp_path):
    """The released architecture, started from (synthetic) ImageNet A1 weights, one epoch."""
    import iclass
    from conftest import reference_arrays
    from rn38.params import load_params
    cls = iclass.get_model('ilsvrc-cls_rna-a1_cls1000')
    load_params(cls, reference_arrays('ilsvrc-cls_rna-a1_cls1000'))
    imagenet = str(tmp_path / 'ilsvrc-cls_rna-a1_cls1000_ep-0001.params')
    save_params(cls, imagenet)
    del cls
    out = tmp_path / 'released'
    argv = ['--phase', 'train', '--data-root', demo_root, '--output', str(out),
            '--weights', imagenet, '--batch-images', '2', '--crop-size', '48',
            '--origin-size', '128', '--to-epoch', '1', '--no-progress', '--gpus', 'cpu']
    cfg = cli.make_config('cityscapes', argv)
    assert cfg.model == 'cityscapes_rna-a1_cls19_s8' and cfg.base_lr == 0.0016
    assert cli.main('cityscapes', argv) == 0
    ckpt = str(out / 'cityscapes_rna-a1_cls19_s8_ep-0001.params')
    trained = _weights(ckpt)
    assert len(trained) == 195
    # the backbone moved from the ImageNet weights, BN statistics stayed frozen
    start = {k: v.asnumpy() for k, v in reference_arrays('ilsvrc-cls_rna-a1_cls1000').items()}
    assert not np.array_equal(trained['arg:res4b1_branch2b1_weight'],
                              start['arg:res4b1_branch2b1_weight'])
    np.testing.assert_array_equal(trained['aux:bn4b1_branch2b1_moving_var'],
                                  start['aux:bn4b1_branch2b1_moving_var'])


def test_step_schedule_counts_updates(demo_root, tmp_path):
    out = tmp_path / 'step'
    assert cli.main('cityscapes', _argv(demo_root, out, '--lr-type', 'step', '--lr-steps', '1',
                                        '--stop-epoch', '1')) == 0
    lrs = [u['lr'] for u in json.load(open(out / 'history.json'))['updates']]
    assert lrs == pytest.approx([0.02, 0.002])


def test_killed_run_resumes_from_its_last_checkpoint(demo_root, tmp_path):
    """SIGKILL in the middle of training, then resume with --weights <last checkpoint>."""
    import glob
    import signal
    import time
    out = tmp_path / 'killed'
    argv = _argv(demo_root, out, '--to-epoch', '40')
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py')] + argv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(glob.glob(str(out / '*_ep-*.params'))) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = sorted(glob.glob(str(out / (MINI + '_ep-*.params'))))
    assert 2 <= len(done) < 40
    from rn38.params import released_keys
    import issegm
    keys = set(released_keys(issegm.get_model(MINI)))
    for path in done:  # every checkpoint present is complete
        assert set(read_params(path)) == keys
        assert os.path.isfile(path[:-len('.params')] + '.states')
    last = done[-1]
    epoch = int(last[-len('0000.params'):-len('.params')])
    assert cli.main('cityscapes', _argv(demo_root, out, '--weights', last,
                                        '--stop-epoch', str(epoch + 1))) == 0
    history = json.load(open(out / 'history.json'))
    assert [e['epoch'] for e in history['epochs']] == list(range(1, epoch + 2))


def test_options_are_checked_before_any_work(tmp_path, capsys):
    assert cli.main('cityscapes', ['--phase', 'train', '--model', 'cityscapes_rna-b_cls19']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'unknown network rna-b' in err
    assert 'cityscapes_rna-a1_cls19_s8' in err
    missing = str(tmp_path / 'ilsvrc-cls_rna-a1_cls1000_ep-0001.params')
    assert cli.main('cityscapes', ['--phase', 'train', '--weights', missing]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and missing in err and 'models/README.md' in err
