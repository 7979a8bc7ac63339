"""Segmentation training: the bootstrapped softmax loss and :func:`train` (one config in).

The recipe is the authors': BatchNorm statistics frozen (gamma and beta trained; ``--bn-stats
batch`` learns them instead, for training from scratch), biases
and betas with lr x2 and no weight decay, SGD with momentum 0.9, new layers Xavier
(gaussian, fan-in, magnitude 2), the loss keeping the hard pixels of each batch.
"""
import os

import mxnet as mx
import numpy as np

from rn38 import zoo
from rn38.devices import parse_devices
from rn38.loader import BatchLoader
from rn38.recompute import hybridize_for_training
from rn38.runtime import configure_mxnet
from rn38.train import (LRSchedule, claim_output, fit, interrupted, load_trainer_state,
                        make_trainer, resume_epoch, save_config, set_lr_wd_mults,
                        setup_logging)

from .datasets import IGNORE_LABEL, list_samples, spec_from_config
from .image_norm import PerImageTrainTransform, mean_std
from .transforms import SegTrainDataset, SegTrainTransform


class BootstrappedSoftmaxLoss:
    """Softmax cross-entropy over the hard pixels of a batch (the authors' ``ohem_softmax``).

    Pixels labelled ``ignore_label`` never count. Of the others, those whose probability
    of the true class is ``<= thresh`` are kept; if fewer than ``min_kept``, the
    ``min_kept`` lowest-probability pixels are kept instead (all valid pixels if fewer).
    ``__call__(scores (N, C, h, w), label (N, h*w)) -> (loss_sum, kept)``: NDArray
    scalars; the loss of the batch is ``loss_sum / kept``.

    Called once per device on its slice of the batch, as the authors' OHEM softmax runs on
    each device: the hard pixels are chosen per device, each device's gradient is divided
    by its own ``kept`` and the devices are averaged (``normalization = 'device'``, see
    :func:`rn38.recompute.forward_backward`).
    """

    normalization = 'device'

    def __init__(self, thresh=0.6, min_kept=256, ignore_label=IGNORE_LABEL):
        self.thresh, self.min_kept, self.ignore_label = thresh, min_kept, ignore_label

    def keep_mask(self, prob_true, valid):
        """Float mask (same shape) of the pixels to keep; ``prob_true`` numpy float."""
        valid = valid.astype(bool)
        keep = valid & (prob_true <= self.thresh)
        n_valid = int(valid.sum())
        if keep.sum() < min(self.min_kept, n_valid):
            kth = np.partition(prob_true[valid], self.min_kept - 1)[self.min_kept - 1] \
                if n_valid > self.min_kept else np.inf
            keep = valid & (prob_true <= max(kth, self.thresh))
        return keep.astype(np.float32)

    def __call__(self, scores, label):
        n, c = scores.shape[:2]
        log_prob = mx.nd.log_softmax(scores.reshape((n, c, -1)), axis=1)
        label = label.reshape((n, -1))
        valid = label != self.ignore_label
        log_prob_true = mx.nd.pick(log_prob, mx.nd.where(valid, label, mx.nd.zeros_like(label)),
                                   axis=1)
        keep = self.keep_mask(mx.nd.exp(log_prob_true).asnumpy(), valid.asnumpy())
        keep = mx.nd.array(keep, ctx=scores.context)
        return -(log_prob_true * keep).sum(), keep.sum()


def pixel_accuracy(scores, label, ignore_label=IGNORE_LABEL):
    """``(correct, counted)`` pixels of ``scores (N, C, h, w)`` against ``label (N, h*w)``."""
    pred = scores.argmax(axis=1).reshape((scores.shape[0], -1)).asnumpy()
    label = label.reshape((scores.shape[0], -1)).asnumpy()
    valid = label != ignore_label
    return int(((pred == label) & valid).sum()), int(valid.sum())


