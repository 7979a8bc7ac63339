import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import issegm
from issegm import predict
from issegm.datasets import get_dataset_spec
from rn38.params import save_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = 'cityscapes_rna-a1-mini_cls19_s8'


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    net = issegm.get_model(MINI)
    path = str(tmp_path_factory.mktemp('models') / (MINI + '_ep-0001.params'))
    save_params(net, path)
    return path


def write_images(folder, shapes, seed=0):
    rs = np.random.RandomState(seed)
    paths = []
    for k, (h, w) in enumerate(shapes):
        path = os.path.join(folder, 'img%d.%s' % (k, 'png' if k % 2 == 0 else 'jpg'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, rs.randint(0, 256, (h, w, 3)).astype(np.uint8))
        paths.append(path)
    return paths


def check_outputs(out, name, shape):
    spec = get_dataset_spec('cityscapes')
    ids = cv2.imread(os.path.join(out, 'labels', name + '.png'), cv2.IMREAD_UNCHANGED)
    assert ids.shape == shape and ids.dtype == np.uint8
    assert set(np.unique(ids)) <= set(spec.train_to_label[:19].tolist())  # label ids
    color = cv2.imread(os.path.join(out, 'color', name + '.png'))[:, :, ::-1]
    np.testing.assert_array_equal(color, spec.palette[spec.label_to_train[ids]])
    over = cv2.imread(os.path.join(out, 'overlay', name + '.png'))
    assert over.shape == shape + (3,)


def test_cli_script_end_to_end_from_repo_root(weights, tmp_path):
    images = write_images(str(tmp_path / 'in'), [(21, 35)])
    out = str(tmp_path / 'out')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH='')
    proc = subprocess.run(
        [sys.executable, 'issegm/predict.py', '--weights', weights, '--input', images[0],
         '--output', out, '--test-scales', '24,40', '--test-flipping', '--gpus', '',
         '--no-progress'], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_outputs(out, 'img0', (21, 35))
    assert os.path.isfile(os.path.join(out, 'config.yaml'))
    with open(os.path.join(out, 'predict.log')) as f:
        assert 'segmented 1 images' in f.read()


def test_folder_input_keeps_subfolders_and_any_size(weights, tmp_path):
    src = str(tmp_path / 'in')
    write_images(src, [(17, 30), (40, 23)])
    write_images(os.path.join(src, 'sub'), [(9, 9)], seed=1)
    with open(os.path.join(src, 'notes.txt'), 'w') as f:
        f.write('not an image')
    out = str(tmp_path / 'out')
    assert predict.main(['--weights', weights, '--input', src, '--output', out,
                         '--gpus', '', '--no-progress']) == 0
    check_outputs(out, 'img0', (17, 30))
    check_outputs(out, 'img1', (40, 23))
    check_outputs(out, os.path.join('sub', 'img0'), (9, 9))


def test_tiled_prediction_matches_whole(weights, tmp_path):
    src = str(tmp_path / 'in')
    write_images(src, [(16, 700)])
    whole, tiled = str(tmp_path / 'whole'), str(tmp_path / 'tiled')
    base = ['--weights', weights, '--input', src, '--gpus', '', '--no-progress']
    assert predict.main(base + ['--output', whole]) == 0
    assert predict.main(base + ['--output', tiled, '--max-input-pixels', '1000',
                                '--tile-size', '64']) == 0
    a = cv2.imread(os.path.join(whole, 'labels', 'img0.png'), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(os.path.join(tiled, 'labels', 'img0.png'), cv2.IMREAD_UNCHANGED)
    assert (a == b).mean() > 0.999  # identical up to float ties


def test_errors_are_one_line(weights, tmp_path, capsys):
    out = str(tmp_path / 'out')
    missing = str(tmp_path / 'nothing_here')
    assert predict.main(['--weights', weights, '--input', missing, '--output', out,
                         '--gpus', '']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ' + missing) and '\n' not in err
    bad = str(tmp_path / 'bad.params')
    with open(bad, 'wb') as f:
        f.write(b'x')
    src = write_images(str(tmp_path / 'in'), [(8, 8)])[0]
    assert predict.main(['--weights', bad, '--model', MINI, '--input', src,
                         '--output', out, '--gpus', '']) == 2
    assert capsys.readouterr().err.strip().startswith('error: ' + bad)
    # a weights name without a label and no --model
    assert predict.main(['--weights', bad, '--input', src, '--output', out,
                         '--gpus', '']) == 2
    assert '--model' in capsys.readouterr().err
    assert predict.main(['--weights', weights, '--input', src, '--output', out,
                         '--test-scales', 'big', '--gpus', '']) == 2
    assert '--test-scales' in capsys.readouterr().err


def test_bad_inputs_are_skipped_and_the_others_written(weights, tmp_path):
    """A folder with a zero-byte and a garbage "image": the good ones are written, each
    bad one gets a one-line warning, the run exits 2 at the end; ``--gpus cpu`` is the
    shared device syntax."""
    folder = tmp_path / 'in'
    good = write_images(str(folder), [(20, 30), (18, 26)])
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'garbage.jpg').write_bytes(b'not an image at all')
    out = str(tmp_path / 'out')
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'issegm', 'predict.py'), '--weights', weights,
         '--input', str(folder), '--output', out, '--gpus', 'cpu', '--no-progress'],
        env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr and proc.stdout == ''
    for path in good:
        name = os.path.splitext(os.path.basename(path))[0]
        check_outputs(out, name, cv2.imread(path).shape[:2])
    assert sorted(os.listdir(os.path.join(out, 'labels'))) == ['img0.png', 'img1.png']
    lines = proc.stderr.strip().splitlines()
    for bad in ('empty.png', 'garbage.jpg'):
        warned = [l for l in lines if 'WARNING skipped' in l and str(folder / bad) in l]
        assert len(warned) == 1, proc.stderr
    assert lines[-1].startswith('error: 2 of 4 images skipped')
