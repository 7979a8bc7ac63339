"""Common mistakes end in one error line on stderr naming the option, file or device,
with exit status 2 and no traceback; logs go to stderr too, so stdout holds only results.

Every case runs the entry command in a fresh process, as a user does. Most fail before a
network is built (a second or two each).
"""
from concurrent.futures import ThreadPoolExecutor
import os
import subprocess
import sys

import mxnet as mx
import pytest

import iclass
import issegm
from rn38 import zoo
from rn38.cli import bad_input_logged, run_command
from rn38.image import DataError
from rn38.train import TrainingInterrupted
from rn38.params import save_params
from conftest import make_demo_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_imagenet import make_imagenet  # noqa: E402

SEG_MINI = 'cityscapes_rna-a1-mini_cls19_s8'
CLS_MINI = 'demo-cls_rna-a1-mini_cls5'
SEG = os.path.join(REPO, 'issegm', 'cityscapes.py')
PREDICT = os.path.join(REPO, 'issegm', 'predict.py')
ILSVRC = os.path.join(REPO, 'iclass', 'ilsvrc.py')
VERIFY = os.path.join(REPO, 'scripts', 'verify_models.py')


def run(*argv):
    return subprocess.run([sys.executable] + [str(a) for a in argv], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def read_only_folder(path):
    """A folder this process cannot write into (immutable for root, mode 555 otherwise)."""
    os.makedirs(path)
    if os.geteuid() == 0:
        if subprocess.run(['chattr', '+i', path], capture_output=True).returncode != 0:
            pytest.skip('cannot make a read-only folder as root here (chattr +i failed)')
    else:
        os.chmod(path, 0o555)
    return path


def writable_again(path):
    if os.geteuid() == 0:
        subprocess.run(['chattr', '-i', path], capture_output=True)
    else:
        os.chmod(path, 0o755)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Demo Cityscapes data (4 train, 2 val images), ImageNet-layout data (10 train
    images), mini weights of both tasks, a read-only folder holding a copy of the
    segmentation weights, a file where a folder is expected, a bad checksum file."""
    base = tmp_path_factory.mktemp('world')
    w = {'base': base, 'seg_data': str(base / 'demo'), 'cls_data': str(base / 'imagenet')}
    make_demo_dataset(w['seg_data'], seed=1, train=4, val=2, height=48, width=96)
    make_imagenet(w['cls_data'], classes=5, per_class=2, val_per_class=1)
    net = issegm.get_model(SEG_MINI)
    net(mx.nd.zeros((1, 3, 32, 32)))
    w['seg_weights'] = str(base / (SEG_MINI + '_ep-0003.params'))
    save_params(net, w['seg_weights'])
    w['cls_weights'] = str(base / (CLS_MINI + '_ep-0001.params'))
    save_params(iclass.get_model(CLS_MINI), w['cls_weights'])
    w['a_file'] = str(base / 'a_file.txt')
    with open(w['a_file'], 'w') as f:
        f.write('not a folder\n')
    w['bad_sums'] = str(base / 'bad.md5')
    with open(w['bad_sums'], 'w') as f:
        f.write('d41d8cd98f00b204e9800998ecf8427e  ok.params\nthis is not a checksum line\n')
    ro_models = str(base / 'ro_models')
    os.makedirs(ro_models)
    for key in ('seg_weights', 'cls_weights'):
        copy = os.path.join(ro_models, os.path.basename(w[key]))
        with open(w[key], 'rb') as src, open(copy, 'wb') as dst:
            dst.write(src.read())
        w['ro_' + key] = copy
    if os.geteuid() == 0:
        if subprocess.run(['chattr', '+i', ro_models], capture_output=True).returncode:
            pytest.skip('cannot make a read-only folder as root here (chattr +i failed)')
    else:
        os.chmod(ro_models, 0o555)
    w['ro'] = read_only_folder(str(base / 'ro'))
    w['ro_models'] = ro_models
    yield w
    writable_again(w['ro'])
    writable_again(ro_models)


def seg_train(w, *extra):
    return [SEG, '--phase', 'train', '--data-root', w['seg_data'], '--model', SEG_MINI,
            '--output', str(w['base'] / 'seg_out'), '--crop-size', '32', '--origin-size', '96',
            '--batch-images', '2', '--to-epoch', '1', '--gpus', 'cpu', '--no-progress'] + \
        list(extra)


def seg_val(w, *extra, weights=None):
    return [SEG, '--phase', 'val', '--data-root', w['seg_data'], '--test-scales', '96',
            '--weights', weights or w['seg_weights'], '--no-progress'] + list(extra)


def cls_args(w, phase, *extra):
    argv = [ILSVRC, '--phase', phase, '--data-root', w['cls_data'], '--no-progress']
    if phase == 'val':
        argv += ['--weights', w['cls_weights'], '--test-scales', '40']
    else:
        argv += ['--model', CLS_MINI, '--to-epoch', '1', '--crop-size', '32',
                 '--output', str(w['base'] / 'cls_out')]
    return argv + list(extra)


def predict_args(w, *extra):
    return [PREDICT, '--weights', w['seg_weights'], '--input', w['seg_data'],
            '--no-progress'] + list(extra)


def w_path(key):
    """A placeholder for a path of the world, resolved in the test."""
    return ('<world>', key)


# (case id, argv from the world, substrings of the error line, fails before any logging)
CASES = [
    ('seg-train-gpu-7', lambda w: seg_train(w, '--gpus', '7'), ['--gpus 7', 'no GPU 7'], True),
    ('seg-output-file', lambda w: seg_train(w, '--output', w['a_file']),
     ['--output', 'a_file.txt', 'is a file'], True),
    ('seg-output-read-only', lambda w: seg_val(w, '--output', w['ro']),
     ['--output', w_path('ro'), 'cannot write'], True),
    ('seg-val-default-output-read-only', lambda w: seg_val(w, weights=w['ro_seg_weights']),
     [w_path('ro_models'), 'cannot write', 'give --output'], True),
    ('seg-step-without-steps', lambda w: seg_train(w, '--lr-type', 'step'),
     ['--lr-type step', '--lr-steps'], True),
    ('seg-model-dataset-typo',
     lambda w: seg_train(w, '--model', 'cityscape_rna-a1-mini_cls19_s8'),
     ["unknown dataset 'cityscape'", 'cityscapes', 'voc', 'ade20k'], True),
    ('seg-batch-larger-than-data', lambda w: seg_train(w, '--batch-images', '64'),
     ['--batch-images 64', 'the 4 images'], False),
    ('predict-gpu-7', lambda w: predict_args(w, '--output', str(w['base'] / 'p'),
                                             '--gpus', '7'), ['--gpus 7', 'no GPU 7'], True),
    ('predict-output-file', lambda w: predict_args(w, '--output', w['a_file'], '--gpus', 'cpu'),
     ['--output', 'a_file.txt', 'is a file'], True),
    ('iclass-val-gpu-7', lambda w: cls_args(w, 'val', '--gpus', '7'),
     ['--gpus 7', 'no GPU 7'], True),
    ('iclass-val-default-output-read-only',
     lambda w: cls_args(w, 'val', '--weights', w['ro_cls_weights']),
     [w_path('ro_models'), 'cannot write', 'give --output'], True),
    ('iclass-step-without-steps', lambda w: cls_args(w, 'train', '--lr-type', 'step'),
     ['--lr-type step', '--lr-steps'], True),
    ('iclass-model-dataset-typo', lambda w: cls_args(w, 'train', '--model',
                                                     'demo-clss_rna-a1-mini_cls5'),
     ["unknown dataset 'demo-clss'", 'ilsvrc-cls', 'demo-cls'], True),
    ('iclass-batch-larger-than-data', lambda w: cls_args(w, 'train', '--batch-images', '64'),
     ['--batch-images 64', 'the 10 images'], False),
    ('verify-unknown-name', lambda w: [VERIFY, 'resnet38.params'],
     ['no checksum for resnet38.params', 'checksum.md5'], True),
    ('verify-missing-folder', lambda w: [VERIFY, '--models-dir', str(w['base'] / 'nowhere')],
     ['nowhere', 'models folder not found', '--models-dir'], True),
    ('verify-malformed-checksums', lambda w: [VERIFY, '--models-dir', str(w['base']),
                                              '--checksums', w['bad_sums']],
     ['bad.md5 line 2', 'this is not a checksum line'], True),
]


@pytest.mark.parametrize('case, argv, expected, early', CASES, ids=[c[0] for c in CASES])
def test_error_is_one_line_on_stderr(world, case, argv, expected, early):
    expected = [world[e[1]] if isinstance(e, tuple) else e for e in expected]
    proc = run(*argv(world))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout == ''
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith('error: ') or ' ERROR ' in l]
    assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr[-3000:]
    assert errors[0].startswith('error: '), errors[0]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    if early:
        assert len(lines) == 1, proc.stderr[-3000:]


def test_logs_go_to_stderr_and_results_to_stdout(world, tmp_path):
    """A successful segmentation evaluation prints nothing on stdout (its log, progress
    and scores are on stderr and in the log file); the ImageNet validation prints only
    its result line there."""
    proc = run(*seg_val(world, '--output', tmp_path, '--gpus', 'cpu', '--no-official-eval'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ''
    assert 'mean IoU' in proc.stderr and 'config:' in proc.stderr
    proc = run(*cls_args(world, 'val', '--output', tmp_path, '--batch-images', '5'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('top-1 error') and len(proc.stdout.splitlines()) == 1
    assert 'scale 40: top-1 error' in proc.stderr


def test_dataset_part_of_labels():
    """Any dataset with a spec (or classification data) is accepted, whatever the rest of
    the label; anything else is refused with the valid names."""
    for label in ('voc_rna-a1_cls21_s8_coco', 'ade20k_rna-a1_cls150_s8',
                  'ilsvrc-cls_rna-a_cls1000', 'demo-cls_rna-a1-mini_cls5',
                  'cityscapes_rna-a1-mini_cls19_s32'):
        assert zoo.parse_label(label).label == label
    for typo in ('cityscape_rna-a1_cls19_s8', 'vocc_rna-a1_cls21_s8', 'imagenet_rna-a_cls1000'):
        with pytest.raises(ValueError) as err:
            zoo.build_model(typo, 'segmentation')
        assert 'unknown dataset %r' % typo.split('_')[0] in str(err.value)
        assert 'cityscapes, voc, ade20k' in str(err.value)


def _raise(err):
    raise err


def test_run_command_one_line_and_exit_status(capsys):
    """The shared error style of every entry and script: bad input -> one ``error:`` line
    (the message's first line) and 2, Ctrl-C -> one line and 130, a bug -> its traceback."""
    assert run_command(_raise, DataError('/data/a.png: cannot decode\n  details: 0 bytes')) == 2
    assert capsys.readouterr().err == 'error: /data/a.png: cannot decode\n'
    assert run_command(_raise, FileNotFoundError(2, 'No such file or directory', 'x.lst')) == 2
    assert capsys.readouterr().err == "error: [Errno 2] No such file or directory: 'x.lst'\n"
    assert run_command(_raise, KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == 'interrupted\n'
    stopped = TrainingInterrupted('interrupted; last complete checkpoint: out/m_ep-0003.params')
    assert run_command(_raise, stopped) == TrainingInterrupted.exit_status == 130
    assert capsys.readouterr().err == str(stopped) + '\n'
    # the work's own status; None is success
    assert run_command(lambda code: code, 1) == 1
    assert run_command(lambda: None) == 0
    assert capsys.readouterr() == ('', '')
    # a bug is not bad input: it keeps its type and traceback
    with pytest.raises(RuntimeError, match='a bug'):
        run_command(_raise, RuntimeError('a bug'))
    with pytest.raises(SystemExit):  # argparse's usage errors pass through
        run_command(_raise, SystemExit(2))


def test_bad_input_is_kept_in_the_log_file_not_printed_twice(tmp_path, capsys):
    import logging
    logger = logging.getLogger('rn38.test_bad_input_logged')
    log_file = tmp_path / 'run.log'
    handlers = [logging.FileHandler(str(log_file)), logging.StreamHandler()]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        def work():
            with bad_input_logged(logger):
                raise ValueError('--output /x: cannot write\nsecond line')
        assert run_command(work) == 2
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
    assert capsys.readouterr().err == 'error: --output /x: cannot write\n'
    assert log_file.read_text() == '--output /x: cannot write\nsecond line\n'


@pytest.mark.parametrize('entry, argv, message', [
    (SEG, ['--phase', 'val', '--crop-sise', '5'], 'unrecognized arguments: --crop-sise 5'),
    (SEG, ['--phase', 'tran'], "argument --phase: invalid choice: 'tran'"),
    (PREDICT, ['--input', 'x.png'], 'the following arguments are required'),
    (ILSVRC, ['--batch-images', 'eight'], "argument --batch-images: invalid int value"),
])
def test_option_typos_are_one_line(entry, argv, message):
    """A mistyped option, choice or value: one ``error:`` line naming it, status 2
    (argparse alone prints its whole usage before the message)."""
    proc = run(entry, *argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
        proc.stderr
    assert lines[0].endswith('--help)')


# scripts/freeze_constraints.py is the maintainers' tool that writes constraints.txt; it
# imports nothing of the project, so it keeps plain argparse
SCRIPTS = sorted(f for f in os.listdir(os.path.join(REPO, 'scripts'))
                 if f.endswith('.py') and f != 'freeze_constraints.py')


def test_script_option_typos_are_one_line():
    """Every script under scripts/: an unknown option gives one ``error:`` line and
    status 2, as the entries do."""
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda f: run(os.path.join(REPO, 'scripts', f), '--no-such-opt'),
                              SCRIPTS))
    assert len(SCRIPTS) >= 10
    for name, proc in zip(SCRIPTS, procs):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (name, proc.stderr)
        assert lines[0].startswith('error: ') and lines[0].endswith('--help)'), (name, lines)