def model_options(cfg):
    """Network options of the config for :func:`rn38.zoo.build_model` (ResNet-38 head)."""
    return {'head': getattr(cfg, 'head', '2conv')} if zoo.parse_label(cfg.model).family == 'rna' \
        else {}


def train(cfg, logger=None):
    """Train ``cfg.model`` on ``cfg.data_root``/``cfg.split``; see issegm.cli for options.

    Returns the history dict of :func:`rn38.train.fit`.
    """
    configure_mxnet(debug=cfg.debug, mirror=cfg.backward_do_mirror)  # no-op if the entry did
    spec_model = zoo.parse_label(cfg.model)
    spec = spec_from_config(cfg)
    if spec_model.classes != spec.classes:
        raise ValueError('model %s has %d classes but dataset %s has %d'
                         % (cfg.model, spec_model.classes, spec.name, spec.classes))
    from_epoch = cfg.from_epoch if cfg.from_epoch is not None \
        else resume_epoch(cfg.weights, cfg.model)
    if from_epoch > 0 and not cfg.weights:
        raise ValueError('--from-epoch %d needs --weights, the checkpoint of epoch %d'
                         % (from_epoch, from_epoch))
    os.makedirs(cfg.output, exist_ok=True)
    logger = logger or setup_logging(cfg.log_file, cfg.debug)
    lock, run_id = claim_output(cfg.output, cfg.model, from_epoch, cfg.weights, logger,
                                distributed=cfg.kvstore.startswith('dist'))
    try:
        return _train_locked(cfg, spec, spec_model, from_epoch, run_id, logger)
    except KeyboardInterrupt:
        raise interrupted(cfg.output, cfg.model) from None
    finally:
        lock.release()


def segmentation_validator(cfg, logger):
    """``validate(epoch, checkpoint) -> {'val_miou': mean IoU (0..1)}`` for
    :func:`rn38.train.fit`: the ``--phase val`` protocol (:func:`issegm.evaluate.run_val`
    with the run's ``--test-scales``, ``--test-flipping``, ``--test-steps``) on
    ``--val-split``, results in ``<output>/val/<checkpoint stem>/`` (scores only)."""
    import argparse
    import shutil
    from .evaluate import run_val, val_output_dir
    held_out = list_samples(spec_from_config(cfg), cfg.data_root, cfg.val_split)
    if not any(label for _, label in held_out):  # checked before the first epoch
        raise ValueError('--val-every: split %s of %s has no ground truth to score'
                         % (cfg.val_split, cfg.data_root))

    def validate(epoch, checkpoint):
        val_cfg = argparse.Namespace(**vars(cfg))
        val_cfg.phase, val_cfg.weights, val_cfg.split = 'val', checkpoint, cfg.val_split
        val_cfg.output = os.path.join(cfg.output, 'val')
        val_cfg.save_results = val_cfg.save_predictions = val_cfg.official_eval = False
        out_dir = val_output_dir(val_cfg.output, checkpoint, val_cfg.split)
        if os.path.isdir(out_dir):  # of an earlier, interrupted attempt at this epoch
            shutil.rmtree(out_dir)
        summary = run_val(val_cfg, logger)
        # per-image records only serve to resume an interrupted evaluation; this one is
        # redone from scratch if interrupted, and ~500 files per validation add up
        shutil.rmtree(os.path.join(out_dir, 'counts'), ignore_errors=True)
        logger.info('epoch %d on %s: mean IoU %.2f%%', epoch, cfg.val_split,
                    100 * summary['mean_iou'])
        return {'val_miou': summary['mean_iou']}
    return validate


