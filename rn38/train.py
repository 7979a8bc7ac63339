"""The training machinery shared by the segmentation and classification trainers.

Plain functions: learning-rate schedules with the authors' semantics, a Gluon Trainer with
per-parameter lr/wd multipliers, atomic released-format checkpoints with the trainer state,
logging, the saved run configuration, and :func:`fit`, the epoch loop (tqdm bars, per-epoch
metrics in CSV/JSON, a loss-curve PNG). The task supplies the loss and accuracy functions.
"""
import csv
import json
import logging
import math
import os
import re
import time

import mxnet as mx
from mxnet import gluon
from tqdm import tqdm

from .atomic import atomic_path, atomic_write_bytes, write_json
from .cli import INTERRUPTED_STATUS
from .gluon_internals import (set_update_counts, trainer_kvstore, trainer_optimizer,
                              trainer_params, trainer_updaters, update_counts, updates_on_kvstore)
from .params import save_arrays, save_params, ParamsError
from .zoo import label_from_weights


class LRSchedule:
    """Learning rate as a function of the 1-based global update index ``n``.

    ``fixed``: ``base_lr``. ``step``: ``base_lr * factor**k`` with k the number of
    ``step_updates`` already reached (``n > s``). ``linear``: ``base_lr * (1 - n/N)``
    (n capped at N = ``total_updates``), floored at ``stop_lr``
    (default ``min(base_lr / 100, 1e-6)``), as the authors' LinearScheduler.
    """

    TYPES = ('fixed', 'step', 'linear')

    def __init__(self, lr_type, base_lr, total_updates=None, step_updates=(), factor=0.1,
                 stop_lr=None):
        if lr_type not in self.TYPES:
            raise ValueError('unknown lr type %r; valid: %s' % (lr_type, ', '.join(self.TYPES)))
        if lr_type == 'linear' and not total_updates:
            raise ValueError('linear lr needs the total number of updates (--to-epoch)')
        self.lr_type, self.base_lr, self.total_updates = lr_type, float(base_lr), total_updates
        self.step_updates, self.factor = sorted(step_updates), factor
        self.stop_lr = min(base_lr / 100.0, 1e-6) if stop_lr is None else stop_lr

    def __call__(self, n):
        if self.lr_type == 'fixed':
            return self.base_lr
        if self.lr_type == 'step':
            return self.base_lr * self.factor ** sum(1 for s in self.step_updates if n > s)
        lr = self.base_lr * (1.0 - float(min(n, self.total_updates)) / self.total_updates)
        return max(lr, self.stop_lr)


def set_lr_wd_mults(net, double_bias_lr):
    """Biases and BatchNorm betas: lr x2 and no weight decay (the authors' 'alex' lr type)."""
    for name, param in net.collect_params().items():
        if double_bias_lr and name.endswith(('_bias', '_beta')):
            param.lr_mult, param.wd_mult = 2.0, 0.0


def make_trainer(net, optimizer, optimizer_params, kvstore='device', num_devices=1):
    """A gluon.Trainer over all trainable parameters of ``net``.

    ``kvstore``: 'local', 'device', 'dist_sync', 'dist_sync_device', 'dist_async'; with one
    device and a non-distributed store no kvstore is used at all.
    """
    from .kvstore import make_kvstore
    store, update_on_kvstore = make_kvstore(kvstore, num_devices)
    params = {k: v for k, v in net.collect_params().items() if v.grad_req != 'null'}
    return gluon.Trainer(params, optimizer, optimizer_params, kvstore=store,
                         update_on_kvstore=update_on_kvstore)


def checkpoint_path(out_dir, label, epoch):
    """``<out_dir>/<label>_ep-%04d.params``, the released naming."""
    return os.path.join(out_dir, '%s_ep-%04d.params' % (label, epoch))


def states_path(params_path):
    """The pickled optimizer state of earlier versions (refused, never read)."""
    return params_path[:-len('.params')] + '.states'


def optimizer_state_paths(params_path):
    """``(<stem>.states.nd, <stem>.states.json)``: momentum buffers keyed by parameter name
    (an NDArray file, ``mx.nd.save`` of a dict) and the counters and settings (JSON)."""
    stem = params_path[:-len('.params')]
    return stem + '.states.nd', stem + '.states.json'


class StateError(ValueError):
    """An optimizer state file that cannot be used; the message names it."""


STATE_FORMAT = 1


def _optimizer_name(optimizer):
    return type(optimizer).__name__.lower()


def _optimizer_settings(optimizer):
    """The hyper-parameters recorded with the state (informative; the configured ones rule)."""
    out = {'wd': float(optimizer.wd), 'rescale_grad': float(optimizer.rescale_grad)}
    if getattr(optimizer, 'momentum', None) is not None:
        out['momentum'] = float(optimizer.momentum)
    return out


def _trainer_params(trainer):
    """``[(name, Parameter)]`` in the trainer's index order."""
    return [(p.name, p) for p in trainer_params(trainer)]


