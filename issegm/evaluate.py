"""Evaluation of a segmentation predictor over a split: the resumable loop
(:func:`evaluate`, with the result key that decides what may be resumed), segmenting
images without ground truth (:func:`segment_images`) and the ``--phase val`` wiring
(:func:`run_val`). The predictor is :mod:`issegm.predictor`, the files written are
:mod:`issegm.outputs`, the official Cityscapes scoring is :mod:`issegm.official`.
"""
import io
import json
import logging
import os
import time

import cv2
import numpy as np

from rn38.atomic import atomic_write_bytes, write_json
from rn38.image import DataError, read_image

from . import official
from .datasets import read_label
from .metrics import ConfusionMatrix
from .outputs import (correct_map, overlay, plot_class_iou, plot_confusion,
                      prediction_record_bytes, write_label_png, write_rgb_png)
from .predictor import SegPredictor, calibration_inputs, map_over_devices, receptive_radius


def sample_name(image_path):
    """Output stem of a sample: the image file name without extension (for Cityscapes
    ``<city>_<seq>_<frame>_leftImg8bit``, the name the official evaluation matches)."""
    return os.path.splitext(os.path.basename(image_path))[0]


def output_paths(out_dir, name):
    """Where :func:`evaluate` writes the files of sample ``name``.

    ``labels/<name>.png`` raw label ids (the official format), ``color/<name>.png``
    palette colours, ``correct/<name>.png`` the authors' correct map,
    ``probs/<name>.npz`` the stride-level maps
    (:func:`issegm.outputs.prediction_record_bytes`, read back by
    :func:`issegm.outputs.rebuild_prediction`), ``counts/<name>.npz`` the image's
    confusion counts (written last: its presence marks the image done).
    """
    return {'label': os.path.join(out_dir, 'labels', name + '.png'),
            'color': os.path.join(out_dir, 'color', name + '.png'),
            'correct': os.path.join(out_dir, 'correct', name + '.png'),
            'probs': os.path.join(out_dir, 'probs', name + '.npz'),
            'counts': os.path.join(out_dir, 'counts', name + '.npz')}


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _read_counts(path, num_classes):
    """(counts (C, C) int64, has_gt) of a finished image, or None if the file is unusable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            counts, has_gt = f['counts'], bool(f['has_gt'])
    except Exception:  # a damaged record: the image is simply done again
        return None
    if counts.shape != (num_classes, num_classes):
        return None
    return counts.astype(np.int64), has_gt


KEY_FILE = 'key.json'

# What an evaluation folder holds (see :func:`output_paths` and :func:`evaluate`).
_RESULT_ENTRIES = ('counts', 'labels', 'color', 'correct', 'probs', 'summary.json',
                   'confusion.npz', 'class_iou.png', 'confusion.png', 'official.json')


def key_differences(old, new, prefix=''):
    """``['protocol.flip: False -> True', ...]``: the entries in which two keys differ."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else ['%s: %s -> %s' % (prefix or 'key', _short(old),
                                                          _short(new))]
    out = []
    for name in sorted(set(old) | set(new)):
        out += key_differences(old.get(name), new.get(name),
                               '%s.%s' % (prefix, name) if prefix else name)
    return out


def _short(value):
    text = repr(value)
    return text if len(text) <= 20 else text[:12] + '...'


