"""ImageNet classification: validation and training as library functions.

:func:`validate` and :func:`train` take one :class:`Config` (built by ``iclass/ilsvrc.py``
from its command line, or directly by tests and scripts). The shared machinery comes
from :mod:`rn38`: the batch loader (:mod:`rn38.loader`), devices and the multi-device
forward/backward (:mod:`rn38.recompute`), the training driver :func:`rn38.train.run` (to
which :class:`ClassificationRecipe` gives the parts below), schedules, checkpoints, logging
and the epoch loop. What is specific to classification lives here: the torch-style
Nesterov optimizer the authors train with, their initialisation of the classifier,
the loss, and multi-scale / flip / crop averaging of validation predictions with a
per-scale cache.
"""
import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Optional

import numpy as np
import mxnet as mx
from tqdm import tqdm

from rn38 import zoo
from rn38.config import RunConfig
from rn38.train import Recipe

from . import data as cls_data

# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class Config(RunConfig):
    """Everything a validation or training run needs; saved beside its results. The
    options shared with segmentation are in :class:`rn38.config.RunConfig`."""
    phase: str = 'val'
    # validation
    test_scales: tuple = (224,)
    test_flipping: bool = False
    test_3crops: bool = False
    choose_interp_method: bool = True
    pool_top_infer_style: Optional[str] = None
    cache_dtype: str = 'float32'
    # training
    crop_size: int = 224

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def resolve_label(cfg):
    """The model label: ``cfg.model``, else parsed from the weights file name."""
    if cfg.model:
        label = cfg.model
    elif cfg.weights:
        label, _ = zoo.label_from_weights(cfg.weights)
    else:
        raise ValueError('no model: pass --model <label> or --weights <label>_ep-N.params')
    return zoo.parse_label(label)


def _devices(spec):
    from rn38.devices import parse_devices
    return parse_devices(spec)


def _loader(dataset, batch_size, shuffle, seed, cfg, drop_last):
    from rn38.loader import BatchLoader
    return BatchLoader(dataset, batch_size, shuffle=shuffle, seed=seed,
                       workers=cfg.prefetch_threads, mode=cfg.prefetcher,
                       drop_last=drop_last)


def _logger(cfg, default_log):
    from rn38.train import setup_logging
    return setup_logging(cfg.log_file or default_log, cfg.debug, name='iclass')


# ----------------------------------------------------------------------- optimizer


@mx.optimizer.register
class TorchNesterov(mx.optimizer.Optimizer):
    """Nesterov momentum in the torch formulation, the authors' training optimizer.

    For each weight, with ``g = rescale_grad * grad`` (clipped if asked) ``+ wd * w``::

        v = momentum * v + g
        w = w - lr * (g + momentum * v)

    The velocity ``v`` is kept unscaled by the learning rate, so a change of the rate
    (step or linear schedules) applies at once. MXNet's built-in ``nag`` keeps
    ``-lr * v`` instead, which differs as soon as the rate changes.
    Registered as ``'torchnesterov'``.
    """

    def __init__(self, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def create_state(self, index, weight):
        if self.momentum == 0.0:
            return None
        return mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype)

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        g = grad * self.rescale_grad
        if self.clip_gradient is not None:
            g = mx.nd.clip(g, -self.clip_gradient, self.clip_gradient)
        g = g + wd * weight
        if state is not None:
            state[:] = self.momentum * state + g
            g = g + self.momentum * state
        weight[:] = weight - lr * g


def torch_nesterov_reference(weight, grads, lrs, momentum=0.9, wd=0.0):
    """The same update in numpy over a sequence of gradients (for checks and tests)."""
    w = np.array(weight, np.float64)
    v = np.zeros_like(w)
    for g, lr in zip(grads, lrs):
        g = np.asarray(g, np.float64) + wd * w
        v = momentum * v + g
        w = w - lr * (g + momentum * v)
    return w


# ------------------------------------------------------------------ model helpers


def init_classifier(net, seed=None, only=None):
    """Torch-style init of the final FC (weights and bias uniform in +-1/sqrt(fan_in)), as
    the authors' initializer for ``linear*``; the rest keeps Xavier (gaussian, fan-in,
    magnitude 2) from :func:`rn38.zoo.get_model`. ``only``: released keys; the FC
    parameters not among them are left as they are (e.g. loaded)."""
    from rn38.params import released_key
    fc = net.fc
    targets = [p for p in (fc.weight, fc.bias) if only is None or released_key(p.name) in only]
    if not targets:
        return
    if seed is not None:
        mx.random.seed(seed)
    bound = 1.0 / np.sqrt(fc.weight.shape[1])
    for param in targets:
        value = mx.nd.random.uniform(-bound, bound, shape=param.shape)
        param.set_data(value)


