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
import time

import mxnet as mx
from mxnet import gluon
from tqdm import tqdm

from .atomic import atomic_path, atomic_write_bytes, write_json
from .params import save_params, ParamsError
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
    from .parallel import make_kvstore
    store, update_on_kvstore = make_kvstore(kvstore, num_devices)
    params = {k: v for k, v in net.collect_params().items() if v.grad_req != 'null'}
    return gluon.Trainer(params, optimizer, optimizer_params, kvstore=store,
                         update_on_kvstore=update_on_kvstore)


def checkpoint_path(out_dir, label, epoch):
    """``<out_dir>/<label>_ep-%04d.params``, the released naming."""
    return os.path.join(out_dir, '%s_ep-%04d.params' % (label, epoch))


def states_path(params_path):
    return params_path[:-len('.params')] + '.states'


def save_checkpoint(net, trainer, out_dir, label, epoch):
    """Write the weights (released format) and the trainer state, each atomically.

    The state goes first: a ``.params`` file present means its checkpoint is complete.
    Returns the ``.params`` path.
    """
    path = checkpoint_path(out_dir, label, epoch)
    os.makedirs(out_dir, exist_ok=True)
    if trainer is not None:
        with atomic_path(states_path(path)) as tmp:
            trainer.save_states(tmp)
    save_params(net, path)
    return path


def load_trainer_state(trainer, params_path, logger=None):
    """Restore the optimizer state saved beside ``params_path`` if there is one."""
    path = states_path(params_path)
    if os.path.isfile(path):
        trainer.load_states(path)
        if logger:
            logger.info('optimizer state restored from %s', path)
        return True
    if logger:
        logger.info('no optimizer state beside %s: momentum starts from zero', params_path)
    return False


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
    """A logger writing to stderr (through tqdm, so bars stay intact) and ``log_file``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s')

    class _TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record))

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
    """Save the run's options (an argparse Namespace or dict) as YAML, atomically."""
    import yaml
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


def fit(net, loader, trainer, ctx, loss_fn, accuracy_fn, schedule, *, label, out_dir,
        from_epoch, stop_epoch, mirror=False, logger=None, on_epoch_end=None, progress=True,
        seed=0):
    """Train ``net`` from epoch ``from_epoch`` (done epochs) up to ``stop_epoch``.

    loader: a :class:`rn38.loader.BatchLoader`-like object (``len``, ``set_epoch``,
    iteration over ``(data, label)`` numpy batches, ``wait_seconds``).
    loss_fn(scores, label) -> (loss_sum, count) NDArrays; the gradient is that of
    ``sum(loss_sum) / sum(count)`` over devices. accuracy_fn(scores, label) ->
    (correct, total) numbers. schedule(n) -> lr for the 1-based global update n; the lr of
    an update depends only on (epoch, batch index), and MXNet's random generator (dropout)
    is seeded from ``(seed, epoch)``, so a resumed run continues exactly as an
    uninterrupted one (loader draws depend on (seed, epoch, index) too).
    After each epoch: a checkpoint, ``history.json``, ``epochs.csv``, ``loss_curve.png``,
    and ``on_epoch_end(epoch, record)`` (may add e.g. validation scores to ``record``).
    Returns the history dict.
    """
    from .parallel import (forward_backward, release_freed_memory_early, return_free_memory,
                           split_batch, step_scale, sync_initial_params, worker_info)
    logger = logger or logging.getLogger('rn38')
    # Distributed: every worker takes its own shard of the data and starts from rank 0's
    # weights; the step divides the workers' summed gradients by their number.
    rank, num_workers = worker_info(trainer)
    if num_workers > 1:
        loader.set_shard(rank, num_workers)
        logger.info('worker %d of %d: %d batches per epoch', rank, num_workers, len(loader))
    sync_initial_params(trainer)
    scale = step_scale(trainer)
    if mirror:
        release_freed_memory_early()
    updates_per_epoch = len(loader)
    if updates_per_epoch == 0:
        raise ValueError('no full batch in the training set: fewer images than --batch-images')
    history_path = os.path.join(out_dir, 'history.json')
    history = {'updates': [], 'epochs': []}
    if from_epoch > 0 and os.path.isfile(history_path):
        with open(history_path) as f:
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
        return_free_memory()   # the step's freed activations, before the checkpoint's buffers
        path = save_checkpoint(net, trainer, out_dir, label, epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
        history['epochs'].append(record)
        write_json(history, history_path)
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


__all__ = ['LRSchedule', 'set_lr_wd_mults', 'make_trainer', 'checkpoint_path',
           'save_checkpoint', 'load_trainer_state', 'resume_epoch', 'setup_logging',
           'write_json', 'save_config', 'plot_history', 'fit', 'ParamsError']
