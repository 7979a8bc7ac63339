"""A parallel, prefetching, deterministic batch loader shared by the trainers.

A dataset is any object with ``__len__()`` and ``__getitem__(index, rng)`` returning
``(data, label)`` numpy arrays of fixed shapes. Sample ``index`` of epoch ``e`` always
gets ``np.random.default_rng(SeedSequence([seed, e, index]))``, and the sample order of an
epoch depends only on ``(seed, e)``, so the batches are the same for any number of workers
and for threads or processes.

Workers build whole batches (``np.stack`` of the samples) and the consumer receives them
in order. Worker exceptions are re-raised in the consumer with the dataset's message
(same type when it can be pickled). Processes are daemons, started on first use and kept
across epochs; :meth:`BatchLoader.close` (also called at interpreter exit and by the
context manager) stops them without waiting on queue feeder threads. Worker processes
ignore Ctrl-C (the trainer handles it) and die with their parent even when it is killed
(SIGKILL): Linux's parent-death signal, and on every system a watchdog thread that
polls the parent's pid.
"""
import multiprocessing
import os
import queue
import signal
import threading
import time
import weakref

import numpy as np

MODES = ('thread', 'process')


def sample_rng(seed, epoch, index):
    """The ``np.random.Generator`` of sample ``index`` in epoch ``epoch``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def epoch_order(size, shuffle, seed, epoch):
    """``np.int64[size]`` sample order of an epoch: a permutation drawn from (seed, epoch)
    when shuffling, else ``0..size-1``."""
    if not shuffle:
        return np.arange(size, dtype=np.int64)
    # The extra word keeps this stream apart from every per-sample stream.
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 2 ** 32 - 1,
                                                         0])).permutation(size)


def load_batch(dataset, indices, seed, epoch):
    """``(data (N, ...), label (N, ...))`` numpy arrays of the samples ``indices``."""
    samples = [dataset.__getitem__(int(i), sample_rng(seed, epoch, i)) for i in indices]
    data = np.stack([np.asarray(s[0]) for s in samples])
    label = np.stack([np.asarray(s[1]) for s in samples])
    return data, label


def _portable_error(err):
    """``err`` itself if it survives pickling, else a RuntimeError with its message."""
    import pickle
    try:
        copy = pickle.loads(pickle.dumps(err))
        if str(copy) == str(err):
            return err
    except Exception:  # pylint: disable=broad-except
        pass
    return RuntimeError('%s: %s' % (type(err).__name__, err))


def _worker_loop(dataset, tasks, results, seed):
    """Runs in a worker thread/process: ``(generation, batch_no, epoch, indices)`` tasks
    -> ``(generation, batch_no, (data, label) or None, error or None)``; None stops."""
    while True:
        task = tasks.get()
        if task is None:
            return
        generation, batch_no, epoch, indices = task
        try:
            results.put((generation, batch_no, load_batch(dataset, indices, seed, epoch), None))
        except BaseException as err:  # pylint: disable=broad-except
            results.put((generation, batch_no, None, _portable_error(err)))


WATCHDOG_SECONDS = 1.0


def _die_with_parent(parent_pid, death_signal):
    """In a worker process: end when the process ``parent_pid`` ends."""
    if death_signal:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG (Linux)
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(WATCHDOG_SECONDS)
    if os.getppid() != parent_pid:  # the parent died before this process was set up
        os._exit(1)
    threading.Thread(target=watch, name='parent-watchdog', daemon=True).start()


def _process_worker(dataset, tasks, results, seed, parent_pid, death_signal):
    """Entry of a worker process: :func:`_worker_loop` tied to the parent's life."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid, death_signal)
    _worker_loop(dataset, tasks, results, seed)


