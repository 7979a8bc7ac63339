"""Segmentation training: the bootstrapped softmax loss and the :class:`SegmentationRecipe`
that :func:`train` (one config in) hands to the shared driver :func:`rn38.train.run`.

The recipe is the authors': BatchNorm statistics frozen (gamma and beta trained; ``--bn-stats
batch`` learns them instead, for training from scratch), biases
and betas with lr x2 and no weight decay, SGD with momentum 0.9, new layers Xavier
(gaussian, fan-in, magnitude 2), the loss keeping the hard pixels of each batch.
"""
import os

import mxnet as mx
import numpy as np

from rn38 import zoo
from rn38.train import Recipe, run, set_lr_wd_mults

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


class SegmentationRecipe(Recipe):
    """The segmentation parts of :func:`rn38.train.run` (the authors' recipe, see the
    module docstring); ``cfg`` the config of :func:`issegm.cli.make_config`."""
    logger_name = 'rn38'
    optimizer = 'sgd'
    accuracy = staticmethod(pixel_accuracy)
    val_metric = 'val_miou'

    def __init__(self, cfg):
        self.label = cfg.model
        self.config_file = '%s_train_config.yaml' % cfg.model
        self.spec_model = zoo.parse_label(cfg.model)
        self.spec = spec_from_config(cfg)
        if self.spec_model.classes != self.spec.classes:
            raise ValueError('model %s has %d classes but dataset %s has %d'
                             % (cfg.model, self.spec_model.classes, self.spec.name,
                                self.spec.classes))
        # 'softmax': a threshold of 1 keeps every labelled pixel (plain cross-entropy)
        self.loss = BootstrappedSoftmaxLoss() if getattr(cfg, 'loss', 'ohem') == 'ohem' \
            else BootstrappedSoftmaxLoss(thresh=1.0, min_kept=0)

    def dataset(self, cfg):
        image_norm = getattr(cfg, 'image_norm', 'imagenet')
        mean, std = mean_std(image_norm)
        transform = SegTrainTransform(cfg.crop_size, self.spec_model.feat_stride,
                                      cfg.origin_size, cfg.scale_rate_range, mean=mean, std=std)
        if image_norm == 'per-image':
            transform = PerImageTrainTransform(transform)
        samples = list_samples(self.spec, cfg.data_root, cfg.split)
        dataset = SegTrainDataset(self.spec, samples, transform, cache_images=cfg.cache_images)
        return dataset, '%s (split %s), crop %d' % (cfg.data_root, cfg.split,
                                                   transform.crop_size)

    def build_model(self, cfg, ctx, logger):
        net = zoo.get_model(cfg.model, 'segmentation', pretrained=cfg.weights, ctx=ctx,
                            bn_stats=cfg.bn_stats, **model_options(cfg))
        if net.load_report is not None:
            r = net.load_report
            logger.info('weights %s: %d arrays loaded, %d initialised anew (%s), %d ignored '
                        '(%s)', cfg.weights, len(r['loaded']), len(r['skipped']),
                        ', '.join(r['skipped']) or '-', len(r['ignored']),
                        ', '.join(r['ignored']) or '-')
        return net

    def set_mults(self, net):
        set_lr_wd_mults(net, double_bias_lr=True)

    def optimizer_params(self, cfg):
        return {'learning_rate': cfg.base_lr, 'momentum': cfg.momentum,
                'wd': cfg.weight_decay}

    def validator(self, cfg, logger):
        return segmentation_validator(cfg, logger)


def train(cfg, logger=None):
    """Train ``cfg.model`` on ``cfg.data_root``/``cfg.split``; see issegm.cli for options.

    Returns the history dict of :func:`rn38.train.fit`.
    """
    return run(SegmentationRecipe(cfg), cfg, logger)


def segmentation_validator(cfg, logger):
    """``validate(epoch, checkpoint) -> {'val_miou': mean IoU (0..1)}`` for
    :func:`rn38.train.fit`: the ``--phase val`` protocol (:func:`issegm.evaluate.run_val`
    with the run's ``--test-scales``, ``--test-flipping``, ``--test-steps``) on
    ``--val-split``, results in ``<output>/val/<checkpoint stem>/`` (scores only)."""
    import dataclasses
    import shutil
    from .evaluate import run_val, val_output_dir
    held_out = list_samples(spec_from_config(cfg), cfg.data_root, cfg.val_split)
    if not any(label for _, label in held_out):  # checked before the first epoch
        raise ValueError('--val-every: split %s of %s has no ground truth to score'
                         % (cfg.val_split, cfg.data_root))

    def validate(epoch, checkpoint):
        val_cfg = dataclasses.replace(cfg, phase='val', weights=checkpoint, split=cfg.val_split,
                                      output=os.path.join(cfg.output, 'val'),
                                      save_results=False, save_predictions=False,
                                      official_eval=False)
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
