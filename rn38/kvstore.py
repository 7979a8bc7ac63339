"""KVStores for ``gluon.Trainer``: local, device and the distributed ``dist_sync`` /
``dist_async`` (parameter-server) modes, and what a step needs from them (the number of
workers, rank 0's initial parameters).
"""
import os
from collections import namedtuple

import mxnet as mx
from mxnet import gluon

from .gluon_internals import init_trainer_params, trainer_kvstore


KVSTORE_KINDS = ('local', 'device', 'dist_sync', 'dist_sync_device', 'dist_async')

KVStoreConfig = namedtuple('KVStoreConfig', ['kvstore', 'update_on_kvstore'])
KVStoreConfig.__doc__ = """What ``gluon.Trainer`` needs: ``Trainer(..., kvstore=c.kvstore,
update_on_kvstore=c.update_on_kvstore)``; unpacks as ``store, update_on_kvstore``."""


def make_kvstore(kind, num_devices=1):
    """KVStore (or None) and ``update_on_kvstore`` for a gluon.Trainer.

    ``kind``: 'local', 'device' (reduction on CPU / on the devices), 'dist_sync',
    'dist_sync_device', 'dist_async' (parameter server; the process must have been
    started with MXNet's ``DMLC_*`` environment, e.g. by ``tools/launch.py``).
    A single device with a local kind needs no kvstore: ``(None, None)``.

    Synchronous kinds return ``update_on_kvstore=False``: gradients are summed by the
    store and every worker runs the optimizer itself. This avoids two pitfalls of MXNet
    1.9 with the optimizer on the servers: ``Trainer.set_learning_rate`` does not reach
    the servers (apache/mxnet#15919), and ``rescale_grad`` is frozen at the first step.
    ``dist_async`` requires the update on the servers (True).
    With a ``dist`` store, also call :func:`sync_initial_params` before the first
    forward, and pass :func:`step_scale` to ``trainer.step``.
    """
    if kind not in KVSTORE_KINDS:
        raise ValueError('unknown kvstore %r; valid: %s' % (kind, ', '.join(KVSTORE_KINDS)))
    if kind.startswith('dist'):
        if 'DMLC_ROLE' not in os.environ:
            raise ValueError('--kvstore %s needs a distributed launch (DMLC_ROLE, '
                             'DMLC_PS_ROOT_URI, ... set by MXNet tools/launch.py)' % kind)
        return KVStoreConfig(mx.kv.create(kind), kind == 'dist_async')
    if num_devices <= 1:
        return KVStoreConfig(None, None)
    return KVStoreConfig(mx.kv.create(kind), False)


def _store_of(store_or_trainer):
    if isinstance(store_or_trainer, gluon.Trainer):
        return trainer_kvstore(store_or_trainer)
    return store_or_trainer


def worker_info(store_or_trainer):
    """``(rank, num_workers)`` of a kvstore / Trainer (``(0, 1)`` without a dist store)."""
    store = _store_of(store_or_trainer)
    if store is None or isinstance(store, str) or 'dist' not in store.type:
        return 0, 1
    return store.rank, store.num_workers


def step_scale(store_or_trainer):
    """The ``batch_size`` argument of ``trainer.step`` after
    :func:`rn38.recompute.forward_backward`.

    :func:`rn38.recompute.forward_backward` normalises by the count of this worker; a
    ``dist_sync`` store sums the workers' gradients, so the step divides by the number of workers:
    with equal counts per worker (classification; a fixed number of kept pixels) the
    update is exactly the one of a single process with all workers' data; with the
    per-device normalisation (segmentation) it is the mean over all devices of all
    workers (the same number of devices on each). 1 otherwise
    (``dist_async`` applies each worker's gradient on its own).
    """
    store = _store_of(store_or_trainer)
    if store is None or isinstance(store, str) or not store.type.startswith('dist_sync'):
        return 1
    return store.num_workers


def sync_initial_params(trainer):
    """Make every worker start from rank 0's parameters, before the first forward.

    ``gluon.Trainer`` broadcasts rank 0's values only inside the first ``step``, i.e.
    after the first gradients were computed on each worker's own (possibly differently
    initialised) weights. Calling this first makes the first step consistent too.
    No-op without a kvstore (Trainer internals, see :mod:`rn38.gluon_internals`).
    """
    init_trainer_params(trainer)
