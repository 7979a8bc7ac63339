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
    # the optimizer state (no pickle) only beside the latest checkpoint
    assert [n for n in names if '.states' in n] == ['%s_ep-0002.states.json' % MINI,
                                                    '%s_ep-0002.states.nd' % MINI]
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
    last = out.strip().splitlines()[-1]
    assert last.startswith('error: ') and str(labels[0]) in last and 'Traceback' not in out
    # the run's log file keeps the reason too
    log = open(tmp_path / 'o1' / (MINI + '.log')).read()
    assert ' ERROR ' in log and str(labels[0]) in log

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
    # the last two are kept (three if killed between a write and the clean-up)
    assert 2 <= len(done) <= 3 and not done[-1].endswith('_ep-0040.params')
    from rn38.params import released_keys
    import issegm
    keys = set(released_keys(issegm.get_model(MINI)))
    for path in done:  # every checkpoint present is complete
        assert set(read_params(path)) == keys
    last = done[-1]
    assert os.path.isfile(last[:-len('.params')] + '.states.nd')
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


def test_second_stage_gets_its_own_label(demo_root, tmp_path):
    """The authors' two Cityscapes stages: stage 2 is ``--model <stage-1 label>_x1-140``
    started from stage 1's last checkpoint (the README's commands, mini-sized here): the
    weights load strictly into the tagged label (same network), epochs count from 0, and
    stage 1's files are left alone."""
    out = tmp_path / 'out'
    assert cli.main('cityscapes', _argv(demo_root, out, '--to-epoch', '1')) == 0
    stage1 = out / ('%s_ep-0001.params' % MINI)
    before = stage1.read_bytes()
    stage2 = MINI + '_x1-1'
    argv = _argv(demo_root, out, '--to-epoch', '1', '--weights', str(stage1),
                 '--from-epoch', '0', '--lr-type', 'linear', '--base-lr', '0')
    argv[argv.index('--model') + 1] = stage2
    assert cli.main('cityscapes', argv) == 0
    assert stage1.read_bytes() == before
    tuned = _weights(str(out / ('%s_ep-0001.params' % stage2)))
    start = _weights(str(stage1))
    assert tuned.keys() == start.keys()
    for k in start:          # lr 0, frozen BatchNorm: every array is stage 1's, none re-drawn
        np.testing.assert_array_equal(tuned[k], start[k], err_msg=k)
    h = json.load(open(out / 'history.json'))
    assert h['epochs'][-1]['epoch'] == 1


# ------------------------------------------------ safe to leave running (issue 11)