def _train_locked(cfg, spec, spec_model, from_epoch, run_id, logger):
    save_config(cfg, os.path.join(cfg.output, '%s_train_config.yaml' % cfg.model))
    ctx = parse_devices(cfg.gpus)
    if cfg.batch_images % len(ctx):
        raise ValueError('--batch-images %d does not split evenly over %d devices'
                         % (cfg.batch_images, len(ctx)))

    image_norm = getattr(cfg, 'image_norm', 'imagenet')
    mean, std = mean_std(image_norm)
    transform = SegTrainTransform(cfg.crop_size, spec_model.feat_stride, cfg.origin_size,
                                  cfg.scale_rate_range, mean=mean, std=std)
    if image_norm == 'per-image':
        transform = PerImageTrainTransform(transform)
    samples = list_samples(spec, cfg.data_root, cfg.split)
    dataset = SegTrainDataset(spec, samples, transform, cache_images=cfg.cache_images)
    loader = BatchLoader(dataset, cfg.batch_images, shuffle=True, seed=cfg.seed,
                         workers=cfg.prefetch_threads, mode=cfg.prefetcher)
    if len(loader) == 0:
        raise ValueError('--batch-images %d is larger than the %d images of %s (split %s): '
                         'not one full batch per epoch' % (cfg.batch_images, len(dataset),
                                                           cfg.data_root, cfg.split))
    logger.info('%d training images from %s (%s), %d batches of %d per epoch, crop %d',
                len(dataset), cfg.data_root, cfg.split, len(loader), cfg.batch_images,
                transform.crop_size)

    mx.random.seed(cfg.seed)  # new layers' initial values
    net = zoo.get_model(cfg.model, 'segmentation', pretrained=cfg.weights, ctx=ctx,
                        bn_stats=cfg.bn_stats, **model_options(cfg))
    if net.load_report is not None:
        r = net.load_report
        logger.info('weights %s: %d arrays loaded, %d initialised anew (%s), %d ignored (%s)',
                    cfg.weights, len(r['loaded']), len(r['skipped']),
                    ', '.join(r['skipped']) or '-', len(r['ignored']),
                    ', '.join(r['ignored']) or '-')
    set_lr_wd_mults(net, double_bias_lr=True)
    if cfg.hybridize:
        hybridize_for_training(net)

    trainer = make_trainer(net, 'sgd', {'learning_rate': cfg.base_lr, 'momentum': 0.9,
                                        'wd': cfg.weight_decay}, cfg.kvstore, len(ctx))
    updates = len(loader)
    schedule = LRSchedule(cfg.lr_type, cfg.base_lr, total_updates=cfg.to_epoch * updates,
                          step_updates=cfg.lr_steps)
    stop_epoch = cfg.stop_epoch or cfg.to_epoch
    if from_epoch >= stop_epoch:
        logger.info('nothing to do: epoch %d reached (stop epoch %d)', from_epoch, stop_epoch)
        return {'updates': [], 'epochs': []}
    if from_epoch > 0:
        load_trainer_state(trainer, cfg.weights, logger)
    logger.info('epochs %d -> %d of %d, lr %s from %g, devices %s, kvstore %s%s',
                from_epoch, stop_epoch, cfg.to_epoch, cfg.lr_type, cfg.base_lr, ctx,
                cfg.kvstore, ', recomputing segments in backward' if cfg.backward_do_mirror
                else '')
    # 'softmax': a threshold of 1 keeps every labelled pixel (plain cross-entropy)
    criterion = BootstrappedSoftmaxLoss() if getattr(cfg, 'loss', 'ohem') == 'ohem' \
        else BootstrappedSoftmaxLoss(thresh=1.0, min_kept=0)
    try:
        return fit(net, loader, trainer, ctx, criterion, pixel_accuracy, schedule,
                   label=cfg.model, out_dir=cfg.output, from_epoch=from_epoch,
                   stop_epoch=stop_epoch, mirror=cfg.backward_do_mirror, logger=logger,
                   progress=cfg.progress, seed=cfg.seed, run_id=run_id,
                   validate=segmentation_validator(cfg, logger) if cfg.val_every else None,
                   val_every=cfg.val_every, val_metric='val_miou',
                   keep_checkpoints=cfg.keep_checkpoints, keep_epochs=cfg.keep_epochs)
    finally:
        loader.close()