def save_optimizer_state(trainer, params_path, run_id=None):
    """Write the optimizer state of ``trainer`` beside ``params_path`` without pickle.

    ``<stem>.states.nd``: ``{parameter name: momentum buffer}`` (float32, the values of
    the first device; every device holds the same ones). ``<stem>.states.json``: the
    optimizer's registered name, its settings, the update counters, the parameter names
    and shapes, and ``run_id``. Both atomic. Returns False (nothing written) when the
    optimizer runs on the parameter servers (``dist_async``): its state is not here.
    """
    if updates_on_kvstore(trainer):
        return False
    optimizer = trainer_optimizer(trainer)
    updater = trainer_updaters(trainer)[0]
    arrays, names, shapes = {}, [], {}
    for index, (name, param) in enumerate(_trainer_params(trainer)):
        names.append(name)
        shapes[name] = list(param.shape)
        state = updater.states.get(index)
        if state is None:
            continue
        if not isinstance(state, mx.nd.NDArray):
            raise TypeError('optimizer %s keeps a %s per parameter; only single arrays can be '
                            'stored' % (_optimizer_name(optimizer), type(state).__name__))
        arrays[name] = state   # no copy: save_arrays writes GPU arrays one at a time
    first_device = getattr(param.list_ctx()[0], 'device_id', 0) if names else 0
    counts = update_counts(optimizer, first_device)
    meta = {'format': STATE_FORMAT, 'optimizer': _optimizer_name(optimizer),
            'settings': _optimizer_settings(optimizer), 'num_update': int(optimizer.num_update),
            'update_counts': {names[i]: int(c) for i, c in counts.items() if i < len(names)},
            'parameters': names, 'shapes': shapes, 'with_state': sorted(arrays),
            'run_id': run_id}
    nd_path, json_path = optimizer_state_paths(params_path)
    save_arrays(arrays, nd_path)
    write_json(meta, json_path)
    return True


def _read_state_files(trainer, params_path):
    """``(meta, arrays)`` checked against the trainer's parameters; StateError otherwise."""
    nd_path, json_path = optimizer_state_paths(params_path)
    try:
        with open(json_path) as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get('format') != STATE_FORMAT:
            raise ValueError('not an optimizer state of format %d' % STATE_FORMAT)
        list(meta['parameters'])
        with_state = list(meta['with_state'])
        shapes, counts = dict(meta['shapes']), dict(meta['update_counts'])
        int(meta['num_update'])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StateError('%s: unreadable optimizer state (%s)'
                         % (json_path, str(err).splitlines()[0] if str(err) else
                            type(err).__name__)) from None
    try:
        arrays = mx.nd.load(nd_path)
    except (OSError, mx.base.MXNetError) as err:
        lines = [l for l in str(err).splitlines() if l.strip()]
        raise StateError('%s: unreadable NDArray file (%s)'
                         % (nd_path, lines[0] if lines else 'truncated?')) from None
    if arrays == []:  # what mx.nd.save writes for no arrays (momentum 0)
        arrays = {}
    if not isinstance(arrays, dict) or sorted(arrays) != sorted(with_state):
        raise StateError('%s: its arrays do not match %s' % (nd_path, json_path))
    ours = dict(_trainer_params(trainer))
    missing = [n for n in ours if n not in shapes]
    extra = [n for n in shapes if n not in ours]
    if missing or extra:
        raise StateError('%s: optimizer state of another model (%s)' % (
            nd_path, ('no state for parameter %s' % missing[0]) if missing
            else ('unknown parameter %s' % extra[0])))
    for name, param in ours.items():
        want = tuple(param.shape)
        if tuple(shapes[name]) != want or \
                (name in arrays and tuple(arrays[name].shape) != want):
            raise StateError('%s: optimizer state of another model (%s has shape %s, the model '
                             '%s)' % (nd_path, name, tuple(shapes[name]), want))
    for name, count in counts.items():
        if name not in ours or not isinstance(count, int):
            raise StateError('%s: bad update counter for %r' % (json_path, name))
    return meta, arrays


