"""Forward speed of the networks, side by side in one run, on the same input.

For each model: the Gluon network hybridized (static_alloc/static_shape), the same with
``optimize_for`` on the oneDNN backend, the imperative network, and the exported symbol
bound with ``mx.mod.Module`` (how the authors' code runs). Times are the median of
``--repeat`` forwards after one warm-up; ratios are Module time / our time (> 1: faster
than Module). GFLOP/s counts 2 x multiply-adds of the convolutions and FC layers, and is
compared with a large sgemm (``mx.nd.dot``) measured in the same process.

    python scripts/bench_model.py                    # released A1-s8 at 512x1024 + A1 at 224
    python scripts/bench_model.py --quick            # small variants, small inputs

``--precision`` compares instead, on the same input and weights: float32 (hybridized),
bfloat16 and int8 (``rn38.lowprec``, as ``--dtype`` of the entries runs them; int8
calibrated with ``--calib-mode`` on two other generated street scenes, calibration not
timed) and the ONNX export run by onnxruntime (CPU, all cores), each timed in turns with
float32 (minimum of ``--repeat`` forwards each, after a warm-up), as ratios float32 time /
this; plus how often the argmax agrees with float32 on generated street scenes
(segmentation: pixels of ``--scenes`` scenes; classification: top-1 of the scenes).
"""
import argparse
import os
import tempfile
import time

from rn38.runtime import use_all_cores
use_all_cores()  # as the entries run: one thread per core, chosen before MXNet loads

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from rn38 import zoo  # noqa: E402
from rn38.lowprec import cpu_flags  # noqa: E402
from rn38.params import load_params, released_keys  # noqa: E402
from rn38.synthetic import synthetic_arrays  # noqa: E402


def conv_fc_flops(net, shape):
    """Multiply-add FLOPs (x2) of the Conv2D and Dense layers for one input ``shape``."""
    total = [0]

    def hook(block, inputs, output):
        w = block.weight.shape
        if isinstance(block, mx.gluon.nn.Conv2D):
            total[0] += 2 * int(np.prod(w[1:])) * int(np.prod(output.shape[1:])) * output.shape[0]
        else:
            total[0] += 2 * int(np.prod(w)) * output.shape[0]

    handles = []
    net.apply(lambda b: handles.append(b.register_forward_hook(hook))
              if isinstance(b, (mx.gluon.nn.Conv2D, mx.gluon.nn.Dense)) else None)
    net(mx.nd.zeros(shape)).wait_to_read()
    for h in handles:
        h.detach()
    return total[0]


def sgemm_gflops(n=2048, repeat=5):
    a = mx.nd.random.uniform(shape=(n, n))
    b = mx.nd.random.uniform(shape=(n, n))
    mx.nd.dot(a, b).wait_to_read()
    times = []
    for _ in range(repeat):
        t = time.time()
        mx.nd.dot(a, b).wait_to_read()
        times.append(time.time() - t)
    return 2.0 * n ** 3 / np.median(times) / 1e9


def _time(fn, repeat):
    fn()  # warm-up (graph construction, memory planning)
    times = []
    for _ in range(repeat):
        t = time.time()
        fn()
        times.append(time.time() - t)
    return float(np.median(times))


def build(label, task, seed_weights=True):
    net = zoo.get_model(label, task)
    net(mx.nd.zeros((1, 3, 64, 64)))
    if seed_weights:
        entries = sorted((k, p.shape) for k, p in released_keys(net).items())
        load_params(net, {k: mx.nd.array(v) for k, v in synthetic_arrays(entries).items()})
    return net


def bench_one(label, task, shape, repeat):
    x = mx.nd.random.uniform(-2, 2, shape=shape)
    results = {}
    net = build(label, task)
    flops = conv_fc_flops(net, shape)
    results['imperative'] = _time(lambda: net(x).wait_to_read(), repeat)
    net.hybridize(static_alloc=True, static_shape=True)
    results['hybridized'] = _time(lambda: net(x).wait_to_read(), repeat)
    ref = net(x).asnumpy()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, 'net')
        net.export(prefix, 0)
        sym, args, auxs = mx.model.load_checkpoint(prefix, 0)
    if mx.runtime.Features().is_enabled('MKLDNN'):
        fused = build(label, task)
        fused.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
        results['hybridized + oneDNN fusion'] = _time(lambda: fused(x).wait_to_read(), repeat)
        np.testing.assert_allclose(fused(x).asnumpy(), ref, rtol=1e-3, atol=1e-3)
    mod = mx.mod.Module(sym, data_names=['data'], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[('data', shape)], for_training=False)
    mod.set_params(args, auxs)
    batch = mx.io.DataBatch([x])

    def run_module():
        mod.forward(batch, is_train=False)
        mod.get_outputs()[0].wait_to_read()

    results['Module (symbolic)'] = _time(run_module, repeat)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), ref, rtol=1e-3, atol=1e-3)
    return results, flops


