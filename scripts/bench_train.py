#!/usr/bin/env python3
"""Training benchmarks: one function per mode, one table printer.

``--mode speed``: the time of one training step of the released A1-s8 (forward,
backward, update; batch 1, crop 256 by default), ours against the same network driven by
``mx.mod.Module`` as in the authors' code, measured alternately in one process; the
ratio Module / ours is > 1 when ours is faster.

``--mode memory``: for each crop, the training step time and the peak memory with and
without segment recomputation (``--backward-do-mirror``, :func:`rn38.parallel.forward_backward`
with ``mirror=True``). Every configuration runs in a fresh subprocess that reports

* ``base``: its peak RSS (``ru_maxrss``) after one SGD-momentum step on a 32x32 input,
  i.e. the process with weights, gradients and optimizer state (and the libraries);
* ``peak``: its peak RSS after the measured steps at the crop;
* ``step``: the mean wall time of the measured steps (after one warm-up step).

``act = peak - base`` is the memory above weights/gradients/optimizer state; the table
gives ``act(mirror) / act(plain)`` (target <= 0.5) and ``step(mirror) / step(plain)``
(target <= 1.35). Memory in MiB, time in seconds. ``--alloc lean`` runs the children with
one MXNet CPU workspace copy and glibc mmap for large blocks (see ``LEAN_ALLOC_ENV``);
with the defaults, workspace copies and heap fragmentation hide most of the saving on
CPU. Measured (released A1-s8, batch 1, 2 measured steps, 2-core AMD EPYC, MXNet 1.9.1
oneDNN)::

    OMP_NUM_THREADS=1 python scripts/bench_train.py --mode memory --crops 504,256 --alloc lean

    crop  base  act plain  act mirror  act ratio  step plain s  step mirror s  time ratio
     504  1741       2556         764       0.30         37.65          47.65        1.27
     256  1741        717         326       0.45          9.86          12.72        1.29

(memory identical in a second run, time ratios 1.30 and 1.27 there: +-3 % between runs).

Before the head change of :func:`rn38.parallel.forward_backward` the mirror acts were
1491 (0.58) and 463 (0.65) MiB: MKLDNN runs the backward-data of the dilated 3x3
``conv6a`` (4096 -> 512 channels) as a GEMM into an im2col buffer of 4096 x 9 x H x W
floats (558 MiB at crop 504, 144 MiB at 256) that oneDNN keeps as its scratchpad for the
rest of the process, in both modes; the recomputation now computes that input gradient
as a forward convolution with the flipped weights instead (no such buffer; also faster).
``scripts/diag_mirror.py`` prints the RSS after every segment run. A quick run::

    OMP_NUM_THREADS=1 python scripts/bench_train.py --mode memory \\
        --model cityscapes_rna-a1-mini_cls19_s8 --crops 256
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time


def peak_rss_mib():
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _task(label):
    from rn38.zoo import REGISTERED, parse_label
    if label in REGISTERED['classification'] or parse_label(label).dataset.endswith('-cls'):
        return 'classification'
    return 'segmentation'


def _losses():
    import mxnet as mx

    def seg_loss(scores, label):
        """Summed pixel softmax CE; count = pixels. ``(N, C, h, w)``, ``(N, h, w)``."""
        flat = scores.transpose((0, 2, 3, 1)).reshape((-1, scores.shape[1]))
        picked = mx.nd.pick(mx.nd.log_softmax(flat), label.reshape((-1,)), axis=1)
        return -picked.sum(), mx.nd.array([label.size], ctx=label.context)

    def cls_loss(scores, label):
        """Summed softmax CE; count = N. ``(N, C)``, ``(N,)``."""
        picked = mx.nd.pick(mx.nd.log_softmax(scores), label, axis=1)
        return -picked.sum(), mx.nd.array([label.shape[0]], ctx=label.context)

    return seg_loss, cls_loss


def child_step_memory(args):
    """One configuration in this (fresh) process; prints one JSON line."""
    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from rn38 import parallel
    from rn38.zoo import get_model

    task = _task(args.model)
    mx.random.seed(0)
    net = get_model(args.model, task, freeze_bn=(task == 'segmentation'))
    if args.hybridize:
        net.hybridize()
    seg_loss, cls_loss = _losses()
    loss_fn = seg_loss if task == 'segmentation' else cls_loss
    params = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
    trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 1e-6, 'momentum': 0.9, 'wd': 1e-4},
                            kvstore=None)
    rs = np.random.RandomState(0)
    classes = net.classes

    def step(crop):
        x = mx.nd.array(rs.standard_normal((args.batch, 3, crop, crop)))
        if task == 'segmentation':
            out = -(-crop // net.feat_stride)
            y = mx.nd.array(rs.randint(0, classes, (args.batch, out, out)))
        else:
            y = mx.nd.array(rs.randint(0, classes, (args.batch,)))
        parallel.forward_backward(net, [x], [y], loss_fn, mirror=args.mirror)
        trainer.step(1)
        mx.nd.waitall()

    step(32)
    base = peak_rss_mib()
    step(args.crop)                       # warm-up (shape-specific plans, primitives)
    start = time.time()
    for _ in range(args.steps):
        step(args.crop)
    seconds = (time.time() - start) / args.steps
    print(json.dumps({'base': base, 'peak': peak_rss_mib(), 'step': seconds}), flush=True)


# Allocation settings that let freed activation memory be reused / returned: one MXNet
# CPU temporary-workspace copy instead of several that each grow to the largest request,
# and glibc mmap for every block >= 128 KiB (no heap fragmentation of freed activations).
LEAN_ALLOC_ENV = {'MXNET_CPU_TEMP_COPY': '1', 'MALLOC_MMAP_THRESHOLD_': '131072'}


def _run_child(args, crop, mirror):
    cmd = [sys.executable, os.path.abspath(__file__), '--child', 'memory', '--model', args.model,
           '--crop', str(crop), '--mirror', str(int(mirror)), '--steps', str(args.steps),
           '--batch', str(args.batch), '--hybridize', str(int(args.hybridize))]
    env = dict(os.environ)
    if args.alloc == 'lean':
        env.update(LEAN_ALLOC_ENV)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError('child %s failed:\n%s' % (' '.join(cmd), proc.stderr.decode()[-3000:]))
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def mode_memory(args):
    """Rows of the memory table: one per crop, plain vs mirror."""
    rows = []
    for crop in args.crops:
        plain = _run_child(args, crop, False)
        mirror = _run_child(args, crop, True)
        act_p, act_m = plain['peak'] - plain['base'], mirror['peak'] - mirror['base']
        rows.append({
            'model': args.model, 'crop': crop, 'batch': args.batch, 'alloc': args.alloc,
            'base MiB': plain['base'],
            'peak plain': plain['peak'], 'peak mirror': mirror['peak'],
            'act plain': act_p, 'act mirror': act_m,
            'act ratio': act_m / act_p if act_p > 0 else float('nan'),
            'step plain s': plain['step'], 'step mirror s': mirror['step'],
            'time ratio': mirror['step'] / plain['step'],
        })
    return rows


def mode_speed(args):
    """Rows of the speed table: one training step (forward, backward, SGD update) of the
    same network, ours (hybridized Gluon, :func:`rn38.parallel.forward_backward`, the
    bootstrapped loss, gluon.Trainer) against the exported symbol driven by
    ``mx.mod.Module`` as the authors' code does (SoftmaxOutput loss), in this process."""
    import tempfile
    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from issegm.train import BootstrappedSoftmaxLoss
    from rn38 import parallel
    from rn38.zoo import get_model

    rows = []
    for crop in args.crops:
        mx.random.seed(0)
        net = get_model(args.model, 'segmentation', freeze_bn=True)
        net.hybridize(static_alloc=True, static_shape=True)
        rs = np.random.RandomState(0)
        x = mx.nd.array(rs.standard_normal((args.batch, 3, crop, crop)))
        out = -(-crop // net.feat_stride)
        y = mx.nd.array(rs.randint(0, net.classes, (args.batch, out * out)))
        params = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
        trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 1e-6, 'momentum': 0.9,
                                                'wd': 5e-4}, kvstore=None)
        loss = BootstrappedSoftmaxLoss()

        def ours():
            parallel.forward_backward(net, [x], [y], loss)
            trainer.step(1)
            mx.nd.waitall()

        ours()
        net(x)  # the whole-network graph, for export
        with tempfile.TemporaryDirectory() as tmp:
            net.export(os.path.join(tmp, 'net'), 0)
            sym, arg_params, aux_params = mx.model.load_checkpoint(os.path.join(tmp, 'net'), 0)
        sym = mx.sym.SoftmaxOutput(sym.reshape((0, 0, -1)), mx.sym.Variable('softmax_label'),
                                   multi_output=True, use_ignore=True, ignore_label=255,
                                   normalization='valid', name='softmax')
        mod = mx.mod.Module(sym, context=mx.cpu())
        mod.bind(data_shapes=[('data', x.shape)], label_shapes=[('softmax_label', y.shape)],
                 for_training=True)
        mod.init_params(arg_params=arg_params, aux_params=aux_params)
        mod.init_optimizer(optimizer='sgd', optimizer_params={
            'learning_rate': 1e-6, 'momentum': 0.9, 'wd': 5e-4})
        batch = mx.io.DataBatch([x], [y])

        def module():
            mod.forward_backward(batch)
            mod.update()
            mx.nd.waitall()

        module()
        times = {}
        for name, fn in (('ours', ours), ('module', module)) * args.steps:
            start = time.time()
            fn()
            times.setdefault(name, []).append(time.time() - start)
        t_ours, t_mod = float(np.median(times['ours'])), float(np.median(times['module']))
        rows.append({'model': args.model, 'crop': crop, 'batch': args.batch,
                     'Module step s': t_mod, 'ours step s': t_ours,
                     'Module / ours': t_mod / t_ours})
    return rows


