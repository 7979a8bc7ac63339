#!/usr/bin/env python3
"""Where the peak memory of a training step goes: the segment plan, and the current and
peak RSS (MiB) after each segment run of :func:`rn38.recompute.forward_backward` (forward
and recomputation), after the backward and after each step. ``act`` is the peak minus the
peak after a 32x32 step. The settings are those of the trainers (hybridization,
:func:`rn38.runtime.configure_mxnet` with ``training=True``).
Example::

    python scripts/diag_mirror.py --crop 256 --mirror 1 --steps 3
"""
import os
import resource
import time


def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    ap = ArgumentParser()
    ap.add_argument('--model', default='cityscapes_rna-a1_cls19_s8')
    ap.add_argument('--crop', type=int, default=256)
    ap.add_argument('--mirror', type=int, default=1)
    ap.add_argument('--hybridize', type=int, default=1)
    ap.add_argument('--steps', type=int, default=1)
    ap.add_argument('--trace', type=int, default=1)
    args = ap.parse_args()
    from rn38.runtime import configure_mxnet, use_all_cores
    use_all_cores()
    configure_mxnet(mirror=bool(args.mirror), training=True)
    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from rn38 import recompute
    from rn38.zoo import get_model
    mx.random.seed(0)
    net = get_model(args.model, 'segmentation', freeze_bn=True)
    if args.hybridize:
        recompute.hybridize_for_training(net)

    def seg_loss(scores, label):
        """Summed pixel softmax CE; count = pixels. ``(N, C, h, w)``, ``(N, h, w)``."""
        flat = scores.transpose((0, 2, 3, 1)).reshape((-1, scores.shape[1]))
        picked = mx.nd.pick(mx.nd.log_softmax(flat), label.reshape((-1,)), axis=1)
        return -picked.sum(), mx.nd.array([label.size], ctx=label.context)
    params = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
    trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 1e-6, 'momentum': 0.9, 'wd': 1e-4},
                            kvstore=None)
    rs = np.random.RandomState(0)
    nbytes = sum(p.data().size * 4 for p in net.collect_params().values())
    print('param MiB %.0f' % (nbytes / 2 ** 20))
    if args.trace:
        orig_run = recompute._run
        def run(units, x, seeds, ctx):
            y = orig_run(units, x, seeds, ctx)
            y.wait_to_read()
            print('  seg %-30s in %s out %s rss %.0f peak %.0f' % (
                ','.join(u.name or type(u).__name__ for u in units)[:30], x.shape, y.shape, rss(), peak()), flush=True)
            return y
        recompute._run = run

    def step(crop):
        x = mx.nd.array(rs.standard_normal((1, 3, crop, crop)))
        out = -(-crop // net.feat_stride)
        y = mx.nd.array(rs.randint(0, net.classes, (1, out, out)))
        recompute.forward_backward(net, [x], [y], seg_loss, mirror=bool(args.mirror))
        print(' after fb rss %.0f peak %.0f' % (rss(), peak()), flush=True)
        trainer.step(1)
        mx.nd.waitall()

    step(32)
    base = peak()
    print('base %.0f rss %.0f' % (base, rss()))
    units = recompute.stage_segments(net)
    if args.mirror:
        segs = recompute._resolve_segments(net, units, None, (1, 3, args.crop, args.crop))
        print('plan:', [[u.name or type(u).__name__ for u in s] for s in segs])
    for i in range(args.steps + 1):
        t = time.time()
        step(args.crop)
        print('step %d %.1fs rss %.0f peak %.0f act %.0f' % (i, time.time() - t, rss(), peak(), peak() - base), flush=True)


if __name__ == '__main__':
    main()
