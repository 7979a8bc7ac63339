"""Worker of tests/test_dist.py: a few training steps of a tiny classifier, weights saved.

``--mode dist``: one worker of a ``dist_sync`` job (started with MXNet's ``DMLC_*``
environment); it trains on the data of its rank and writes ``<out-dir>/worker<rank>.npz``.
``--mode single``: one process with two CPU contexts, context ``d`` getting the data of
rank ``d``; writes ``<out-dir>/single.npz``. Both use :mod:`rn38.devices`, :mod:`rn38.kvstore`
and :mod:`rn38.recompute` exactly as the trainers do. Saved arrays: ``init/<param>`` (this
process's own initialisation),
``start/<param>`` (after :func:`~rn38.kvstore.sync_initial_params`), ``final/<param>``
(after the steps); in single mode ``final`` is context 0, ``final1`` context 1.
"""
import argparse
import os

import mxnet as mx
import numpy as np
from mxnet import gluon

import iclass
from rn38 import devices, kvstore, recompute

MODEL = 'demo-cls_rna-a1-mini_cls5'
PER_WORKER, SIZE, CLASSES = 2, 32, 5


def batch(rank, step):
    """Deterministic data of worker ``rank`` at ``step``: ``(2, 3, 32, 32)``, ``(2,)``."""
    rs = np.random.RandomState(1000 + 17 * step + rank)
    return (rs.standard_normal((PER_WORKER, 3, SIZE, SIZE)).astype(np.float32),
            rs.randint(0, CLASSES, PER_WORKER).astype(np.float32))


def ce_loss(scores, label):
    """Summed softmax cross-entropy and the number of samples."""
    picked = mx.nd.pick(mx.nd.log_softmax(scores), label, axis=1)
    return -picked.sum(), mx.nd.array([label.shape[0]], ctx=label.context)


def snapshot(net, ctx):
    return {k: p.data(ctx).asnumpy().copy() for k, p in net.collect_params().items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--mode', choices=('dist', 'single'), required=True)
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--mirror', type=int, default=1)
    args = ap.parse_args()

    if args.mode == 'dist':
        ctx = [mx.cpu()]
        store, update_on_kvstore = kvstore.make_kvstore('dist_sync', 1)
        rank, num_workers = kvstore.worker_info(store)
        ranks = [rank]
    else:
        ctx = devices.parse_devices('cpu:2')
        store, update_on_kvstore = kvstore.make_kvstore('local', len(ctx))
        rank, num_workers, ranks = 0, 1, [0, 1]
    mx.random.seed(100 + rank)          # each worker initialises differently on purpose
    net = iclass.get_model(MODEL, ctx=ctx)
    saved = {'init/' + k: v for k, v in snapshot(net, ctx[0]).items()}
    params = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
    trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 0.1, 'momentum': 0.9, 'wd': 1e-4},
                            kvstore=store, update_on_kvstore=update_on_kvstore)
    kvstore.sync_initial_params(trainer)
    saved.update({'start/' + k: v for k, v in snapshot(net, ctx[0]).items()})
    scale = kvstore.step_scale(trainer)
    for step in range(args.steps):
        parts = [batch(r, step) for r in ranks]
        data = np.concatenate([p[0] for p in parts])
        label = np.concatenate([p[1] for p in parts])
        data_list, label_list = devices.split_batch(data, label, ctx)
        recompute.forward_backward(net, data_list, label_list, ce_loss, mirror=bool(args.mirror))
        trainer.step(scale)
    mx.nd.waitall()
    saved.update({'final/' + k: v for k, v in snapshot(net, ctx[0]).items()})
    if len(ctx) > 1:
        saved.update({'final1/' + k: v for k, v in snapshot(net, ctx[1]).items()})
    saved['meta/num_workers'] = np.array(num_workers)
    name = 'worker%d.npz' % rank if args.mode == 'dist' else 'single.npz'
    np.savez(os.path.join(args.out_dir, name), **saved)
    print('done', name, 'step scale', scale, flush=True)


if __name__ == '__main__':
    main()
