"""scripts/export_onnx.py run as a user runs it; the written file checked by onnxruntime
here, against the MXNet network built from the same weights."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from rn38 import zoo
from rn38.params import load_params, save_params
from rn38.synthetic import net_entries, synthetic_arrays

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights(tmp_path, label, task):
    net = zoo.get_model(label, task)
    net(mx.nd.zeros((1, 3, 64, 64)))
    load_params(net, {k: mx.nd.array(v) for k, v in synthetic_arrays(net_entries(net)).items()})
    path = str(tmp_path / ('%s_ep-0001.params' % label))
    save_params(net, path)
    net.hybridize()
    return net, path


def _export(*argv):
    return subprocess.run([sys.executable, 'scripts/export_onnx.py'] + list(argv), cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize('label, task, size, shapes', [
    ('cityscapes_rna-a1-mini_cls19_s8', 'segmentation', '64,128',
     [(1, 3, 64, 128), (2, 3, 48, 80)]),
    ('ilsvrc-cls_rna-a1-mini_cls1000', 'classification', '64',
     [(1, 3, 64, 64), (3, 3, 56, 72)]),
])
def test_onnx_round_trip(tmp_path, label, task, size, shapes):
    net, weights = _weights(tmp_path, label, task)
    out = str(tmp_path / 'model.onnx')
    proc = _export('--weights', weights, '--output', out, '--input-size', size, '--dynamic')
    assert proc.returncode == 0, proc.stderr
    assert 'ONNX opset' in proc.stdout and 'relative error' in proc.stdout

    model = onnx.load(out)
    onnx.checker.check_model(model)
    initializers = {t.name for t in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ['data']  # weights are not inputs
    assert set(net.collect_params().keys()) <= initializers
    opset = max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))
    assert 'ONNX opset %d' % opset in proc.stdout

    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    rng = np.random.RandomState(5)
    for shape in shapes:  # the export size and another one (dynamic N, H, W)
        x = rng.uniform(-2, 2, shape).astype(np.float32)
        ours = session.run(None, {'data': x})[0]
        reference = net(mx.nd.array(x)).asnumpy()
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()


def test_export_bad_input_is_one_line(tmp_path):
    out = str(tmp_path / 'm.onnx')
    proc = _export('--weights', str(tmp_path / 'missing_rna-a1-mini_cls19_s8_ep-0001.params'),
                   '--output', out)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith('[')]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: ')
    assert not os.path.exists(out)
