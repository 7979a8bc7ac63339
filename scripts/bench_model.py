"""Forward speed of the networks, side by side in one run, on the same input.

For each model: the Gluon network hybridized (static_alloc/static_shape), the same with
``optimize_for`` on the oneDNN backend, the imperative network, and the exported symbol
bound with ``mx.mod.Module`` (how the authors' code runs). Times are the median of
``--repeat`` forwards after one warm-up; ratios are Module time / our time (> 1: faster
than Module). GFLOP/s counts 2 x multiply-adds of the convolutions and FC layers, and is
compared with a large sgemm (``mx.nd.dot``) measured in the same process.

    python scripts/bench_model.py                    # released A1-s8 at 512x1024 + A1 at 224
    python scripts/bench_model.py --quick            # small variants, small inputs
"""
import argparse
import os
import tempfile
import time

import mxnet as mx
import numpy as np

from rn38 import zoo
from rn38.params import load_params, released_keys
from rn38.synthetic import synthetic_arrays


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--quick', action='store_true', help='small variants and inputs')
    args = p.parse_args(argv)
    if args.quick:
        cases = [('cityscapes_rna-a1-mini_cls19_s8', 'segmentation', (1, 3, 256, 512)),
                 ('ilsvrc-cls_rna-a1-mini_cls1000', 'classification', (1, 3, 224, 224))]
    else:
        cases = [('cityscapes_rna-a1_cls19_s8', 'segmentation', (1, 3, 512, 1024)),
                 ('ilsvrc-cls_rna-a1_cls1000', 'classification', (1, 3, 224, 224))]
    gemm = sgemm_gflops()
    print('machine: %d cores, MXNet %s, OMP_NUM_THREADS=%s; sgemm 2048^3: %.1f GFLOP/s'
          % (os.cpu_count(), mx.__version__, os.environ.get('OMP_NUM_THREADS', 'unset'), gemm))
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
