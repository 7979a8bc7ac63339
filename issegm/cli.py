"""Command line of the segmentation entries (cityscapes.py, voc.py, ade20k.py).

Options become one ``argparse.Namespace`` config (saved with the results); the phases
call library functions (:func:`issegm.train.train`, :func:`issegm.evaluate.run_val`).
Flags and defaults follow the authors' scripts.
"""
import argparse
import os
import sys

import mxnet as mx

from rn38 import zoo

# Per dataset: the defaults of the authors' recipe (Cityscapes: the published stage 1).
DATASET_DEFAULTS = {
    'cityscapes': dict(model='cityscapes_rna-a1_cls19_s8', origin_size=2048, crop_size=500,
                       test_scales='2048', data_root='data/cityscapes'),
    'voc': dict(model='voc_rna-a1_cls21_s8', origin_size=500, crop_size=500,
                test_scales='500', data_root='data/VOCdevkit/VOC2012'),
    'ade20k': dict(model='ade20k_rna-a1_cls150_s8', origin_size=640, crop_size=500,
                   test_scales='640', data_root='data/ADEChallengeData2016'),
}


def _float_pair(text):
    parts = [float(p) for p in text.split(',')]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError('expected LOW,HIGH, got %r' % text)
    return tuple(parts)


def _int_list(text):
    return [int(p) for p in text.split(',') if p.strip()]