def _check_key(out_dir, key, logger):
    """Make ``out_dir`` hold only results computed under ``key``.

    Results of another key (other settings, model, weights content, split or files), or
    of an unknown one (no readable ``key.json``), are moved into
    ``superseded-<UTC time>/`` with a one-line log saying why; then ``key.json`` is
    written, before any per-image record. Returns True if earlier results may be resumed.
    """
    key_path = os.path.join(out_dir, KEY_FILE)
    old = None
    if os.path.isfile(key_path):
        try:
            with open(key_path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
    present = [n for n in _RESULT_ENTRIES if os.path.exists(os.path.join(out_dir, n))]
    if old == key:
        return True
    if present:
        if old is None:
            why = 'no readable %s (computed by an older version or damaged)' % KEY_FILE
        else:
            why = '; '.join(key_differences(old, key))
        stamp = os.path.join(out_dir, time.strftime('superseded-%Y%m%dT%H%M%S', time.gmtime()))
        aside, n = stamp, 1
        while os.path.exists(aside):
            n += 1
            aside = '%s-%d' % (stamp, n)
        os.makedirs(aside)
        for name in present + ([KEY_FILE] if old is not None else []):
            os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
        logger.warning('earlier results in %s do not match this evaluation (%s): recomputing '
                    'all images; the old ones are in %s', out_dir, why, aside)
    write_json(key, key_path)
    return False


def evaluate(predictor, spec, samples, out_dir, save_results=True, save_predictions=False,
             progress=True, resume=True, plots=True, logger=None, title='', result_key=None):
    """Segment ``samples``, write the results and score them against the ground truth.

    predictor: anything with ``predict_probs(uint8 (H, W, 3)) -> float32 (C, H, W)``
        (e.g. :class:`SegPredictor`), C = ``spec.classes``.
    spec: :class:`issegm.datasets.DatasetSpec`.
    samples: ``[(image_path, label_path or None), ...]`` (``datasets.list_samples``).
    out_dir: output folder, see :func:`output_paths` for the per-image files; also
        ``confusion.npz`` (:class:`ConfusionMatrix` state), ``summary.json`` (written
        atomically), ``class_iou.png`` and ``confusion.png`` (with ground truth).
    save_results: write the label-id, colour and correct PNGs.
    save_predictions: write the stride-level maps
        (:func:`issegm.outputs.prediction_record_bytes`);
        needs a predictor with ``predict_maps`` (:class:`SegPredictor`).
    resume: skip images whose ``counts`` record exists (and whose requested outputs
        exist); their stored counts are added, so totals equal an uninterrupted run.
    result_key: a JSON-ready dict of everything that determines the results (see
        :func:`evaluation_key`), stored as ``key.json``; earlier results under another
        key are set aside (see :func:`_check_key`) and everything is recomputed. None:
        no check (the caller vouches for the folder).

    Memory stays constant: one image per device at a time (images are spread over
    ``predictor.ctx``, see :func:`map_over_devices`; the results do not depend on the
    device count), the confusion counts are accumulated.
    Returns the summary dict (also in ``summary.json``) plus ``'resumed'`` and
    ``'computed'`` (image counts) and ``'timing'``: seconds spent in this call on
    ``read`` (image + ground truth), ``predict`` (all of ``predict_probs``), of which
    ``network`` and ``resize`` when the predictor keeps ``timings``, ``argmax``,
    ``score`` and ``write`` (these three are not written to the summary, which is
    deterministic).
    Bad input raises :class:`DataError` naming the file.
    """
    from tqdm import tqdm
    logger = logger or logging.getLogger(__name__)
    samples = list(samples)
    if not samples:
        raise DataError('%s: no samples to evaluate (empty split)' % out_dir)
    if save_predictions and not hasattr(predictor, 'predict_maps'):
        raise ValueError('save_predictions needs a predictor with predict_maps (SegPredictor)')
    names = [sample_name(image) for image, _ in samples]
    seen = {}
    for (image, _), name in zip(samples, names):
        if name in seen:
            raise DataError('%s: same output name %r as %s' % (image, name, seen[name]))
        seen[name] = image
    os.makedirs(out_dir, exist_ok=True)
    if result_key is not None and not _check_key(out_dir, result_key, logger):
        resume = False

    cm = ConfusionMatrix(spec.classes, spec.ignore_label)
    with_gt = resumed = computed = 0
    predictor_timings = dict(getattr(predictor, 'timings', None) or {})
    timing = {'read': 0.0, 'predict': 0.0, 'argmax': 0.0, 'score': 0.0, 'write': 0.0}
    records = []
    for (image_path, label_path), name in zip(samples, names):
        paths = output_paths(out_dir, name)
        wanted = []
        if save_results:
            wanted += ['label', 'color'] + (['correct'] if label_path else [])
        if save_predictions:
            wanted.append('probs')
        record = None
        if resume and os.path.isfile(paths['counts']) and \
                all(os.path.isfile(paths[k]) for k in wanted):
            record = _read_counts(paths['counts'], spec.classes)
        records.append(record)

    def read_and_predict(device_predictor, sample):
        image_path, label_path = sample
        t0 = time.perf_counter()
        image = read_image(image_path)
        gt = read_label(spec, label_path, image.shape) if label_path else None
        t1 = time.perf_counter()
        if save_predictions:
            probs, maps = device_predictor.predict_maps(image)
        else:
            probs, maps = device_predictor.predict_probs(image), None
        return image, gt, probs, maps, t1 - t0, time.perf_counter() - t1

    predicted = map_over_devices(predictor, read_and_predict,
                                 [sample for sample, record in zip(samples, records)
                                  if record is None])
    bar = tqdm(total=len(samples), unit='img', disable=not progress, dynamic_ncols=True)
    try:
        for (image_path, label_path), name, record in zip(samples, names, records):
            paths = output_paths(out_dir, name)
            if record is not None:
                counts, has_gt = record
                cm.add_counts(counts)
                with_gt += has_gt
                resumed += 1
            else:
                image, gt, probs, maps, read_seconds, predict_seconds = next(predicted)
                if probs.shape != (spec.classes,) + image.shape[:2]:
                    raise ValueError('%s: predictor returned %s, expected %s'
                                     % (image_path, probs.shape,
                                        (spec.classes,) + image.shape[:2]))
                t2 = time.perf_counter()
                t0, t1 = t2 - read_seconds - predict_seconds, t2 - predict_seconds
                pred = probs.argmax(0).astype(np.uint8)
                t3 = time.perf_counter()
                if gt is not None:
                    counts = cm.update(pred, gt)
                    with_gt += 1
                else:
                    counts = np.zeros((spec.classes, spec.classes), np.int64)
                t4 = time.perf_counter()
                if save_results:
                    write_label_png(paths['label'], spec.train_to_label[pred])
                    write_rgb_png(paths['color'], spec.palette[pred])
                    if gt is not None:
                        write_label_png(paths['correct'], correct_map(pred, gt,
                                                                      spec.ignore_label))
                if save_predictions:
                    atomic_write_bytes(paths['probs'], prediction_record_bytes(maps, pred))
                atomic_write_bytes(paths['counts'], _npz_bytes(
                    counts=counts, has_gt=np.array(gt is not None)))
                t5 = time.perf_counter()
                for key, dt in (('read', t1 - t0), ('predict', t2 - t1), ('argmax', t3 - t2),
                                ('score', t4 - t3), ('write', t5 - t4)):
                    timing[key] += dt
                computed += 1
            bar.update(1)
            if with_gt:
                bar.set_postfix(mIoU='%.2f%%' % (100 * cm.mean_iou()), refresh=False)
    finally:
        predicted.close()
        bar.close()

    summary = {'dataset': spec.name, 'images': len(samples), 'images_with_gt': with_gt}
    if result_key is not None:
        summary['key'] = result_key
    if hasattr(predictor, 'describe'):
        summary['protocol'] = predictor.describe()
    if with_gt:
        summary.update(cm.to_dict(spec.class_names))
        cm.save(os.path.join(out_dir, 'confusion.npz'))
        logger.info('%d images, pixel acc %.2f%%, mean class acc %.2f%%, mean IoU %.2f%%',
                    with_gt, 100 * cm.pixel_accuracy(), 100 * cm.mean_class_accuracy(),
                    100 * cm.mean_iou())
        logger.info('per-class scores:\n%s', cm.table(spec.class_names))
        if plots:
            plot_class_iou(cm.class_iou(), spec.class_names,
                           os.path.join(out_dir, 'class_iou.png'), title)
            plot_confusion(cm.matrix, spec.class_names,
                           os.path.join(out_dir, 'confusion.png'), title)
    write_json(summary, os.path.join(out_dir, 'summary.json'))
    if getattr(predictor, 'timings', None):  # this call's share of the predictor's totals
        for key in ('network', 'resize'):
            timing[key] = predictor.timings.get(key, 0.0) - predictor_timings.get(key, 0.0)
    logger.info('%d images computed, %d resumed; seconds: %s', computed, resumed,
                ', '.join('%s %.2f' % kv for kv in sorted(timing.items())))
    result = dict(summary)
    result.update(timing=timing, resumed=resumed, computed=computed)
    return result


def segment_images(predictor, spec, image_paths, out_dir, names=None, alpha=0.5,
                   progress=True, logger=None, failures=None):
    """Segment images without ground truth; for each name writes ``labels/<name>.png``
    (raw label ids), ``color/<name>.png`` (palette) and ``overlay/<name>.png`` (the
    image blended with the colours, weight ``alpha``).

    names: output names (may contain ``/`` for sub-folders); default the file stems.
    failures: None: an unreadable image raises DataError; a list: the image is skipped
    with a one-line warning and ``(image_path, message)`` is appended to it.
    Returns ``[(image_path, label_png_path), ...]`` of the images written.
    """
    from tqdm import tqdm
    logger = logger or logging.getLogger(__name__)
    image_paths = list(image_paths)
    if not image_paths:
        raise DataError('%s: no images to segment' % out_dir)
    names = [sample_name(p) for p in image_paths] if names is None else list(names)
    if len(set(names)) != len(names):
        raise DataError('%s: several inputs share an output name' % out_dir)
    written = []

    def read_and_predict(device_predictor, path):
        try:
            image = read_image(path)
        except (DataError, cv2.error) as err:
            if failures is None:
                raise
            return None, (str(err).strip().splitlines()[0] if isinstance(err, DataError) else
                          '%s: cannot read image (%s)' % (path, str(err).strip().splitlines()[-1]))
        return image, device_predictor.predict_probs(image).argmax(0).astype(np.uint8)

    predicted = map_over_devices(predictor, read_and_predict, image_paths)
    for path, name in tqdm(list(zip(image_paths, names)), unit='img', disable=not progress,
                           dynamic_ncols=True):
        image, pred = next(predicted)
        if image is None:  # pred is the reason
            logger.warning('skipped: %s', pred)
            failures.append((path, pred))
            continue
        color = spec.palette[pred]
        label_path = os.path.join(out_dir, 'labels', name + '.png')
        write_label_png(label_path, spec.train_to_label[pred])
        write_rgb_png(os.path.join(out_dir, 'color', name + '.png'), color)
        write_rgb_png(os.path.join(out_dir, 'overlay', name + '.png'),
                      overlay(image, color, alpha))
        written.append((path, label_path))
    logger.info('segmented %d images into %s', len(written), out_dir)
    return written


def val_output_dir(output, weights, split):
    """The authors' result folder: ``<output>/<weights stem>[_<split> unless val]``."""
    stem = os.path.splitext(os.path.basename(weights))[0]
    return os.path.join(output, stem + ('' if split == 'val' else '_' + split))


def low_precision_net(net, cfg, ctx, spec, logger=None):
    """``net`` run in ``cfg.dtype`` (:func:`rn38.lowprec.lower_precision`); for int8 the
    calibration uses the first ``cfg.calib_images`` images of the ``train`` split of
    ``cfg.data_root`` (every k-th image, spread over the list) at the first test scale,
    padded as ``spec.eval_pad_mode``."""
    from rn38 import lowprec
    from .datasets import list_samples
    if cfg.dtype != 'int8':
        return lowprec.lower_precision(net, cfg.dtype, ctx, logger=logger)
    if cfg.calib_images < 1:
        raise ValueError('--calib-images must be at least 1 for --dtype int8')
    train = [image for image, _ in list_samples(spec, cfg.data_root, 'train')]
    step = max(1, len(train) // cfg.calib_images)
    chosen = train[::step][:cfg.calib_images]
    scale = cfg.test_scales[0]
    pad_mode = spec.eval_pad_mode
    probe = SegPredictor(net, ctx, scales=[scale], pad_mode=pad_mode)
    settings = {'calib_images': [os.path.relpath(p, cfg.data_root) for p in chosen],
                'calib_scale': scale, 'pad_mode': pad_mode, 'model': cfg.model}
    return lowprec.lower_precision(
        net, 'int8', ctx, calib_batches=lambda: calibration_inputs(probe, chosen, scale),
        calib_mode=cfg.calib_mode, weights=cfg.weights, settings=settings, logger=logger)


def evaluation_key(cfg, predictor, samples):
    """Everything that determines the results of ``--phase val``, JSON-ready: the
    protocol settings (:meth:`SegPredictor.describe`), the model label, the sha256 of the
    weights file's content, the dataset, the split and a digest of its files (paths
    relative to the data root, sizes, modification times)."""
    from rn38.checksums import files_digest, sha256sum
    paths = [p for sample in samples for p in sample]
    return {'protocol': predictor.describe(), 'model': cfg.model,
            'weights_sha256': sha256sum(cfg.weights), 'dataset': cfg.dataset,
            'split': cfg.split, 'files': {'samples': len(samples),
                                          'sha256': files_digest(paths, cfg.data_root)}}


def run_val(cfg, logger=None):
    """The ``--phase val`` of the dataset entries: one config in, results on disk.

    Builds ``cfg.model`` with ``cfg.weights`` (strict), evaluates ``cfg.split`` with the
    authors' protocol at ``cfg.test_scales`` (+ flipping, test steps, sliding windows)
    with the dataset spec's ``eval_pad_mode``, writes into :func:`val_output_dir`, and
    when the spec's ``official_scoring`` is ``'cityscapesscripts'`` (Cityscapes), with
    ground truth and instance files, also runs that evaluation on the written label PNGs
    (:mod:`issegm.official`); its scores are added to ``summary.json`` under ``official``.
    Returns the summary dict.
    """
    from rn38 import zoo
    from rn38.params import load_params
    from rn38.devices import parse_devices
    from rn38.train import save_config
    from .datasets import list_samples, spec_from_config
    logger = logger or logging.getLogger(__name__)
    from .image_norm import make_predictor_class, mean_std
    from .train import model_options
    spec = spec_from_config(cfg)
    model = zoo.parse_label(cfg.model)
    if model.classes != spec.classes:
        raise ValueError('%s: model %s has %d classes, dataset %s has %d'
                         % (cfg.weights, cfg.model, model.classes, spec.name, spec.classes))
    from rn38.lowprec import check_dtype
    ctx = parse_devices(cfg.gpus)
    check_dtype(getattr(cfg, 'dtype', 'float32'), ctx, logger=logger)
    net = zoo.build_model(cfg.model, 'segmentation', **model_options(cfg))
    load_params(net, cfg.weights, ctx)
    net.hybridize(static_alloc=True)
    tile_margin = None
    if getattr(cfg, 'dtype', 'float32') != 'float32':
        tile_margin = receptive_radius(net)  # a converted graph has no layers to walk
        net, cfg.dtype = low_precision_net(net, cfg, ctx, spec, logger)
    image_norm = getattr(cfg, 'image_norm', 'imagenet')
    mean, std = mean_std(image_norm)
    predictor = make_predictor_class(image_norm)(
        net, ctx, mean=mean, std=std, scales=cfg.test_scales, flip=cfg.test_flipping,
        test_steps=cfg.test_steps, pad_mode=spec.eval_pad_mode,
        max_input_pixels=cfg.max_input_pixels, tile_margin=tile_margin)
    samples = list_samples(spec, cfg.data_root, cfg.split)
    out_dir = val_output_dir(cfg.output, cfg.weights, cfg.split)
    if getattr(cfg, 'dtype', 'float32') != 'float32':  # results of another dtype: own folder
        out_dir += '_' + cfg.dtype + ('_%s%d' % (cfg.calib_mode, cfg.calib_images)
                                      if cfg.dtype == 'int8' else '')
    save_config(cfg, os.path.join(out_dir, 'config.yaml'))
    logger.info('evaluating %s on %d images of %s/%s with %s; results in %s', cfg.weights,
                len(samples), cfg.data_root, cfg.split, predictor.describe(), out_dir)
    summary = evaluate(predictor, spec, samples, out_dir, save_results=cfg.save_results,
                       save_predictions=cfg.save_predictions, progress=cfg.progress,
                       logger=logger, title='%s, %s' % (os.path.basename(cfg.weights),
                                                        cfg.split),
                       result_key=evaluation_key(cfg, predictor, samples))
    if (spec.official_scoring == 'cityscapesscripts' and cfg.official_eval
            and cfg.save_results and summary.get('images_with_gt')
            and official.has_instance_files(cfg.data_root, cfg.split)):
        scores = official.score_evaluation(out_dir, cfg.data_root, cfg.split,
                                           summary['mean_iou'], logger)
        stored = {k: v for k, v in summary.items() if k not in ('timing', 'resumed', 'computed')}
        stored['official'] = scores
        write_json(stored, os.path.join(out_dir, 'summary.json'))
        summary['official'] = scores
    return summary