def _entry(argv, **kwargs):
    """The user's command in a fresh process: ``python issegm/cityscapes.py ...``."""
    return subprocess.run([sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py')] +
                          [str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          **kwargs)


def _error_lines(stderr):
    return [l for l in stderr.splitlines() if ' ERROR ' in l or l.startswith('error')]


def _one_epoch_run(demo_root, out, *extra):
    """One epoch of a 2-epoch schedule with one update per epoch (batches of 8)."""
    argv = _argv(demo_root, out, '--batch-images', '8', '--stop-epoch', '1', *extra)
    assert cli.main('cityscapes', argv) == 0
    return str(out / ('%s_ep-0001.params' % MINI))


def test_crafted_and_foreign_optimizer_states_are_refused(demo_root, tmp_path, capsys):
    import pickle
    import shutil
    first = _one_epoch_run(demo_root, tmp_path / 'run')
    nd, js = first[:-len('.params')] + '.states.nd', first[:-len('.params')] + '.states.json'
    meta = json.load(open(js))
    assert meta['optimizer'] == 'sgd' and meta['settings']['momentum'] == 0.9
    assert set(mx.nd.load(nd)) == set(meta['with_state'])
    good = open(nd, 'rb').read()

    # a pickled .states of an earlier version whose unpickling would create a file
    marker = tmp_path / 'code_ran'

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), 'w'))
    os.remove(nd)
    os.remove(js)
    old = first[:-len('.params')] + '.states'
    with open(old, 'wb') as f:
        f.write(pickle.dumps(Payload()))
    proc = _entry(_argv(demo_root, tmp_path / 'run', '--batch-images', '8', '--weights', first))
    assert proc.returncode == 2, proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and old in errors[0] and 'pickle' in errors[0], proc.stderr
    assert 'Traceback' not in proc.stderr + proc.stdout
    assert not marker.exists()
    os.remove(old)

    def refused(nd_bytes, meta_obj, *expected):
        with open(nd, 'wb') as f:
            f.write(nd_bytes)
        with open(js, 'w') as f:
            json.dump(meta_obj, f)
        capsys.readouterr()
        code = cli.main('cityscapes', _argv(demo_root, tmp_path / 'run', '--batch-images', '8',
                                            '--weights', first))
        errors = _error_lines(capsys.readouterr().err)
        assert code == 2 and len(errors) == 1, errors
        for text in expected:
            assert text in errors[0], errors[0]

    refused(good[:len(good) // 2], meta, nd, 'unreadable')              # truncated
    refused(good, dict(meta, optimizer='torchnesterov'), js, 'torchnesterov', 'sgd')
    other = dict(meta, parameters=meta['parameters'] + ['conv9_weight'],
                 shapes=dict(meta['shapes'], conv9_weight=[3, 3]))
    refused(good, other, nd, 'another model', 'conv9_weight')
    name = meta['with_state'][0]
    wrong = dict(meta, shapes=dict(meta['shapes'], **{name: [1]}))
    refused(good, wrong, nd, 'another model', name)
    refused(b'', meta, nd)
    shutil.rmtree(tmp_path / 'run')


def test_options_of_a_resumed_command_take_effect(demo_root, tmp_path):
    """--weight-decay on a resume is the one used: after one update from the same weights,
    momentum and gradient, two resumes differ exactly by SGD's decay term."""
    import shutil
    import yaml
    first = _one_epoch_run(demo_root, tmp_path / 'a')
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    w0 = _weights(first)
    runs = {}
    for name, wd in (('a', 0.5), ('b', 0.0005)):
        weights = str(tmp_path / name / os.path.basename(first))
        assert cli.main('cityscapes', _argv(demo_root, tmp_path / name, '--batch-images', '8',
                                            '--weights', weights, '--weight-decay', str(wd))) == 0
        runs[name] = _weights(str(tmp_path / name / ('%s_ep-0002.params' % MINI)))
        recorded = yaml.safe_load(open(tmp_path / name / ('%s_train_config.yaml' % MINI)))
        assert recorded['weight_decay'] == wd
        meta = json.load(open(tmp_path / name / ('%s_ep-0002.states.json' % MINI)))
        assert meta['settings']['wd'] == wd
    lr, checked = 0.02, 0
    for key, value in w0.items():
        if not key.startswith('arg:'):
            continue
        # biases and BN betas have no weight decay (the authors' recipe)
        wd_mult = 0.0 if key.endswith(('_bias', '_beta')) else 1.0
        expected = -lr * wd_mult * (0.5 - 0.0005) * value.astype(np.float64)
        np.testing.assert_allclose(runs['a'][key] - runs['b'][key], expected, rtol=2e-3,
                                   atol=2e-7, err_msg=key)
        checked += wd_mult > 0 and np.abs(expected).max() > 1e-4
    assert checked > 10


def test_two_runs_into_one_folder_and_ctrl_c(demo_root, tmp_path):
    """A second run into a busy folder fails at once; Ctrl-C ends the first with one line
    naming its last complete checkpoint, exit status 130."""
    import glob
    import signal
    import time
    out = tmp_path / 'busy'
    log = open(tmp_path / 'first.err', 'w')
    # a suite started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python then leaves it ignored: give the child the default disposition
    first = subprocess.Popen([sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py')] +
                             _argv(demo_root, out, '--to-epoch', '200'),
                             stdout=subprocess.DEVNULL, stderr=log,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(str(out / '*_ep-*.params')):
            time.sleep(0.05)
        second = _entry(_argv(demo_root, out, '--to-epoch', '3'))
        assert second.returncode == 2
        errors = _error_lines(second.stderr)
        assert len(errors) == 1 and str(out) in errors[0] and \
            'pid %d' % first.pid in errors[0], second.stderr
        assert 'Traceback' not in second.stderr
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    err = open(tmp_path / 'first.err').read()
    assert 'Traceback' not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith('interrupted; last complete checkpoint: '), err[-2000:]
    path = last_line.split(': ', 1)[1].split(' ')[0]
    assert os.path.isfile(path) and path == sorted(glob.glob(str(out / '*_ep-*.params')))[-1]
    read_params(path)
    # the folder is free again: the first run resumes from the named checkpoint
    epoch = int(path[-len('0000.params'):-len('.params')])
    assert cli.main('cityscapes', _argv(demo_root, out, '--to-epoch', '200', '--weights', path,
                                        '--stop-epoch', str(epoch + 1))) == 0


def test_stale_lock_and_temporaries_are_taken_over(demo_root, tmp_path, capsys):
    out = tmp_path / 'stale'
    out.mkdir()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (out / 'train.lock').write_text(json.dumps({'pid': dead.pid, 'host': 'gone',
                                                'started': 'yesterday'}))
    leftover = out / ('.%s_ep-0001.tmp-%d.params' % (MINI, dead.pid))
    leftover.write_bytes(b'half a checkpoint')
    assert cli.main('cityscapes', _argv(demo_root, out, '--stop-epoch', '1')) == 0
    err = capsys.readouterr().err
    assert 'taking over the lock of pid %d on gone' % dead.pid in err
    assert not leftover.exists() and leftover.name in err
    assert (out / 'train.lock').read_text() == ''          # released at the end


def test_checkpoints_of_another_run_are_not_overwritten(demo_root, tmp_path, capsys):
    out = tmp_path / 'stage1'
    first = _one_epoch_run(demo_root, out)
    before = open(first, 'rb').read()
    # a new run (e.g. a second stage under the same label) into the same folder
    code = cli.main('cityscapes', _argv(demo_root, out, '--weights', first, '--from-epoch', '0',
                                        '--base-lr', '0.001'))
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1
    assert str(out) in errors[0] and '--output' in errors[0] and '--model' in errors[0]
    assert open(first, 'rb').read() == before
    # --from-epoch without the checkpoint to continue from
    code = cli.main('cityscapes', _argv(demo_root, tmp_path / 'other', '--from-epoch', '5'))
    errors = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1 and '--from-epoch 5 needs --weights' in errors[0]


def test_checkpoint_retention(demo_root, tmp_path):
    out = tmp_path / 'keep'
    assert cli.main('cityscapes', _argv(demo_root, out, '--batch-images', '8', '--to-epoch', '5',
                                        '--keep-checkpoints', '2', '--keep-epochs', '1,2')) == 0
    names = sorted(n for n in os.listdir(out) if n.startswith(MINI + '_ep-'))
    assert names == ['%s_ep-%04d.params' % (MINI, e) for e in (1, 2, 4)] + \
        ['%s_ep-0005.%s' % (MINI, ext) for ext in ('params', 'states.json', 'states.nd')]
    out = tmp_path / 'all'
    assert cli.main('cityscapes', _argv(demo_root, out, '--batch-images', '8', '--to-epoch', '3',
                                        '--keep-checkpoints', '0')) == 0
    assert len([n for n in os.listdir(out) if n.endswith('.params')]) == 3


def test_validation_during_training(demo_root, tmp_path):
    """--val-every: the recorded mean IoU is the one --phase val gives for that
    checkpoint; the best checkpoint is kept as <model>_best.params."""
    import csv
    out = tmp_path / 'val'
    scales = ['--test-scales', '96,128', '--test-flipping']
    assert cli.main('cityscapes', _argv(demo_root, out, '--to-epoch', '3', '--val-every', '2',
                                        '--keep-checkpoints', '0', *scales)) == 0
    epochs = json.load(open(out / 'history.json'))['epochs']
    assert [('val_miou' in e) for e in epochs] == [False, True, True]  # every 2nd and the last
    rows = list(csv.DictReader(open(out / 'epochs.csv')))
    assert [r['val_miou'] != '' for r in rows] == [False, True, True]
    scores = {}
    for e in epochs[1:]:
        ckpt = str(out / ('%s_ep-%04d.params' % (MINI, e['epoch'])))
        assert cli.main('cityscapes', ['--phase', 'val', '--data-root', demo_root, '--weights',
                                       ckpt, '--output', str(tmp_path / ('check%d' % e['epoch'])),
                                       '--gpus', 'cpu', '--no-progress', '--no-official-eval',
                                       '--no-save-results'] + scales) == 0
        summary = json.load(open(tmp_path / ('check%d' % e['epoch']) /
                                 ('%s_ep-%04d' % (MINI, e['epoch'])) / 'summary.json'))
        assert e['val_miou'] == pytest.approx(summary['mean_iou'], abs=1e-12)
        scores[e['epoch']] = e['val_miou']
    best_epoch = max(sorted(scores), key=lambda k: scores[k])     # ties: the earlier
    best = _weights(str(out / ('%s_best.params' % MINI)))
    ref = _weights(str(out / ('%s_ep-%04d.params' % (MINI, best_epoch))))
    assert best.keys() == ref.keys() and all(np.array_equal(best[k], ref[k]) for k in ref)


_ORPHAN_SCRIPT = r'''
import sys, threading, time
import numpy as np
from rn38.loader import BatchLoader

class Dataset:
    def __len__(self):
        return 64
    def __getitem__(self, index, rng):
        return np.full((4,), index, np.float32), np.int64(index)

loader = BatchLoader(Dataset(), 4, workers=2, mode='process')
def first_batch():
    next(iter(loader))
if sys.argv[1] == 'thread':  # started from a thread: only the pid watchdog applies
    t = threading.Thread(target=first_batch)
    t.start()
    t.join()
else:
    first_batch()
print(' '.join(str(p.pid) for p in loader._pool['workers']), flush=True)
time.sleep(600)
'''


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


@pytest.mark.parametrize('started_from', ['main', 'thread'])
def test_loader_processes_die_with_a_killed_trainer(started_from):
    import signal
    import time
    proc = subprocess.Popen([sys.executable, '-c', _ORPHAN_SCRIPT, started_from],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    orphans = [p for p in workers if _alive(p)]
    for pid in orphans:  # leave nothing behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans


def test_second_stage_under_its_own_label_keeps_both_records(demo_root, tmp_path):
    """Stage 2 (its own --model label) into stage 1's folder: stage 1's checkpoints and
    its history stay; a resumed stage 1 continues its own history."""
    out = tmp_path / 'stages'
    first = _one_epoch_run(demo_root, out)
    stage1 = json.load(open(out / 'history.json'))
    second = MINI + '_x1-140'
    assert cli.main('cityscapes', _argv(demo_root, out, '--weights', first, '--from-epoch', '0',
                                        '--model', second, '--to-epoch', '1')) == 0
    assert json.load(open(out / 'history.json'))['label'] == second
    assert json.load(open(out / (MINI + '_history.json'))) == stage1
    assert os.path.isfile(out / (MINI + '_loss_curve.png'))
    assert os.path.isfile(first) and os.path.isfile(out / (second + '_ep-0001.params'))
    assert cli.main('cityscapes', _argv(demo_root, out, '--batch-images', '8',
                                        '--weights', first)) == 0
    resumed = json.load(open(out / 'history.json'))
    assert resumed['label'] == MINI and [e['epoch'] for e in resumed['epochs']] == [1, 2]
    assert resumed['epochs'][0] == stage1['epochs'][0]
    assert json.load(open(out / (second + '_history.json')))['label'] == second


def test_momentum_and_lr_factor_flags_reach_the_optimizer(demo_root, tmp_path):
    """--momentum and --lr-factor (the names iclass/ilsvrc.py uses) drive segmentation's SGD:
    the step schedule multiplies the rate by the factor after the step, the momentum is
    the optimizer's and both are saved with the run."""
    import yaml
    out = tmp_path / 'run'
    assert cli.main('cityscapes', _argv(demo_root, out, '--stop-epoch', '1', '--lr-type', 'step',
                                        '--lr-steps', '1', '--lr-factor', '0.25',
                                        '--momentum', '0.5')) == 0
    history = json.load(open(out / 'history.json'))
    assert [u['lr'] for u in history['updates']] == pytest.approx([0.02, 0.005])
    meta = json.load(open(out / ('%s_ep-0001.states.json' % MINI)))
    assert meta['settings']['momentum'] == 0.5
    recorded = yaml.safe_load(open(out / ('%s_train_config.yaml' % MINI)))
    assert (recorded['momentum'], recorded['lr_factor']) == (0.5, 0.25)