def build_parser(dataset):
    d = DATASET_DEFAULTS[dataset]
    p = argparse.ArgumentParser(
        description='Train or evaluate ResNet-38 FCNs on %s.' % dataset,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--phase', choices=('train', 'val'), default='train')
    p.add_argument('--gpus', default=None,
                   help="device ids, e.g. 0,1,2,3; 'cpu' (or empty) for the CPU, 'cpu:2' for two "
                        "CPU contexts; default: GPU 0 if there is one, else the CPU")
    p.add_argument('--data-root', default=d['data_root'])
    p.add_argument('--split', default=None, help='train, val, trainval, test '
                   '(default: train for --phase train, val for --phase val)')
    p.add_argument('--output', default=None, help='default: output/ for training, the '
                   "weights' folder for validation")
    p.add_argument('--model', default=None, help='model label, e.g. %s (default: from the '
                   'weights file name, else %s)' % (d['model'], d['model']))
    p.add_argument('--weights', default=None, help='a .params file in the released format: '
                   'ImageNet weights to start from, or a checkpoint to resume/evaluate')
    g = p.add_argument_group('training')
    g.add_argument('--batch-images', type=int, default=16)
    g.add_argument('--crop-size', type=int, default=d['crop_size'])
    g.add_argument('--origin-size', type=int, default=d['origin_size'],
                   help='the longer side is rescaled to scale_rate x origin_size')
    g.add_argument('--scale-rate-range', type=_float_pair, default=(0.7, 1.3))
    g.add_argument('--lr-type', choices=('fixed', 'step', 'linear'), default='fixed')
    g.add_argument('--base-lr', type=float, default=0.0016)
    g.add_argument('--lr-steps', type=_int_list, default=[],
                   help='updates after which the lr drops x0.1 (--lr-type step), as the '
                        'authors and iclass/ilsvrc.py count them')
    g.add_argument('--weight-decay', type=float, default=0.0005)
    g.add_argument('--from-epoch', type=int, default=None,
                   help='epochs already done (default: parsed from --weights)')
    g.add_argument('--stop-epoch', type=int, default=None, help='stop after this epoch')
    g.add_argument('--to-epoch', type=int, default=140, help='epochs the schedule spans')
    g.add_argument('--kvstore', default='device',
                   choices=('local', 'device', 'dist_sync', 'dist_sync_device', 'dist_async'))
    g.add_argument('--prefetch-threads', type=int, default=1, help='data loading workers')
    g.add_argument('--prefetcher', choices=('thread', 'process'), default='thread')
    g.add_argument('--cache-images', type=int, default=None,
                   help='1: keep encoded images in memory (default: on for training)')
    g.add_argument('--backward-do-mirror', action='store_true',
                   help='save memory by recomputing network segments in the backward pass')
    g.add_argument('--bn-stats', choices=('frozen', 'batch'), default='frozen',
                   help="BatchNorm statistics: 'frozen' (the authors' fine-tuning recipe) or "
                        "'batch' (learned; for training from scratch)")
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--no-hybridize', dest='hybridize', action='store_false')
    t = p.add_argument_group('validation')
    t.add_argument('--test-scales', default=d['test_scales'],
                   help='longer side(s) in pixels, e.g. 2048 or 1536,2048,2560')
    t.add_argument('--test-flipping', action='store_true')
    t.add_argument('--test-steps', type=int, default=1)
    t.add_argument('--max-input-pixels', type=int, default=None,
                   help='larger inputs are evaluated by sliding windows')
    t.add_argument('--save-predictions', action='store_true',
                   help='store float16 probabilities (npz)')
    t.add_argument('--no-save-results', dest='save_results', action='store_false')
    t.add_argument('--no-official-eval', dest='official_eval', action='store_false',
                   help='skip the cityscapesscripts evaluation')
    p.add_argument('--log-file', default=None)
    p.add_argument('--debug', action='store_true', help='NaiveEngine and debug logging')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    return p


def make_config(dataset, argv=None):
    """Parse ``argv`` into the run's config (a Namespace); derives what the user left out."""
    cfg = build_parser(dataset).parse_args(argv)
    cfg.dataset = dataset
    if cfg.gpus is None:
        cfg.gpus = '0' if mx.context.num_gpus() > 0 else 'cpu'
    if cfg.split is None:
        cfg.split = 'train' if cfg.phase == 'train' else 'val'
    if cfg.model is None:
        cfg.model = DATASET_DEFAULTS[dataset]['model']
        if cfg.weights is not None:
            try:
                label, _ = zoo.label_from_weights(cfg.weights)
                if not label.startswith('ilsvrc-cls_'):
                    cfg.model = label
            except ValueError:
                pass
    zoo.resolve_label(cfg.model, 'segmentation')
    if cfg.phase == 'val' and cfg.weights is None:
        raise SystemExit('--phase val needs --weights')
    if cfg.weights is not None and not os.path.isfile(cfg.weights):
        from rn38.params import read_params
        read_params(cfg.weights)  # raises the one-line error, with a hint for released files
    if cfg.output is None:
        cfg.output = 'output' if cfg.phase == 'train' else \
            os.path.dirname(os.path.abspath(cfg.weights))
    if cfg.cache_images is None:
        cfg.cache_images = cfg.phase == 'train'
    cfg.cache_images = bool(cfg.cache_images)
    if cfg.log_file is None:
        name = cfg.model if cfg.phase == 'train' else \
            os.path.splitext(os.path.basename(cfg.weights))[0] + \
            ('' if cfg.split == 'val' else '_' + cfg.split)
        cfg.log_file = os.path.join(cfg.output, name + '.log')
    cfg.test_scales = [int(s) for s in str(cfg.test_scales).split(',') if s.strip()]
    return cfg


def main(dataset, argv=None):
    try:
        cfg = make_config(dataset, argv)
    except ValueError as err:  # a bad label or weights path: one line, no traceback
        sys.stderr.write('error: %s\n' % err)
        return 2
    # before MXNet runs anything: its engine and workspaces follow the options
    from rn38.runtime import configure_mxnet
    configure_mxnet(debug=cfg.debug, mirror=cfg.phase == 'train' and cfg.backward_do_mirror)
    from rn38.train import setup_logging
    logger = setup_logging(cfg.log_file, cfg.debug)
    logger.info('config: %s', vars(cfg))
    try:
        if cfg.phase == 'train':
            from .train import train
            train(cfg, logger)
        else:
            from .evaluate import run_val
            run_val(cfg, logger)
    except (ValueError, OSError) as err:
        # Bad input (files, labels, weights, options): one line, no traceback.
        logger.error('%s', err)
        return 2
    return 0


def script_main(dataset):
    """For ``python issegm/<dataset>.py``: runs without installing the package too."""
    sys.exit(main(dataset))
