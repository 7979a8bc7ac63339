"""A real ``dist_sync`` job on this machine: scheduler, one server, two workers (loopback).

The processes are configured as MXNet's ``tools/launch.py`` does, through ps-lite's
environment (``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``,
``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER``; ``DMLC_NODE_HOST=127.0.0.1`` keeps every node on
the loopback interface). Scheduler and server are ``python -c "import mxnet"`` (MXNet
runs the role on import). Each worker (tests/dist_worker.py) initialises with its own
seed, trains on its own data and saves its weights. Bounded time; every process is
killed on failure.
"""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'dist_worker.py')
TIMEOUT = 150


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def base_env():
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(('DMLC_', 'PS_')):
            del env[key]
    env.update(OMP_NUM_THREADS='1', MXNET_ENGINE_TYPE='ThreadedEnginePerDevice',
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), env.get('PYTHONPATH', '')]))
    return env


def start(cmd, env, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log


def run_job(out_dir, num_workers=2, worker_cmd=None):
    """Scheduler, server and workers; ``worker_cmd(rank)`` is each worker's command."""
    port = free_port()
    env = base_env()
    env.update(DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(port),
               DMLC_NUM_SERVER='1', DMLC_NUM_WORKER=str(num_workers),
               DMLC_NODE_HOST='127.0.0.1')
    roles = [('scheduler', [sys.executable, '-c', 'import mxnet']),
             ('server', [sys.executable, '-c', 'import mxnet'])]
    worker_cmd = worker_cmd or (lambda rank: [sys.executable, WORKER, '--mode', 'dist',
                                              '--out-dir', out_dir])
    roles += [('worker', worker_cmd(rank)) for rank in range(num_workers)]
    procs = []
    try:
        for i, (role, cmd) in enumerate(roles):
            procs.append(start(cmd, dict(env, DMLC_ROLE=role),
                               os.path.join(out_dir, '%d_%s.log' % (i, role))))
        deadline = time.time() + TIMEOUT
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        codes = [p.returncode for p, _ in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
    logs = '\n'.join('--- %s\n%s' % (f, open(os.path.join(out_dir, f)).read()[-2000:])
                     for f in sorted(os.listdir(out_dir)) if f.endswith('.log'))
    assert codes is not None, 'dist job timed out after %d s\n%s' % (TIMEOUT, logs)
    assert codes == [0] * len(roles), 'exit codes %s\n%s' % (codes, logs)


def run_single(out_dir):
    proc = subprocess.run([sys.executable, WORKER, '--mode', 'single', '--out-dir', out_dir],
                          env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]


def group(npz, prefix):
    return {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)}


def trainable(arrays):
    return {k: v for k, v in arrays.items() if not k.endswith(('running_mean', 'running_var'))}


@pytest.mark.slow
def test_dist_sync_two_workers_end_identical_and_equal_one_process(tmp_path):
    run_job(str(tmp_path))
    run_single(str(tmp_path))
    w = [np.load(str(tmp_path / ('worker%d.npz' % r))) for r in range(2)]
    single = np.load(str(tmp_path / 'single.npz'))
    assert int(w[0]['meta/num_workers']) == 2
    init0, init1 = group(w[0], 'init/'), group(w[1], 'init/')
    start0, start1 = group(w[0], 'start/'), group(w[1], 'start/')
    final0, final1 = group(w[0], 'final/'), group(w[1], 'final/')
    # the workers initialised differently; sync_initial_params gave both rank 0's weights
    assert any(not np.array_equal(init0[k], init1[k]) for k in trainable(init0))
    for k in start0:
        np.testing.assert_array_equal(start1[k], init0[k], err_msg=k)
    # trained weights: identical on both workers, moved from the start
    for k in trainable(final0):
        np.testing.assert_array_equal(final0[k], final1[k], err_msg=k)
    assert max(np.abs(final0[k] - start0[k]).max() for k in trainable(final0)) > 1e-3
    # and equal to one process whose context d got worker d's data (same BN batches);
    # BatchNorm running statistics follow each worker's own data, like each context's
    single0, single1 = group(single, 'final/'), group(single, 'final1/')
    np.testing.assert_array_equal(group(single, 'start/')[next(iter(start0))],
                                  start0[next(iter(start0))])
    # (exact: the server sums two gradients, a commutative operation, and the scalings
    # 1/2 per worker then 1/2 in the step equal 1/4 exactly in floating point)
    for k in final0:
        np.testing.assert_array_equal(final0[k], single0[k], err_msg=k)
        np.testing.assert_array_equal(final1[k], single1[k], err_msg=k)
    running = [k for k in final0 if k.endswith('running_mean')]
    assert any(not np.array_equal(final0[k], final1[k]) for k in running)


@pytest.mark.slow
def test_segmentation_entry_trains_with_dist_sync(tmp_path):
    """issegm/cityscapes.py --kvstore dist_sync with two workers: each trains on its half of
    the data and both write identical checkpoints, which moved from the initial weights."""
    from conftest import make_demo_dataset
    data = str(tmp_path / 'data')
    make_demo_dataset(data, seed=5, train=8, val=1, height=64, width=128)
    entry = os.path.join(os.path.dirname(HERE), 'issegm', 'cityscapes.py')
    label = 'cityscapes_rna-a1-mini_cls19_s8'

    def worker(rank):
        return [sys.executable, entry, '--phase', 'train', '--data-root', data,
                '--model', label, '--output', str(tmp_path / ('w%d' % rank)),
                '--batch-images', '2', '--crop-size', '48', '--origin-size', '128',
                '--to-epoch', '1', '--kvstore', 'dist_sync', '--gpus', 'cpu',
                '--no-progress', '--backward-do-mirror']  # the same command on every machine

    run_job(str(tmp_path), worker_cmd=worker)
    import mxnet as mx
    ckpt = [mx.nd.load(str(tmp_path / ('w%d' % r) / ('%s_ep-0001.params' % label)))
            for r in range(2)]
    assert ckpt[0].keys() == ckpt[1].keys()
    for k in ckpt[0]:
        if k.startswith('arg:'):  # BN statistics are frozen and equal too, but say nothing
            np.testing.assert_array_equal(ckpt[0][k].asnumpy(), ckpt[1][k].asnumpy(), err_msg=k)
    logs = [open(os.path.join(str(tmp_path / ('w%d' % r)), label + '.log')).read()
            for r in range(2)]
    # two workers (the scheduler assigns the ranks), each 2 of the 4 batches of the epoch
    ranks = sorted(r for r in range(2) for log in logs
                   if 'worker %d of 2: 2 batches per epoch' % r in log)
    assert ranks == [0, 1]