def load_trainer_state(trainer, params_path, logger=None):
    """Restore the momentum buffers and counters saved beside ``params_path``.

    The optimizer itself is the configured one (its learning rate, weight decay and
    momentum are those of the command that resumes); the saved settings are only
    compared and the differences logged. Raises :class:`StateError` (one line naming the
    file) for a state of another model or another optimizer, an unreadable file, or a
    pickled ``.states`` of earlier versions (never unpickled). Returns the saved
    metadata dict, or None when there is no state (momentum starts from zero).
    """
    logger = logger or logging.getLogger('rn38')
    nd_path, json_path = optimizer_state_paths(params_path)
    have_nd, have_json = os.path.isfile(nd_path), os.path.isfile(json_path)
    if not (have_nd or have_json):
        old = states_path(params_path)
        if os.path.isfile(old):
            raise StateError('%s: a pickled optimizer state of an earlier version, not read '
                             '(unpickling can run code); delete it to resume with zero '
                             'momentum' % old)
        logger.info('no optimizer state beside %s: momentum starts from zero', params_path)
        return None
    if not (have_nd and have_json):
        raise StateError('%s: missing (its partner %s exists)'
                         % (json_path if have_nd else nd_path, nd_path if have_nd else json_path))
    trainer_kvstore(trainer)
    meta, arrays = _read_state_files(trainer, params_path)
    optimizer = trainer_optimizer(trainer)
    if meta['optimizer'] != _optimizer_name(optimizer):
        raise StateError('%s: state of optimizer %s, this run uses %s; start a new run (another '
                         '--output or --model label) to change the optimizer'
                         % (json_path, meta['optimizer'], _optimizer_name(optimizer)))
    if updates_on_kvstore(trainer):
        logger.warning('the optimizer runs on the parameter servers: the state in %s is not '
                       'restored, momentum starts from zero', nd_path)
        return meta
    params = _trainer_params(trainer)
    index_of = {name: i for i, (name, _) in enumerate(params)}
    for k, updater in enumerate(trainer_updaters(trainer)):
        for name, value in arrays.items():
            i = index_of[name]
            ctx = params[i][1].list_ctx()[k]
            updater.states[i] = value.as_in_context(ctx).copy() if value.context != ctx \
                else value.copy()
            updater.states_synced[i] = True
    counts = {index_of[n]: c for n, c in meta['update_counts'].items()}
    devices = {getattr(c, 'device_id', 0) for _, p in params for c in p.list_ctx()} or {0}
    set_update_counts(optimizer, counts, devices)
    optimizer.num_update = int(meta['num_update'])
    changed = ['%s %g -> %g' % (k, v, _optimizer_settings(optimizer)[k])
               for k, v in sorted(meta['settings'].items())
               if k in _optimizer_settings(optimizer) and
               _optimizer_settings(optimizer)[k] != v and k != 'rescale_grad']
    logger.info('optimizer state restored from %s (%d momentum buffers)%s', nd_path,
                len(arrays), '; settings of this command: ' + ', '.join(changed)
                if changed else '')
    return meta


def save_checkpoint(net, trainer, out_dir, label, epoch, run_id=None):
    """Write the optimizer state and the weights (released format), each atomically.

    The state goes first: a ``.params`` file present means its checkpoint is complete.
    Returns the ``.params`` path.
    """
    path = checkpoint_path(out_dir, label, epoch)
    os.makedirs(out_dir, exist_ok=True)
    if trainer is not None:
        save_optimizer_state(trainer, path, run_id)
    save_params(net, path)
    return path


def checkpoint_epochs(out_dir, label):
    """``{epoch: .params path}`` of the checkpoints of ``label`` in ``out_dir``."""
    pattern = re.compile(re.escape(label) + r'_ep-(\d{4,})\.params$')
    found = {}
    if os.path.isdir(out_dir):
        for name in os.listdir(out_dir):
            m = pattern.match(name)
            if m:
                found[int(m.group(1))] = os.path.join(out_dir, name)
    return found


def prune_checkpoints(out_dir, label, latest, keep_last=2, keep_epochs=(), logger=None):
    """Disk retention after checkpoint ``latest`` was written.

    Keeps the ``keep_last`` newest checkpoints up to ``latest`` (0: all), every epoch in
    ``keep_epochs`` and ``<label>_best.params``; the optimizer state only beside
    ``latest``. Checkpoints after ``latest`` (of a run resumed from an earlier one) are
    left alone. Returns the removed paths.
    """
    removed = []
    epochs = checkpoint_epochs(out_dir, label)
    older = sorted(e for e in epochs if e <= latest)
    keep = set(keep_epochs) | {latest}
    if keep_last > 0:
        keep |= set(older[-keep_last:])
    else:
        keep |= set(older)
    for epoch in older:
        path = epochs[epoch]
        doomed = [] if epoch == latest else list(optimizer_state_paths(path)) + \
            [states_path(path)]
        if epoch not in keep:
            doomed.append(path)
        for p in doomed:
            if os.path.isfile(p):
                os.remove(p)
                removed.append(p)
    if removed and logger:
        logger.info('removed %s', ', '.join(os.path.basename(p) for p in removed))
    return removed


class RunFolderError(ValueError):
    """The output folder is in use by another run or holds another run's checkpoints."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; the message names the last complete checkpoint.
    The entries print it as one line and exit with status 130 (128 + SIGINT)."""
    exit_status = INTERRUPTED_STATUS


class OutputLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/train.lock`` for the life of a run.

    The file records the holder (pid, host, start time). The kernel drops the lock when
    its process dies, however it dies; a lock file still naming a holder then means that
    holder ended without releasing it, and the next run takes it over with a warning.
    """

    NAME = 'train.lock'

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, self.NAME)
        self._fd = None

    def _holder(self, fd):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode('utf-8', 'replace').strip()
        try:
            holder = json.loads(text) if text else None
        except ValueError:
            holder = {'pid': '?', 'host': '?', 'started': text[:40]}
        return holder if isinstance(holder, dict) or holder is None else {'pid': '?'}

    def acquire(self, logger=None):
        import fcntl
        import socket
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder(fd) or {}
            os.close(fd)
            raise RunFolderError(
                '--output %s: another run is training into this folder (pid %s on %s, '
                'started %s); wait for it to end or use another --output'
                % (self.folder, holder.get('pid', '?'), holder.get('host', '?'),
                   holder.get('started', '?'))) from None
        stale = self._holder(fd)
        if stale and logger:
            logger.warning('%s: taking over the lock of pid %s on %s (started %s), which '
                           'ended without releasing it', self.path, stale.get('pid', '?'),
                           stale.get('host', '?'), stale.get('started', '?'))
        me = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S')}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode('utf-8'))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self):
        import fcntl
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def run_file(out_dir, label):
    """``<out_dir>/<label>_run.json``: the id of the run whose checkpoints the folder holds."""
    return os.path.join(out_dir, '%s_run.json' % label)


def _read_run_id(path):
    try:
        with open(path) as f:
            value = json.load(f).get('run_id')
        return value if isinstance(value, str) else None
    except (OSError, ValueError, AttributeError):
        return None


class _NoLock:
    def release(self):
        pass


def claim_output(out_dir, label, from_epoch, weights=None, logger=None, distributed=False):
    """Take the output folder for a run of ``label`` starting after epoch ``from_epoch``.

    Locks the folder (:class:`OutputLock`), removes temporary files left by killed
    writers, and makes sure the checkpoints already there belong to this run: a new run
    (``from_epoch`` 0) needs a folder without checkpoints of ``label``; a resumed one must
    continue the run recorded in ``<label>_run.json`` (its id is saved with every
    optimizer state). Raises :class:`RunFolderError`. Returns ``(lock, run_id)``; call
    ``lock.release()`` at the end.

    ``distributed``: a worker of a ``dist_*`` kvstore run, whose workers may share the
    folder (one machine, or a shared file system): no lock, no clean-up, no run id.
    """
    import uuid
    from .atomic import remove_stale_temporaries
    logger = logger or logging.getLogger('rn38')
    if distributed:
        logger.info('distributed worker: %s is not locked (workers may share it)', out_dir)
        return _NoLock(), None
    lock = OutputLock(out_dir).acquire(logger)
    try:
        removed = remove_stale_temporaries(out_dir)
        if removed:
            logger.warning('removed temporary files of killed writers: %s',
                           ', '.join(os.path.basename(p) for p in removed))
        existing = checkpoint_epochs(out_dir, label)
        folder_run = _read_run_id(run_file(out_dir, label))
        listing = ', '.join(os.path.basename(existing[e]) for e in sorted(existing)[:2]) + \
            (', ...' if len(existing) > 2 else '')
        hint = ('write this run into another --output or give it another --model label '
                '(or resume that run with --weights %s)'
                % (existing[max(existing)] if existing else ''))
        if from_epoch == 0:
            if existing:
                raise RunFolderError('--output %s holds checkpoints of another run of %s (%s); %s'
                                     % (out_dir, label, listing, hint))
            run_id = uuid.uuid4().hex
        else:
            weights_run = None
            if weights:
                weights_run = _read_run_id(optimizer_state_paths(weights)[1]) \
                    if weights.endswith('.params') else None
                inside = os.path.dirname(os.path.realpath(weights)) == os.path.realpath(out_dir)
                if weights_run is None and inside:
                    weights_run = folder_run
            if existing and folder_run and weights_run != folder_run:
                raise RunFolderError('--output %s holds checkpoints of another run of %s (%s) '
                                     'than the one %s continues; %s'
                                     % (out_dir, label, listing, weights, hint))
            run_id = weights_run or folder_run or uuid.uuid4().hex
        write_json({'run_id': run_id, 'label': label, 'from_epoch': from_epoch,
                    'weights': os.path.abspath(weights) if weights else None},
                   run_file(out_dir, label))
    except BaseException:
        lock.release()
        raise
    return lock, run_id


def interrupted(out_dir, label):
    """The :class:`TrainingInterrupted` to raise on Ctrl-C: names the last checkpoint."""
    epochs = checkpoint_epochs(out_dir, label)
    if not epochs:
        return TrainingInterrupted('interrupted before the first checkpoint of %s; nothing '
                                   'to resume in %s' % (label, out_dir))
    last = epochs[max(epochs)]
    return TrainingInterrupted('interrupted; last complete checkpoint: %s (resume with '
                               '--weights %s)' % (last, last))


def resume_epoch(weights, label):
    """Epoch to continue from for ``--weights``: parsed from ``<label>_ep-N.params`` when the
    file is a checkpoint of the model being trained, else 0 (a pre-trained start)."""
    if weights is None:
        return 0
    try:
        file_label, epoch = label_from_weights(weights)
    except ValueError:
        return 0
    return epoch if file_label == label else 0


def setup_logging(log_file=None, debug=False, name='rn38'):
    """A logger writing to stderr (through tqdm, so bars stay intact) and ``log_file``.

    stdout is left to results: a run whose stdout is discarded still shows its log.
    """
    import sys
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s')

    class _TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record), file=sys.stderr)

    console = _TqdmHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def save_config(config, path):
    """Save the run's options (a dataclass, an argparse Namespace or a dict) as YAML,
    atomically."""
    import dataclasses
    import yaml
    if dataclasses.is_dataclass(config):
        data = dataclasses.asdict(config)
    else:
        data = dict(vars(config)) if not isinstance(config, dict) else dict(config)
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=True).encode('utf-8'))


def plot_history(history, path, title=''):
    """Loss per update and per-epoch loss/accuracy as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = history.get('updates', [])
    if steps:
        axes[0].plot([s['update'] for s in steps], [s['loss'] for s in steps], lw=0.8,
                     color='tab:blue', alpha=0.6, label='per update')
    epochs = history.get('epochs', [])
    if epochs:
        ends = [e['epoch'] * e['updates'] for e in epochs]
        axes[0].plot(ends, [e['loss'] for e in epochs], 'o-', color='tab:red',
                     label='epoch mean')
        axes[1].plot([e['epoch'] for e in epochs], [e['accuracy'] for e in epochs], 'o-',
                     label='train accuracy')
        for key in ('val_miou', 'val_top1'):
            points = [(e['epoch'], e[key]) for e in epochs if e.get(key) is not None]
            if points:
                axes[1].plot(*zip(*points), 's-', label=key)
    axes[0].set_xlabel('update')
    axes[0].set_ylabel('loss')
    axes[0].legend()
    axes[1].set_xlabel('epoch')
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def peak_memory_mib(ctx):
    """The memory figure of an epoch record, MiB: ``{'peak_rss_mib': ...}``, the peak
    resident set size of this process so far (``ru_maxrss``, Linux KiB), and on GPUs also
    ``'gpu_memory_mib'``: per GPU of ``ctx``, the device memory in use (total - free from
    ``mx.context.gpu_memory_info``). MXNet's pooled GPU allocator keeps what it once
    allocated, so that figure is the pool's high-water mark, i.e. the peak of MXNet's use."""
    import resource
    record = {'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    gpus = [c for c in ctx if c.device_type == 'gpu']
    if gpus:
        used = []
        for c in gpus:
            free, total = mx.context.gpu_memory_info(c.device_id)
            used.append((total - free) / 2.0 ** 20)
        record['gpu_memory_mib'] = used
    return record


def _write_epoch_csv(epochs, path):
    keys = sorted({k for e in epochs for k in e})
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(epochs)


def best_path(out_dir, label):
    return os.path.join(out_dir, '%s_best.params' % label)


def _keep_best(done_epochs, record, metric, path, out_dir, label, logger):
    """Copy checkpoint ``path`` to ``<label>_best.params`` when ``record[metric]`` beats
    every earlier epoch's (ties keep the earlier one)."""
    import shutil
    score = record.get(metric)
    if score is None:
        return
    earlier = [e[metric] for e in done_epochs if e.get(metric) is not None]
    if earlier and score <= max(earlier):
        return
    with atomic_path(best_path(out_dir, label)) as tmp:
        shutil.copyfile(path, tmp)
    record['best'] = True
    if logger:
        logger.info('%s %.4f, the best so far: copied to %s', metric, score,
                    best_path(out_dir, label))


HISTORY_FILES = ('history.json', 'epochs.csv', 'loss_curve.png')


def _set_aside_history(out_dir, label, from_epoch, logger):
    """``history.json``, ``epochs.csv`` and ``loss_curve.png`` describe the folder's
    latest run. When that was a run of another label, its three files are renamed
    ``<its label>_<name>`` (``previous_`` if unknown; a record without a label, of earlier
    versions, counts as this run's when it resumes) so nothing is lost. Returns the path
    of the history of ``label`` (current or set aside earlier), or None."""
    path = os.path.join(out_dir, 'history.json')
    if os.path.isfile(path):
        try:
            with open(path) as f:
                owner = json.load(f).get('label')
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner == label or (owner is None and from_epoch > 0):
            return path
        prefix = owner if isinstance(owner, str) and owner else 'previous'
        for name in HISTORY_FILES:
            src = os.path.join(out_dir, name)
            if os.path.isfile(src):
                os.replace(src, os.path.join(out_dir, '%s_%s' % (prefix, name)))
        logger.info('%s: the records of %s moved to %s_history.json, %s_epochs.csv, '
                    '%s_loss_curve.png', out_dir, prefix, prefix, prefix, prefix)
    aside = os.path.join(out_dir, '%s_history.json' % label)
    return aside if os.path.isfile(aside) else None


def fit(net, loader, trainer, ctx, loss_fn, accuracy_fn, schedule, *, label, out_dir,
        from_epoch, stop_epoch, mirror=False, logger=None, progress=True, seed=0,
        run_id=None, validate=None, val_every=0, val_metric=None, keep_checkpoints=2,
        keep_epochs=()):
    """Train ``net`` from epoch ``from_epoch`` (done epochs) up to ``stop_epoch``.

    loader: a :class:`rn38.loader.BatchLoader`-like object (``len``, ``set_epoch``,
    iteration over ``(data, label)`` numpy batches, ``wait_seconds``).
    loss_fn(scores, label) -> (loss_sum, count) NDArrays; the gradient is normalised as
    :func:`rn38.recompute.forward_backward` says (globally, or per device for a loss with
    ``normalization = 'device'``). accuracy_fn(scores, label) ->
    (correct, total) numbers. schedule(n) -> lr for the 1-based global update n; the lr of
    an update depends only on (epoch, batch index), and MXNet's random generator (dropout)
    is seeded from ``(seed, epoch)``, so a resumed run continues exactly as an
    uninterrupted one (loader draws depend on (seed, epoch, index) too).
    After each epoch: a checkpoint (optimizer state tagged with ``run_id``), every
    ``val_every`` epochs and after the last one ``validate(epoch, checkpoint path) ->
    {name: score}`` (added to the epoch's record; the checkpoint with the highest
    ``val_metric`` so far is copied to ``<label>_best.params``), retention
    (:func:`prune_checkpoints` with ``keep_checkpoints``, ``keep_epochs``),
    ``history.json``, ``epochs.csv``, ``loss_curve.png``.
    Returns the history dict.
    """
    from .devices import split_batch
    from .kvstore import step_scale, sync_initial_params, worker_info
    from .recompute import forward_backward
    from .runtime import return_free_memory
    logger = logger or logging.getLogger('rn38')
    if keep_checkpoints < 0 or val_every < 0:
        raise ValueError('--keep-checkpoints and --val-every take a number >= 0')
    # Distributed: every worker takes its own shard of the data and starts from rank 0's
    # weights; the step divides the workers' summed gradients by their number.
    rank, num_workers = worker_info(trainer)
    if num_workers > 1:
        loader.set_shard(rank, num_workers)
        logger.info('worker %d of %d: %d batches per epoch', rank, num_workers, len(loader))
    sync_initial_params(trainer)
    scale = step_scale(trainer)
    updates_per_epoch = len(loader)
    if updates_per_epoch == 0:
        raise ValueError('no full batch in the training set: fewer images than --batch-images')
    history_path = os.path.join(out_dir, 'history.json')
    history = {'label': label, 'updates': [], 'epochs': []}
    own = _set_aside_history(out_dir, label, from_epoch, logger)
    if from_epoch > 0 and own is not None:
        with open(own) as f:
            old = json.load(f)
        history['updates'] = [u for u in old.get('updates', [])
                              if u['update'] <= from_epoch * updates_per_epoch]
        history['epochs'] = [e for e in old.get('epochs', []) if e['epoch'] <= from_epoch]
    for epoch in range(from_epoch, stop_epoch):
        loader.set_epoch(epoch)
        if seed is not None:
            mx.random.seed(seed * 100003 + epoch)
        loss_sum = count_sum = correct = total = 0.0
        images, start = 0, time.time()
        bar = tqdm(loader, total=updates_per_epoch, desc='epoch %d/%d' % (epoch + 1, stop_epoch),
                   unit='batch', disable=not progress, dynamic_ncols=True)
        for i, (data, target) in enumerate(bar):
            n = epoch * updates_per_epoch + i + 1
            step_start = time.time()
            trainer.set_learning_rate(schedule(n))
            data_list, label_list = split_batch(data, target, ctx)
            batch_loss, batch_count, outputs = forward_backward(
                net, data_list, label_list, loss_fn, mirror=mirror)
            trainer.step(scale)
            loss_sum += batch_loss
            count_sum += batch_count
            for out, lab in zip(outputs, label_list):
                c, t = accuracy_fn(out, lab)
                correct += c
                total += t
            images += len(data)
            step_loss = batch_loss / max(batch_count, 1e-12)
            if not math.isfinite(step_loss):
                raise FloatingPointError('loss is %s at epoch %d, update %d: lower --base-lr'
                                         % (step_loss, epoch + 1, i + 1))
            history['updates'].append({'update': n, 'loss': step_loss, 'lr': trainer.learning_rate,
                                       'seconds': time.time() - step_start})
            wait = getattr(loader, 'wait_seconds', 0.0)
            bar.set_postfix(loss='%.4f' % step_loss, acc='%.3f' % (correct / max(total, 1)),
                            img_s='%.2f' % (images / (time.time() - start)),
                            wait='%.0f%%' % (100.0 * wait / max(time.time() - start, 1e-9)),
                            refresh=False)
        bar.close()
        mx.nd.waitall()
        elapsed = time.time() - start
        wait = getattr(loader, 'wait_seconds', 0.0)
        record = {'epoch': epoch + 1, 'updates': updates_per_epoch,
                  'loss': loss_sum / max(count_sum, 1e-12), 'accuracy': correct / max(total, 1),
                  'lr': trainer.learning_rate, 'seconds': elapsed,
                  'images_per_second': images / elapsed, 'data_wait_seconds': wait}
        record.update(peak_memory_mib(ctx))
        return_free_memory()   # the step's freed activations back to the system
        # The history first: a run killed before the checkpoint is complete resumes from
        # the one before, dropping this record; killed after, it keeps it.
        history['epochs'].append(record)
        write_json(history, history_path)
        path = save_checkpoint(net, trainer, out_dir, label, epoch + 1, run_id)
        if validate is not None and val_every > 0 and \
                ((epoch + 1) % val_every == 0 or epoch + 1 == stop_epoch):
            record.update(validate(epoch + 1, path))
            _keep_best(history['epochs'][:-1], record, val_metric, path, out_dir, label,
                       logger)
            write_json(history, history_path)
        prune_checkpoints(out_dir, label, epoch + 1, keep_checkpoints, keep_epochs, logger)
        _write_epoch_csv(history['epochs'], os.path.join(out_dir, 'epochs.csv'))
        plot_history(history, os.path.join(out_dir, 'loss_curve.png'), label)
        memory = 'peak RSS %.0f MiB' % record['peak_rss_mib']
        if 'gpu_memory_mib' in record:
            memory += ', GPU memory %s MiB' % '/'.join('%.0f' % m for m in record['gpu_memory_mib'])
        logger.info('epoch %d: loss %.4f, accuracy %.4f, lr %.3g, %.2f images/s, data wait '
                    '%.1f s of %.1f s, %s; saved %s', epoch + 1, record['loss'],
                    record['accuracy'], record['lr'], record['images_per_second'], wait, elapsed,
                    memory, path)
    return history


class Recipe:
    """What a task gives :func:`run`: the parts of training that differ between tasks.

    Subclasses set ``label`` (the model label; checkpoints are ``<label>_ep-N.params``),
    ``config_file`` (name of the saved config in ``cfg.output``), ``logger_name``,
    ``optimizer`` (a registered MXNet optimizer name), ``loss`` (``loss(scores, label) ->
    (loss_sum, count)``, see :func:`fit`), ``accuracy`` (``-> (correct, counted)``) and
    ``val_metric``, and implement the methods below that raise NotImplementedError.
    """
    label = None
    config_file = None
    logger_name = 'rn38'
    optimizer = 'sgd'
    loss = accuracy = None
    val_metric = None

    def prepare(self, cfg, from_epoch):
        """Fill in what ``cfg`` leaves to the task and check it, before anything is written."""

    def log_file(self, cfg):
        return cfg.log_file

    def dataset(self, cfg):
        """``(dataset, description)``: the training samples (``dataset[i] -> (data, label)``
        numpy arrays) and how the log names them."""
        raise NotImplementedError

    def build_model(self, cfg, ctx, logger):
        """The network on the devices ``ctx``, loaded from ``cfg.weights`` and initialised
        (MXNet's random generator is seeded from ``cfg.seed`` before)."""
        raise NotImplementedError

    def set_mults(self, net):
        """Per-parameter ``lr_mult`` / ``wd_mult``."""

    def optimizer_params(self, cfg):
        raise NotImplementedError

    def validator(self, cfg, logger):
        """``validate(epoch, checkpoint) -> {name: score}`` for :func:`fit`; called only
        with ``cfg.val_every``, before the first epoch (so a missing held-out split fails
        early)."""
        raise NotImplementedError


def run(recipe, cfg, logger=None):
    """Train ``recipe.label`` with the options ``cfg`` (a config dataclass or Namespace); the
    one training driver of both tasks.

    The steps: MXNet's environment from ``cfg``; the epoch range (``--from-epoch``, else
    parsed from a ``--weights`` checkpoint of the same label; a range already done logs
    "nothing to do" and returns an empty history); logging; the claimed and locked output
    folder (:func:`claim_output`); ``cfg`` saved as ``<output>/<recipe.config_file>``; the
    devices; the loader (shuffled from ``cfg.seed``, full batches, closed at the end); the
    network (``recipe.build_model``), its multipliers, hybridization (``cfg.hybridize``);
    the trainer with the optimizer state of a resumed checkpoint; the schedule; :func:`fit`
    with validation and checkpoint retention. Ctrl-C raises :class:`TrainingInterrupted`
    naming the last checkpoint. Bad input raises ValueError. Returns the history dict.
    """
    from .runtime import configure_mxnet
    configure_mxnet(debug=cfg.debug, mirror=cfg.backward_do_mirror,  # no-op if the entry did
                    training=True)
    label = recipe.label
    from_epoch = cfg.from_epoch if cfg.from_epoch is not None \
        else resume_epoch(cfg.weights, label)
    if from_epoch > 0 and not cfg.weights:
        raise ValueError('--from-epoch %d needs --weights, the checkpoint of epoch %d'
                         % (from_epoch, from_epoch))
    if not cfg.to_epoch:
        raise ValueError('training needs --to-epoch (the epochs the schedule spans)')
    stop_epoch = cfg.stop_epoch or cfg.to_epoch
    recipe.prepare(cfg, from_epoch)
    os.makedirs(cfg.output, exist_ok=True)
    logger = logger or setup_logging(recipe.log_file(cfg), cfg.debug, name=recipe.logger_name)
    if stop_epoch > cfg.to_epoch:  # the schedule's end is reached: its last rate goes on
        logger.warning('--stop-epoch %d is beyond --to-epoch %d, the end of the schedule',
                       stop_epoch, cfg.to_epoch)
    if from_epoch >= stop_epoch:
        logger.info('nothing to do: epoch %d reached (stop epoch %d)', from_epoch, stop_epoch)
        return {'label': label, 'updates': [], 'epochs': []}
    lock, run_id = claim_output(cfg.output, label, from_epoch, cfg.weights, logger,
                                distributed=cfg.kvstore.startswith('dist'))
    try:
        return _run_locked(recipe, cfg, from_epoch, stop_epoch, run_id, logger)
    except KeyboardInterrupt:
        raise interrupted(cfg.output, label) from None
    finally:
        lock.release()


def _run_locked(recipe, cfg, from_epoch, stop_epoch, run_id, logger):
    from .loader import BatchLoader
    from .devices import parse_devices
    from .recompute import hybridize_for_training
    save_config(cfg, os.path.join(cfg.output, recipe.config_file))
    ctx = parse_devices(cfg.gpus)
    if getattr(recipe.loss, 'normalization', None) == 'device' and cfg.batch_images % len(ctx):
        raise ValueError('--batch-images %d does not split evenly over %d devices'
                         % (cfg.batch_images, len(ctx)))
    validate = recipe.validator(cfg, logger) if cfg.val_every else None
    dataset, source = recipe.dataset(cfg)
    loader = BatchLoader(dataset, cfg.batch_images, shuffle=True, seed=cfg.seed,
                         workers=cfg.prefetch_threads, mode=cfg.prefetcher, drop_last=True)
    try:
        if len(loader) == 0:
            raise ValueError('--batch-images %d is larger than the %d images of %s: not one '
                             'full batch per epoch' % (cfg.batch_images, len(dataset), source))
        logger.info('%d training images from %s, %d batches of %d per epoch', len(dataset),
                    source, len(loader), cfg.batch_images)
        mx.random.seed(cfg.seed)  # new layers' initial values
        net = recipe.build_model(cfg, ctx, logger)
        recipe.set_mults(net)
        if cfg.hybridize:
            hybridize_for_training(net)
        trainer = make_trainer(net, recipe.optimizer, recipe.optimizer_params(cfg),
                               cfg.kvstore, len(ctx))
        if from_epoch > 0:
            load_trainer_state(trainer, cfg.weights, logger)
        schedule = LRSchedule(cfg.lr_type, cfg.base_lr, total_updates=cfg.to_epoch * len(loader),
                              step_updates=[int(s) for s in cfg.lr_steps],
                              factor=cfg.lr_factor)
        logger.info('%s: epochs %d -> %d of %d, lr %s from %g, devices %s, kvstore %s%s',
                    recipe.label, from_epoch, stop_epoch, cfg.to_epoch, cfg.lr_type,
                    cfg.base_lr, ctx, cfg.kvstore, ', recomputing segments in backward'
                    if cfg.backward_do_mirror else '')
        return fit(net, loader, trainer, ctx, recipe.loss, recipe.accuracy, schedule,
                   label=recipe.label, out_dir=cfg.output, from_epoch=from_epoch,
                   stop_epoch=stop_epoch, mirror=cfg.backward_do_mirror, logger=logger,
                   progress=cfg.progress, seed=cfg.seed, run_id=run_id, validate=validate,
                   val_every=cfg.val_every, val_metric=recipe.val_metric,
                   keep_checkpoints=cfg.keep_checkpoints, keep_epochs=tuple(cfg.keep_epochs))
    finally:
        loader.close()


__all__ = ['LRSchedule', 'set_lr_wd_mults', 'make_trainer', 'checkpoint_path',
           'save_checkpoint', 'load_trainer_state', 'save_optimizer_state', 'StateError',
           'prune_checkpoints', 'claim_output', 'OutputLock', 'RunFolderError',
           'TrainingInterrupted', 'interrupted', 'resume_epoch', 'setup_logging',
           'write_json', 'save_config', 'plot_history', 'fit', 'ParamsError', 'Recipe', 'run']
