#!/usr/bin/env python3
"""Cost and output check of the segmentation training transform, one table from one run.

    python scripts/bench_data.py [--images 4] [--samples 16] [--stat-samples 48] [--seed 0]

Writes ``--images`` synthetic 1024x2048 Cityscapes-layout PNGs (scripts/make_demo_data.py)
into a temporary folder, then per sample reads image + label PNG and produces a 504 crop
(stride 8, longer side 0.7-1.3 x 2048) with

  (a) canvas: the authors' algorithm (image pasted into a mean-filled float canvas of about
      2048x2048x3, window cropped, resized with their filter rule), as transcribed from
      their issegm/data.py in tests/test_seg_data.py (``authors_read``), followed by the
      normalisation ``(v / 255 - mean) / std``;
  (b) ours:   issegm.transforms.SegTrainTransform (only the window is copied and resized).

Times are CPU seconds of this single-threaded process per sample (= core-seconds; OpenCV
and OpenMP are limited to one thread), including the PNG decoding both methods share.
The output check runs both methods on the same random draws (outputs must be bit-equal)
and on independent draws (summary statistics of data and labels should agree within
sampling noise).
"""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

import functools  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from make_demo_data import make_demo_dataset  # noqa: E402  (beside this script)
from issegm.datasets import get_dataset_spec, list_samples, read_label  # noqa: E402
from rn38.image import read_image  # noqa: E402
from issegm.transforms import SegTrainTransform  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _authors_transcription():
    """The transcription of the authors' crop code that the tests compare against
    (``tests/test_seg_data.py``), loaded from its file: the independent reference."""
    import importlib.util
    path = os.path.join(os.path.dirname(HERE), 'tests', 'test_seg_data.py')
    spec = importlib.util.spec_from_file_location('authors_transcription', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.authors_draws, module.authors_read


_authors_transcription = functools.lru_cache(maxsize=None)(_authors_transcription)

CROP, STRIDE, ORIGIN, SCALES, MAX_SHAPE = 504, 8, 2048, (0.7, 1.3), (1024, 2048)


def run_canvas(transform, spec, sample, rng):
    image = read_image(sample[0])
    label = read_label(spec, sample[1], image.shape)
    params = transform.sample_params(image.shape[:2], rng)
    authors_draws, authors_read = _authors_transcription()
    rim, labels, _ = authors_read(image, label, *authors_draws(params, image.shape[:2], STRIDE),
                                  crop=CROP, stride=STRIDE, origin_size=ORIGIN,
                                  scale_rate_range=SCALES, max_shape=MAX_SHAPE)
    data = (rim / 255.0 - np.asarray(transform.mean)) / np.asarray(transform.std)
    return data.astype(np.float32).transpose(2, 0, 1), labels


def run_ours(transform, spec, sample, rng):
    image = read_image(sample[0])
    label = read_label(spec, sample[1], image.shape)
    return transform(image, label, rng)


def cpu_seconds_per_sample(method, transform, spec, samples, count, seed):
    method(transform, spec, samples[0], np.random.default_rng(seed))  # warm-up
    tic = time.process_time()
    for k in range(count):
        method(transform, spec, samples[k % len(samples)], np.random.default_rng([seed, k]))
    return (time.process_time() - tic) / count


def summarize(outputs, classes):
    """Per-channel mean/std of data, ignore fraction and class histogram of labels."""
    data = np.stack([d for d, _ in outputs])
    labels = np.concatenate([l for _, l in outputs]).astype(np.int64)
    hist = np.bincount(np.minimum(labels, classes), minlength=classes + 1) / labels.size
    return {'mean': data.mean(axis=(0, 2, 3)), 'std': data.std(axis=(0, 2, 3)),
            'ignore': hist[classes], 'hist': hist[:classes]}


def main(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=4, help='1024x2048 images to generate')
    parser.add_argument('--samples', type=int, default=16, help='timed samples per method')
    parser.add_argument('--stat-samples', type=int, default=48,
                        help='samples per method for the output check')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    spec = get_dataset_spec('cityscapes')
    transform = SegTrainTransform(CROP, STRIDE, ORIGIN, SCALES)
    with tempfile.TemporaryDirectory(prefix='bench_data_') as root:
        tic = time.time()
        make_demo_dataset(root, seed=args.seed, train=args.images, val=0, height=1024,
                          width=2048, color=False)
        print('generated %d 1024x2048 images in %.1f s' % (args.images, time.time() - tic))
        samples = list_samples(spec, root, 'train')

        t_canvas = cpu_seconds_per_sample(run_canvas, transform, spec, samples, args.samples,
                                          args.seed)
        t_ours = cpu_seconds_per_sample(run_ours, transform, spec, samples, args.samples,
                                        args.seed)
        image = read_image(samples[0][0])
        label = read_label(spec, samples[0][1], image.shape)
        tic = time.process_time()
        for _ in range(args.samples):
            read_label(spec, samples[0][1], read_image(samples[0][0]).shape)
        t_read = (time.process_time() - tic) / args.samples

        # same draws -> identical outputs
        equal = 0
        same_draws = {'canvas': [], 'ours': []}
        for k in range(args.stat_samples):
            sample = samples[k % len(samples)]
            a = run_canvas(transform, spec, sample, np.random.default_rng([args.seed, 1, k]))
            b = run_ours(transform, spec, sample, np.random.default_rng([args.seed, 1, k]))
            equal += np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            same_draws['canvas'].append(a)
            same_draws['ours'].append(b)
        # independent draws -> statistics agree within sampling noise
        independent = {
            'canvas': same_draws['canvas'],
            'ours': [run_ours(transform, spec, samples[k % len(samples)],
                              np.random.default_rng([args.seed, 2, k]))
                     for k in range(args.stat_samples)]}
    stats = {name: summarize(out, spec.classes) for name, out in independent.items()}
    del image, label

    rows = [
        ('read image + label PNG (shared)', '%.4f' % t_read, '%.4f' % t_read, ''),
        ('read + transform, s/sample/core', '%.4f' % t_canvas, '%.4f' % t_ours,
         '%.1fx faster' % (t_canvas / t_ours)),
        ('transform only (minus read)', '%.4f' % (t_canvas - t_read),
         '%.4f' % (t_ours - t_read),
         '%.1fx faster' % ((t_canvas - t_read) / max(1e-9, t_ours - t_read))),
        ('same draws: bit-equal outputs', '', '%d/%d' % (equal, args.stat_samples),
         'PASS' if equal == args.stat_samples else 'FAIL'),
    ]
    for c, name in enumerate('RGB'):
        rows.append(('indep. draws: data mean %s' % name, '%+.3f' % stats['canvas']['mean'][c],
                     '%+.3f' % stats['ours']['mean'][c], ''))
    for c, name in enumerate('RGB'):
        rows.append(('indep. draws: data std %s' % name, '%.3f' % stats['canvas']['std'][c],
                     '%.3f' % stats['ours']['std'][c], ''))
    rows.append(('indep. draws: ignored label fraction', '%.3f' % stats['canvas']['ignore'],
                 '%.3f' % stats['ours']['ignore'], ''))
    l1 = np.abs(stats['canvas']['hist'] - stats['ours']['hist']).sum()
    rows.append(('indep. draws: label histogram L1 distance', '', '%.3f' % l1, ''))
    width = max(len(r[0]) for r in rows)
    print('\n%d samples timed per method (crop %d, stride %d, longer side %g-%g x %d), '
          'output check on %d samples' % (args.samples, CROP, STRIDE, SCALES[0], SCALES[1],
                                          ORIGIN, args.stat_samples))
    print('%-*s  %10s  %10s  %s' % (width, 'quantity', '(a) canvas', '(b) ours', 'ratio / check'))
    print('-' * (width + 40))
    for name, a, b, note in rows:
        print('%-*s  %10s  %10s  %s' % (width, name, a, b, note))
    return 0 if equal == args.stat_samples else 1


if __name__ == '__main__':
    sys.exit(main())