MODES = {'memory': mode_memory, 'speed': mode_speed}


def print_table(rows, out=sys.stdout):
    """Print ``rows`` (list of dicts with the same keys) as an aligned text table."""
    if not rows:
        return
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return '%.2f' % v if abs(v) < 100 else '%.0f' % v
        return str(v)

    cells = [[fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    out.write('  '.join(k.rjust(w) for k, w in zip(keys, widths)) + '\n')
    for c in cells:
        out.write('  '.join(v.rjust(w) for v, w in zip(c, widths)) + '\n')
    out.flush()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mode', choices=sorted(MODES), default='memory')
    ap.add_argument('--model', default='cityscapes_rna-a1_cls19_s8',
                    help='model label (default: the released A1 s8 Cityscapes size)')
    ap.add_argument('--crops', type=lambda s: [int(c) for c in s.split(',')],
                    default=[256, 504], help='comma-separated square crop sizes')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--steps', type=int, default=2, help='measured steps per configuration')
    ap.add_argument('--hybridize', type=int, default=1)
    ap.add_argument('--alloc', choices=('default', 'lean'), default='default',
                    help="'lean': run the children with %s" % ' '.join(
                        '%s=%s' % kv for kv in sorted(LEAN_ALLOC_ENV.items())))
    ap.add_argument('--timeout', type=float, default=3600, help='seconds per configuration')
    ap.add_argument('--json', help='also write the rows to this JSON file')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    ap.add_argument('--crop', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--mirror', type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child == 'memory':
        args.mirror = bool(args.mirror)
        child_step_memory(args)
        return
    rows = MODES[args.mode](args)
    print_table(rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