def street_scene_inputs(count, shape, seed):
    """``float32 (1, 3, H, W)`` normalised generated street scenes (scripts/make_demo_data)."""
    from make_demo_data import render_scene  # beside this script
    from rn38.image import IMAGENET_MEAN, IMAGENET_STD
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = render_scene(shape[2], shape[3], rng)[0].astype(np.float32) / 255
        x = (image - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        out.append(x.transpose(2, 0, 1)[np.newaxis].astype(np.float32))
    return out


def _alternate(base_fn, fn, repeat):
    """(base seconds, seconds): the two forwards timed in turns (A B A B ...) after one
    warm-up each, so that load from other processes hits both alike; minimum of each."""
    base_fn()
    fn()
    base, other = [], []
    for _ in range(repeat):
        for fn_, times in ((base_fn, base), (fn, other)):
            t = time.time()
            fn_()
            times.append(time.time() - t)
    return min(base), min(other)


def bench_precision(label, task, shape, repeat, scenes, calib_mode, onnx=True):
    """Per variant: (float32 seconds, seconds, argmax agreement with float32); each
    variant is timed alternately with the float32 network."""
    from rn38 import lowprec
    inputs = street_scene_inputs(scenes, shape, seed=1)
    calib = street_scene_inputs(2, shape, seed=2)
    x = mx.nd.array(inputs[0])
    net = build(label, task)
    net.hybridize(static_alloc=True)  # as the entries run it, and as lowprec's blocks
    reference = [net(mx.nd.array(i)).asnumpy().argmax(1) for i in inputs]

    def run_float32():
        net(x).wait_to_read()

    rows = {}
    for dtype in ('bfloat16', 'int8'):
        low, ran = lowprec.lower_precision(build(label, task), dtype, [mx.cpu()],
                                           calib_batches=lambda: calib, calib_mode=calib_mode)
        if ran != dtype:
            print('%s: not supported here, skipped' % dtype)
            continue
        agree = np.mean([np.mean(low(mx.nd.array(i)).asnumpy().argmax(1) == r)
                         for i, r in zip(inputs, reference)])
        rows[dtype] = _alternate(run_float32, lambda: low(x).wait_to_read(), repeat) + \
            (float(agree),)
        print('  %s: %s' % (dtype, rows[dtype]), flush=True)
        low = None  # freed before the next variant is built
    if not onnx:
        return rows
    try:
        import onnxruntime as ort
        from export_onnx import export  # scripts/ is on the path (street_scene_inputs)
    except ImportError:
        print('onnxruntime not installed (the export extra): ONNX row skipped')
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'net.onnx')
        export(net, shape, path)
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        agree = np.mean([np.mean(session.run(None, {'data': i})[0].argmax(1) == r)
                         for i, r in zip(inputs, reference)])
        rows['onnxruntime float32'] = _alternate(
            run_float32, lambda: session.run(None, {'data': inputs[0]}), repeat) + \
            (float(agree),)
    return rows


def main(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    p = ArgumentParser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--quick', action='store_true', help='small variants and inputs')
    p.add_argument('--precision', action='store_true',
                   help='float32 / bfloat16 / int8 / onnxruntime instead of the graph variants')
    p.add_argument('--scenes', type=int, default=2,
                   help='--precision: generated street scenes for the argmax agreement')
    p.add_argument('--no-onnx', dest='onnx', action='store_false',
                   help='--precision: leave out the onnxruntime row')
    p.add_argument('--calib-mode', choices=('entropy', 'naive'), default='naive',
                   help='--precision: int8 calibration')
    args = p.parse_args(argv)
    if args.quick:
        cases = [('cityscapes_rna-a1-mini_cls19_s8', 'segmentation', (1, 3, 256, 512)),
                 ('ilsvrc-cls_rna-a1-mini_cls1000', 'classification', (1, 3, 224, 224))]
    else:
        cases = [('cityscapes_rna-a1_cls19_s8', 'segmentation', (1, 3, 512, 1024)),
                 ('ilsvrc-cls_rna-a1_cls1000', 'classification', (1, 3, 224, 224))]
    if args.precision:
        print('machine: %d cores, MXNet %s, CPU flags: %s; int8 calibration: %s'
              % (os.cpu_count(), mx.__version__, ' '.join(sorted(
                  {'avx512_bf16', 'avx512_vnni'} & cpu_flags())),
                 args.calib_mode))
        print('| model | input | variant | float32 seconds | seconds | float32 time / this '
              '| argmax = float32 |')
        print('|---|---|---|---|---|---|---|')
        for label, task, shape in cases:
            rows = bench_precision(label, task, shape, args.repeat, args.scenes,
                                   args.calib_mode, args.onnx)
            for name, (base, seconds, agree) in rows.items():
                print('| %s | %s | %s | %.3f | %.3f | %.2fx | %.2f%% |'
                      % (label, 'x'.join(map(str, shape)), name, base, seconds,
                         base / seconds, 100 * agree), flush=True)
        return
    gemm = sgemm_gflops()
    print('machine: %d cores, MXNet %s, CPU threads: %s; sgemm 2048^3: %.1f GFLOP/s'
          % (os.cpu_count(), mx.__version__, os.environ.get('OMP_NUM_THREADS') or
             os.environ.get('MXNET_OMP_MAX_THREADS', 'MXNet default'), gemm))
    print('| model | input | variant | seconds | Module time / this | GFLOP/s | % of sgemm |')
    print('|---|---|---|---|---|---|---|')
    for label, task, shape in cases:
        results, flops = bench_one(label, task, shape, args.repeat)
        base = results['Module (symbolic)']
        for name, seconds in results.items():
            rate = flops / seconds / 1e9
            print('| %s | %s | %s | %.3f | %.2fx | %.1f | %.0f%% |'
                  % (label, 'x'.join(map(str, shape)), name, seconds, base / seconds, rate,
                     100 * rate / gemm))


if __name__ == '__main__':
    main()