class BatchLoader:
    """Iterates ``(data, label)`` numpy batches of ``dataset``.

    Args:
        dataset: object with ``__len__`` and ``__getitem__(index, rng)``.
        batch_size: samples per batch.
        shuffle: draw a new order per epoch (from ``(seed, epoch)``).
        seed: int; with the epoch and sample index it fixes each sample's random draws.
        workers: 0 = load in the consumer's thread; k >= 1 = k threads/processes.
        mode: ``'thread'`` or ``'process'``.
        drop_last: drop the last incomplete batch (else it is yielded shorter).
        prefetch: batches in flight per worker.

    Attributes:
        epoch: current epoch (:meth:`set_epoch`).
        wait_seconds: seconds the consumer spent waiting for batches in the current/last
            epoch; ``wait_history`` maps epoch -> seconds.
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, workers=1, mode='thread',
                 drop_last=True, prefetch=2):
        if mode not in MODES:
            raise ValueError('unknown loader mode %r; valid: %s' % (mode, ', '.join(MODES)))
        if batch_size < 1 or workers < 0 or prefetch < 1:
            raise ValueError('need batch_size >= 1, workers >= 0, prefetch >= 1; got %s, %s, %s'
                             % (batch_size, workers, prefetch))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.workers = int(workers)
        self.mode = mode
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.epoch = 0
        self.shard_index, self.shard_count = 0, 1
        self.wait_seconds = 0.0
        self.wait_history = {}
        self._pool = None
        self._generation = 0
        self._finalizer = None

    def __len__(self):
        n = len(self.dataset) // self.shard_count
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_shard(self, index, count):
        """Iterate only shard ``index`` of ``count`` (one per machine of a distributed run):
        every shard sees the same epoch permutation and takes every ``count``-th sample of
        it from ``index``, so shards are disjoint and have the same number of batches."""
        if not 0 <= index < count:
            raise ValueError('shard %d of %d does not exist' % (index, count))
        if len(self.dataset) < count * self.batch_size:
            raise ValueError('%d samples cannot give each of %d workers a batch of %d'
                             % (len(self.dataset), count, self.batch_size))
        self.shard_index, self.shard_count = int(index), int(count)

    def set_epoch(self, epoch):
        """Selects the epoch whose order and sample draws the next iteration uses."""
        self.epoch = int(epoch)

    def batch_indices(self, epoch=None):
        """``[np.int64[batch_size], ...]`` sample indices of each batch of an epoch."""
        epoch = self.epoch if epoch is None else epoch
        order = epoch_order(len(self.dataset), self.shuffle, self.seed, epoch)
        usable = len(order) // self.shard_count * self.shard_count
        order = order[self.shard_index:usable:self.shard_count]
        return [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(self))]

    def __iter__(self):
        epoch = self.epoch
        batches = self.batch_indices(epoch)
        self.wait_seconds = 0.0
        self.wait_history[epoch] = 0.0
        if self.workers == 0:
            for indices in batches:
                tic = time.perf_counter()
                batch = load_batch(self.dataset, indices, self.seed, epoch)
                self._add_wait(epoch, time.perf_counter() - tic)
                yield batch
            return
        tasks, results = self._start()
        self._generation += 1
        generation = self._generation
        in_flight = self.workers * self.prefetch
        submitted = 0
        pending = {}
        for batch_no in range(len(batches)):
            while submitted < len(batches) and submitted < batch_no + in_flight:
                tasks.put((generation, submitted, epoch, batches[submitted]))
                submitted += 1
            tic = time.perf_counter()
            while batch_no not in pending:
                got_generation, got_no, batch, error = self._get(results)
                if got_generation == generation:
                    pending[got_no] = (batch, error)
            self._add_wait(epoch, time.perf_counter() - tic)
            batch, error = pending.pop(batch_no)
            if error is not None:
                raise error
            yield batch

    def _add_wait(self, epoch, seconds):
        self.wait_seconds += seconds
        self.wait_history[epoch] = self.wait_seconds

    def _get(self, results):
        while True:
            try:
                return results.get(timeout=1.0)
            except queue.Empty:
                pool = self._pool
                if pool is not None and pool['kind'] == 'process' and not all(
                        p.is_alive() for p in pool['workers']):
                    codes = [p.exitcode for p in pool['workers']]
                    self.close()
                    raise RuntimeError('a loader worker process died (exit codes %s)' % codes)

    def _start(self):
        if self._pool is not None:
            return self._pool['tasks'], self._pool['results']
        if self.mode == 'thread':
            tasks, results = queue.Queue(), queue.Queue()
            workers = [threading.Thread(target=_worker_loop, name='BatchLoader-%d' % k,
                                        args=(self.dataset, tasks, results, self.seed),
                                        daemon=True) for k in range(self.workers)]
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('fork' if 'fork' in methods else 'spawn')
            tasks, results = ctx.Queue(), ctx.Queue()
            # the parent-death signal fires when the forking *thread* ends: only from the
            # main thread, which lives as long as the process
            death_signal = threading.current_thread() is threading.main_thread()
            workers = [ctx.Process(target=_process_worker, name='BatchLoader-%d' % k,
                                   args=(self.dataset, tasks, results, self.seed, os.getpid(),
                                         death_signal), daemon=True)
                       for k in range(self.workers)]
        for w in workers:
            w.start()
        self._pool = {'kind': self.mode, 'tasks': tasks, 'results': results,
                      'workers': workers}
        # runs at garbage collection, close() or interpreter exit, whichever is first
        self._finalizer = weakref.finalize(self, _stop_pool, self._pool)
        return tasks, results

    def close(self):
        """Stops the workers (idempotent); the next iteration starts new ones."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool = None
        self._finalizer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stop_pool(pool):
    """Stops a worker pool without blocking on queues at interpreter exit."""
    tasks, workers = pool['tasks'], pool['workers']
    for _ in workers:
        try:
            tasks.put(None)
        except (OSError, ValueError):
            break
    # Workers hold nothing worth a slow goodbye: a process still flushing a large batch
    # into the results pipe after this grace period is terminated.
    deadline = time.time() + 0.5
    for w in workers:
        w.join(max(0.0, deadline - time.time()))
    if pool['kind'] == 'process':
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(1.0)
        for q in (pool['tasks'], pool['results']):
            q.cancel_join_thread()
            q.close()