def set_authors_wd_mults(net):
    """No weight decay on parameters whose names end neither in ``_weight`` nor ``_gamma``
    (biases, BatchNorm betas): what MXNet's Module, used by the authors, does."""
    for name, param in net.collect_params().items():
        if not name.endswith(('_weight', '_gamma')):
            param.wd_mult = 0.0


def softmax_cross_entropy(scores, label):
    """``(sum of -log softmax(scores)[label], count)`` as NDArrays, the loss of
    :func:`rn38.recompute.forward_backward`."""
    nll = -mx.nd.pick(mx.nd.log_softmax(scores, axis=1), label, axis=1)
    return nll.sum(), mx.nd.array([scores.shape[0]], ctx=scores.context)


def top1_counts(scores, label):
    """``(correct, total)`` of top-1 predictions."""
    correct = (mx.nd.argmax(scores, axis=1) == label.astype('float32')).sum().asscalar()
    return float(correct), int(scores.shape[0])


# ---------------------------------------------------------------------- validation


def topk_errors(probs, labels, ks=(1, 5)):
    """``{'top1_error': %, 'top5_error': %}`` of ``(N, C)`` probabilities against labels."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    order = np.argsort(-probs, axis=1, kind='stable')
    out = {}
    for k in ks:
        hit = (order[:, :min(k, probs.shape[1])] == labels[:, None]).any(axis=1)
        out['top%d_error' % k] = 100.0 * (1.0 - hit.mean())
    return out


def val_save_dir(cfg):
    """``<output>/<weights stem>`` (``_<split>`` appended unless the split is ``val``)."""
    stem = os.path.splitext(os.path.basename(cfg.weights))[0]
    if cfg.split != 'val':
        stem += '_' + cfg.split
    return os.path.join(cfg.output, stem)


def cache_path(save_dir, scale, cfg):
    """The per-scale prediction cache; its name records every option that changes it."""
    name = 'preds_s%d' % scale
    if cfg.test_3crops:
        name += '_3crops'
    if cfg.test_flipping:
        name += '_flip'
    if not cfg.choose_interp_method:
        name += '_bicubic'
    if eval_pool_style(cfg.pool_top_infer_style, cfg.weights) == 'caffe':
        name += '_pool-caffe'
    if cfg.dtype != 'float32':
        name += '_' + cfg.dtype
    if cfg.dtype == 'int8':
        name += '_%s%d' % (cfg.calib_mode, cfg.calib_images)
    return os.path.join(save_dir, name + '.npz')


def _list_digest(split_list, data_root):
    """sha256 of a split: its images (relative paths, sizes, modification times) and
    their class indices, in order."""
    from rn38.checksums import files_digest
    h = hashlib.sha256(files_digest(split_list.images, data_root).encode())
    h.update(','.join(map(str, split_list.labels)).encode())
    return h.hexdigest()


def cache_key(cfg, spec, scale, weights_sha256, list_digest):
    """Everything that determines the cached predictions of one scale, JSON-ready: the
    model, the weights file's content, the data (split list digest), the test options
    and the cache dtype."""
    return {'model': spec.label, 'classes': spec.classes, 'weights_sha256': weights_sha256,
            'split': cfg.split, 'list_sha256': list_digest, 'scale': int(scale),
            'three_crops': bool(cfg.test_3crops), 'flip': bool(cfg.test_flipping),
            'choose_interp_method': bool(cfg.choose_interp_method),
            'pool_style': cfg.pool_top_infer_style, 'dtype': cfg.cache_dtype}


def load_cached(path, key, classes):
    """``(probs, why)``: probabilities ``(N, C)`` float32 of a cache written under ``key``
    and None, or None and why the cache cannot be used."""
    if not os.path.isfile(path):
        return None, 'no cache'
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f['key'])) if 'key' in f.files else None
            if stored != key:
                if stored is None:
                    return None, 'the cache has no key (written by an older version)'
                changed = sorted(k for k in set(stored) | set(key)
                                 if stored.get(k) != key.get(k))
                return None, 'the cache was computed with another ' + ', '.join(changed)
            probs = f['probs']
            if probs.ndim != 2 or probs.shape[1] != classes:
                return None, 'the cache holds %s probabilities' % (probs.shape,)
            return probs.astype(np.float32), None
    except (OSError, ValueError, KeyError) as err:
        return None, 'the cache cannot be read (%s)' % str(err).splitlines()[0]


def save_cached(path, probs, key, dtype):
    """``np.savez`` (no pickle) through a temporary file and an atomic rename; ``key`` is
    stored beside the probabilities as JSON text."""
    from rn38.atomic import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, probs=probs.astype(dtype),
                     key=np.array(json.dumps(key, sort_keys=True)))


def _forward_probs(net, batch, devices):
    """Softmax probabilities of a numpy batch ``(n, 3, s, s)``, split over ``devices``."""
    from rn38.devices import split_batch
    data_list, _ = split_batch(batch, np.zeros(len(batch), np.float32), devices)
    try:
        outs = [mx.nd.softmax(net(x), axis=1).asnumpy() for x in data_list]
    except mx.base.MXNetError as err:
        first = [l for l in str(err).splitlines() if l.strip()][0]
        raise ValueError('the network cannot run on %dx%d crops: %s'
                         % (batch.shape[2], batch.shape[3], first)) from None
    return np.concatenate(outs, axis=0)


def predict_scale(net, split_list, scale, cfg, devices, classes, progress=True, logger=None):
    """Mean softmax probabilities ``(N, C)`` over the crops (and flips) of every image at
    one test scale, in list order."""
    transform = cls_data.EvalTransform(scale, cfg.test_3crops, cfg.choose_interp_method)
    dataset = cls_data.ImageListDataset(split_list, transform)
    loader = _loader(dataset, cfg.batch_images, False, 0, cfg, drop_last=False)
    labels = np.asarray(split_list.labels)
    preds, done, correct, start = [], 0, 0, time.time()
    bar = tqdm(loader, total=len(loader), desc='scale %d' % scale, unit='batch',
               disable=not progress, dynamic_ncols=True)
    for data, _ in bar:
        n, crops = data.shape[:2]
        flat = data.reshape((n * crops,) + data.shape[2:])
        probs = _forward_probs(net, flat, devices).reshape(n, crops, classes).mean(axis=1)
        if cfg.test_flipping:
            flipped = np.ascontiguousarray(flat[..., ::-1])
            probs_f = _forward_probs(net, flipped, devices).reshape(n, crops, classes).mean(1)
            probs = (probs + probs_f) / 2
        preds.append(probs.astype(np.float32))
        correct += int((probs.argmax(axis=1) == labels[done:done + n]).sum())
        done += n
        bar.set_postfix(top1='%.2f%%' % (100.0 * correct / done),
                        img_s='%.1f' % (done / max(time.time() - start, 1e-9)), refresh=False)
    bar.close()
    if logger:
        logger.info('scale %d: %d images in %.1f s', scale, done, time.time() - start)
    return np.concatenate(preds, axis=0)


def validate(cfg, logger=None):
    """Evaluate ``cfg.weights`` on ``cfg.split``: top-1/top-5 error at each test scale and
    with all scales averaged. Writes ``<save dir>/results.json`` and ``config.yaml``,
    caches predictions per scale, and returns the results dict."""
    from rn38.train import write_json, save_config
    if not cfg.weights:
        raise ValueError('--phase val needs --weights')
    spec = resolve_label(cfg)
    cfg.split = cfg.split or 'val'
    cfg.output = cfg.output if cfg.output is not None else \
        (os.path.dirname(cfg.weights) or '.')
    cfg.batch_images = cfg.batch_images or 1
    if cfg.cache_dtype not in ('float16', 'float32'):
        raise ValueError('cache dtype must be float16 or float32, not %r' % cfg.cache_dtype)
    scales = sorted({int(s) for s in cfg.test_scales}, reverse=True)
    # Model A's pools: as given, else as the weights were trained (see eval_pool_style)
    cfg.pool_top_infer_style = eval_pool_style(cfg.pool_top_infer_style, cfg.weights)
    save_dir = val_save_dir(cfg)
    logger = logger or _logger(cfg, save_dir + '.log')
    os.makedirs(save_dir, exist_ok=True)
    save_config(cfg.to_dict(), os.path.join(save_dir, 'config.yaml'))

    dataset = cfg.dataset or spec.dataset
    split_list = cls_data.load_split(cfg.data_root, cfg.split, dataset, spec.classes)
    from rn38.checksums import sha256sum
    digest = _list_digest(split_list, cfg.data_root)
    weights_sha256 = sha256sum(cfg.weights)
    labels = np.asarray(split_list.labels)
    devices = _devices(cfg.gpus)
    from rn38.lowprec import check_dtype
    cfg.dtype = check_dtype(cfg.dtype, devices, logger=logger)
    net = None
    per_scale, preds = {}, []
    for scale in scales:
        path = cache_path(save_dir, scale, cfg)
        key = cache_key(cfg, spec, scale, weights_sha256, digest)
        probs, why = load_cached(path, key, spec.classes)
        if probs is not None:
            logger.info('scale %d: predictions read from %s, skipped', scale, path)
        else:
            if os.path.exists(path):
                logger.info('scale %d: %s not reused: %s; recomputing', scale, path, why)
            if net is None:
                net = _build_eval_net(cfg, spec, devices, scales[0], logger)
            probs = predict_scale(net, split_list, scale, cfg, devices, spec.classes,
                                  cfg.progress, logger)
            save_cached(path, probs, key, cfg.cache_dtype)
            probs, _ = load_cached(path, key, spec.classes)
        preds.append(probs)
        per_scale[str(scale)] = topk_errors(probs, labels)
        logger.info('scale %d: top-1 error %.4f%%, top-5 error %.4f%%', scale,
                    per_scale[str(scale)]['top1_error'], per_scale[str(scale)]['top5_error'])
    combined = topk_errors(np.mean(preds, axis=0), labels)
    results = {'model': spec.label, 'weights': os.path.abspath(cfg.weights),
               'weights_sha256': weights_sha256,
               'split': cfg.split, 'list': split_list.path, 'images': len(split_list),
               'scales': scales, 'flipping': cfg.test_flipping, 'three_crops': cfg.test_3crops,
               'dtype': cfg.dtype,
               'per_scale': per_scale, 'top1_error': combined['top1_error'],
               'top5_error': combined['top5_error']}
    write_json(results, os.path.join(save_dir, 'results.json'))
    logger.info('%s on %s (%d images), scales %s: top-1 error %.4f%%, top-5 error %.4f%%',
                spec.label, cfg.split, len(split_list), scales, results['top1_error'],
                results['top5_error'])
    print('top-1 error %.4f%%  top-5 error %.4f%%  (%s, %d images, scales %s)'
          % (results['top1_error'], results['top5_error'], cfg.split, len(split_list),
             ','.join(map(str, scales))))
    return results


def eval_pool_style(requested, weights):
    """Model A's pool style for evaluating ``weights``: ``requested`` if given, else the one
    recorded by the training run that wrote them (``'caffe'`` for the authors' released
    Model A), else ``'same'`` (:func:`rn38.zoo.default_pool_style`)."""
    if requested:
        return requested
    try:
        label = zoo.label_from_weights(weights)[0]
    except ValueError:
        label = None
    return zoo.default_pool_style(label, weights)


def train_pool_style(requested, weights, resuming):
    """Model A's pool style for training: ``requested`` if given; when resuming a run, the
    style it recorded; else ``'same'`` (pad 1), the authors' choice for a new or tuned
    Model A (their ``pool_top_infer_style=None``)."""
    if requested:
        return requested
    recorded = zoo.recorded_pool_style(weights) if resuming else None
    return recorded or 'same'


def calibration_inputs(cfg, spec, scale):
    """int8 calibration batches: ``cfg.calib_images`` images spread over the ``train``
    list, preprocessed as validation at ``scale`` (centre crop), each ``(1, 3, s, s)``."""
    train_list = cls_data.load_split(cfg.data_root, 'train', cfg.dataset or spec.dataset,
                                     spec.classes)
    transform = cls_data.EvalTransform(scale, False, cfg.choose_interp_method)
    dataset = cls_data.ImageListDataset(train_list, transform)
    step = max(1, len(dataset) // cfg.calib_images)
    indices = list(range(0, len(dataset), step))[:cfg.calib_images]
    names = [os.path.basename(train_list.images[i]) for i in indices]
    return names, lambda: [dataset[i][0][:1] for i in indices]


def _build_eval_net(cfg, spec, devices, scale=224, logger=None):
    import iclass
    from rn38 import lowprec
    net = iclass.get_model(spec.label, pretrained=cfg.weights, ctx=devices,
                           pool_style=cfg.pool_top_infer_style)
    net.hybridize(static_alloc=True)
    if cfg.dtype == 'int8':
        if cfg.calib_images < 1:
            raise ValueError('--calib-images must be at least 1 for --dtype int8')
        names, batches = calibration_inputs(cfg, spec, scale)
        settings = {'calib_images': names, 'calib_scale': scale, 'model': spec.label,
                    'choose_interp_method': cfg.choose_interp_method,
                    'pool_top_infer_style': cfg.pool_top_infer_style}
        net, cfg.dtype = lowprec.lower_precision(net, 'int8', devices, batches, cfg.calib_mode,
                                                 cfg.weights, settings, logger)
    elif cfg.dtype != 'float32':
        net, cfg.dtype = lowprec.lower_precision(net, cfg.dtype, devices, logger=logger)
    return net


# ------------------------------------------------------------------------ training


class ClassificationRecipe(Recipe):
    """The classification parts of :func:`rn38.train.run`: ImageNet lists, random-resized
    crops, the authors' Nesterov optimizer and classifier initialisation, their weight
    decay multipliers, softmax cross-entropy and top-1 accuracy. ``cfg``: a :class:`Config`."""
    logger_name = 'iclass'
    optimizer = 'torchnesterov'
    loss = staticmethod(softmax_cross_entropy)
    accuracy = staticmethod(top1_counts)
    val_metric = 'val_top1'

    def __init__(self, cfg):
        self.spec = resolve_label(cfg)
        self.label = self.spec.label
        self.config_file = self.label + '_config.yaml'

    def prepare(self, cfg, from_epoch):
        cfg.split = cfg.split or 'train'
        cfg.output = cfg.output if cfg.output is not None else 'output'
        cfg.batch_images = cfg.batch_images or 32
        # recorded in <label>_config.yaml, so that evaluation builds the same pools
        cfg.pool_top_infer_style = train_pool_style(cfg.pool_top_infer_style, cfg.weights,
                                                    from_epoch > 0)

    def log_file(self, cfg):
        return cfg.log_file or os.path.join(cfg.output, self.label + '.log')

    def dataset(self, cfg):
        split_list = cls_data.load_split(cfg.data_root, cfg.split,
                                         cfg.dataset or self.spec.dataset, self.spec.classes)
        transform = cls_data.TrainTransform(cfg.crop_size,
                                            choose_interp=cfg.choose_interp_method)
        return cls_data.ImageListDataset(split_list, transform), split_list.path

    def build_model(self, cfg, ctx, logger):
        import iclass
        from rn38.train import resume_epoch
        # 0 = a start from other weights (another label, a Gluon model-zoo ImageNet file):
        # the authors' allow_missing, every matching array is loaded
        same_model = resume_epoch(cfg.weights, self.label) > 0
        net = iclass.get_model(self.label, pretrained=cfg.weights, ctx=ctx,
                               pool_style=cfg.pool_top_infer_style,
                               allow_missing=cfg.weights is not None and not same_model)
        report = net.load_report
        if report is None:
            init_classifier(net, cfg.seed)
        else:
            init_classifier(net, cfg.seed, only=report['skipped'])
            logger.info('weights %s: %d arrays loaded, %d initialised anew (%s; shape '
                        'differs: %s), %d of the file unused (%s)', cfg.weights,
                        len(report['loaded']), len(report['skipped']),
                        ', '.join(report['skipped']) or '-',
                        ', '.join(report['mismatched']) or '-', len(report['ignored']),
                        ', '.join(report['ignored']) or '-')
        return net

    def set_mults(self, net):
        set_authors_wd_mults(net)

    def optimizer_params(self, cfg):
        return {'learning_rate': cfg.base_lr, 'momentum': cfg.momentum, 'wd': cfg.weight_decay}

    def validator(self, cfg, logger):
        return classification_validator(cfg, logger)


def train(cfg, logger=None):
    """Train the classifier ``cfg.model`` (or the label of ``cfg.weights``) on
    ``cfg.split`` with the authors' recipe; resumable from its own checkpoints.
    Returns the history of :func:`rn38.train.fit`."""
    from rn38.train import run
    return run(ClassificationRecipe(cfg), cfg, logger)


def classification_validator(cfg, logger):
    """``validate(epoch, checkpoint) -> {'val_top1', 'val_top5'}`` (accuracies, 0..1) for
    :func:`rn38.train.fit`: :func:`validate` with the run's ``test_*`` options on
    ``cfg.val_split``, results in ``<output>/val/<checkpoint stem>/``."""
    import shutil
    cls_data.load_split(cfg.data_root, cfg.val_split, cfg.dataset or resolve_label(cfg).dataset,
                        resolve_label(cfg).classes)  # a missing list fails before training

    def run(epoch, checkpoint):
        val_cfg = dataclasses.replace(cfg, phase='val', weights=checkpoint, split=cfg.val_split,
                                      output=os.path.join(cfg.output, 'val'))
        save_dir = val_save_dir(val_cfg)
        if os.path.isdir(save_dir):  # caches of an earlier, interrupted attempt
            shutil.rmtree(save_dir)
        res = validate(val_cfg, logger)
        return {'val_top1': 1.0 - res['top1_error'] / 100.0,
                'val_top5': 1.0 - res['top5_error'] / 100.0}
    return run


logging.getLogger('iclass').addHandler(logging.NullHandler())
