"""Command line of the segmentation entries (cityscapes.py, voc.py, ade20k.py).

Options become one :class:`issegm.config.SegConfig` (saved with the results); the phases
call library functions (:func:`issegm.train.train`, :func:`issegm.evaluate.run_val`).
Flags and defaults follow the authors' scripts.
"""
import argparse
import os

from rn38.cli import (ArgumentParser, HelpFormatter, add_model_options, add_precision_options,
                      bad_input_logged, config_from_args, run_command)

from .config import SegConfig
from .datasets import DATASET_NAMES

# Per dataset: the defaults of the authors' recipe (Cityscapes: the published stage 1) and
# the published evaluation protocol of the released model (ademxapp README: Cityscapes
# 2048 + flip, VOC 500 + flip, ADE20K 500 + flip + 2 test steps).
DATASET_DEFAULTS = {
    'cityscapes': dict(model='cityscapes_rna-a1_cls19_s8', origin_size=2048, crop_size=500,
                       test_scales='2048', test_flipping=True, test_steps=1,
                       data_root='data/cityscapes'),
    'voc': dict(model='voc_rna-a1_cls21_s8', origin_size=500, crop_size=500,
                test_scales='500', test_flipping=True, test_steps=1,
                data_root='data/VOCdevkit/VOC2012'),
    'ade20k': dict(model='ade20k_rna-a1_cls150_s8', origin_size=640, crop_size=500,
                   test_scales='500', test_flipping=True, test_steps=2,
                   data_root='data/ADEChallengeData2016'),
    # Own data: the model's class count comes from <data root>/classes.yaml.
    'folder': dict(model='folder_rna-a1_cls<C>_s8', origin_size=512, crop_size=320,
                   test_scales='512', test_flipping=False, test_steps=1, data_root=None),
}


def _bool01(text):
    if text not in ('0', '1'):
        raise argparse.ArgumentTypeError('expected 0 or 1, got %r' % text)
    return text == '1'


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
    p = ArgumentParser(
        description='Train or evaluate ResNet-38 FCNs on %s.' % dataset,
        formatter_class=HelpFormatter)
    p.add_argument('--phase', choices=('train', 'val'), default='train')
    p.add_argument('--gpus', default=None,
                   help="device ids, e.g. 0,1,2,3; 'cpu' (or empty) for the CPU, 'cpu:2' for two "
                        "CPU contexts; default: GPU 0 if there is one, else the CPU")
    if dataset != 'folder':
        p.add_argument('--dataset', default=None,
                       choices=[n for n in DATASET_NAMES if n != 'folder'],
                       help="dataset of the data (label encoding, folder layout) when it is "
                            "not %s, e.g. coco to pre-train a VOC model; the model's classes "
                            "must match it" % dataset)
        p.add_argument('--data-root', default=None,
                       help='default: %s (with --dataset D: data/D)' % d['data_root'])
    else:
        p.add_argument('--data-root', required=True,
                       help='the folder holding classes.yaml and one folder per split')
        p.add_argument('--image-suffix', default='.jpg',
                       help='images are <split>/<name><suffix>, e.g. _sat.jpg')
        p.add_argument('--label-suffix', default='.png',
                       help='their labels are <split>/<name><suffix>, e.g. _mask.png')
    p.add_argument('--split', default=None, help='train, val, trainval, test '
                   '(default: train for --phase train, val for --phase val)')
    p.add_argument('--output', default=None, help='default: output/ for training, the '
                   "weights' folder for validation")
    add_model_options(p, d['model'], 'ImageNet weights to start from, or a checkpoint to '
                      'resume/evaluate', default_model=d['model'])
    p.add_argument('--image-norm', choices=('imagenet', 'per-image'), default=None,
                   help="input normalisation: ImageNet mean/std, or per-image "
                        "standardisation (TensorFlow's, the ResNet38 Watershed recipe); "
                        "default: the model family's (imagenet for every family)")
    p.add_argument('--head', choices=('2conv', '1conv', 'bn-2conv'), default='2conv',
                   help="ResNet-38 FCN head; 'bn-2conv': BatchNorm before conv6a (Watershed)")
    g = p.add_argument_group('training')
    g.add_argument('--batch-images', type=int, default=16)
    g.add_argument('--crop-size', type=int, default=d['crop_size'])
    g.add_argument('--origin-size', type=int, default=d['origin_size'],
                   help='the longer side is rescaled to scale_rate x origin_size')
    g.add_argument('--scale-rate-range', type=_float_pair, default=(0.7, 1.3))
    g.add_argument('--lr-type', choices=('fixed', 'step', 'linear'), default='fixed')
    g.add_argument('--base-lr', type=float, default=0.0016)
    g.add_argument('--lr-steps', type=_int_list, default=[],
                   help='updates after which the lr is multiplied by --lr-factor (--lr-type '
                        'step), as the authors and iclass/ilsvrc.py count them')
    g.add_argument('--lr-factor', type=float, default=0.1)
    g.add_argument('--weight-decay', type=float, default=0.0005)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--from-epoch', type=int, default=None,
                   help='epochs already done (default: parsed from --weights)')
    g.add_argument('--stop-epoch', type=int, default=None, help='stop after this epoch')
    g.add_argument('--keep-checkpoints', type=int, default=2,
                   help='keep the last N checkpoints (0: all); the optimizer state is kept '
                        'beside the latest only')
    g.add_argument('--keep-epochs', type=_int_list, default=[],
                   help='epochs whose checkpoints are always kept, e.g. 70,140')
    g.add_argument('--val-every', type=int, default=0,
                   help='evaluate on --val-split every N epochs and after the last one, with '
                        'the validation options below; keeps <model>_best.params (0: never)')
    g.add_argument('--val-split', default='val', help='held-out split of --val-every')
    g.add_argument('--to-epoch', type=int, default=140, help='epochs the schedule spans')
    g.add_argument('--kvstore', default='device',
                   choices=('local', 'device', 'dist_sync', 'dist_sync_device', 'dist_async'))
    g.add_argument('--prefetch-threads', type=int, default=1, help='data loading workers')
    g.add_argument('--prefetcher', choices=('thread', 'process'), default='thread')
    g.add_argument('--cache-images', type=int, default=None,
                   help='1: keep encoded images in memory (default: on for training)')
    g.add_argument('--backward-do-mirror', action='store_true',
                   help='save memory by recomputing network segments in the backward pass')
    g.add_argument('--bn-stats', choices=('frozen', 'batch', 'frozen-backbone'),
                   default='frozen',
                   help="BatchNorm statistics: 'frozen' (the authors' fine-tuning recipe), "
                        "'batch' (learned; for training from scratch) or 'frozen-backbone' "
                        "(learned only in the head: the ResNet38 Watershed rule)")
    g.add_argument('--loss', choices=('ohem', 'softmax'), default='ohem',
                   help="'ohem': the authors' bootstrapped softmax (hard pixels); 'softmax': "
                        "plain cross-entropy over all labelled pixels")
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--no-hybridize', dest='hybridize', action='store_false')
    t = p.add_argument_group('validation')
    t.add_argument('--test-scales', default=d['test_scales'],
                   help='longer side(s) in pixels, e.g. 2048 or 1536,2048,2560')
    t.add_argument('--test-flipping', type=_bool01, nargs='?', const=True,
                   default=d['test_flipping'], metavar='0|1',
                   help='1: average with the mirrored input, 0: not (alone: 1; default: %d, '
                        'the published protocol)' % int(d['test_flipping']))
    t.add_argument('--no-test-flipping', dest='test_flipping', action='store_false',
                   help='same as --test-flipping 0')
    t.add_argument('--test-steps', type=int, default=d['test_steps'])
    t.add_argument('--max-input-pixels', type=int, default=None,
                   help='larger inputs are evaluated by sliding windows')
    t.add_argument('--save-predictions', action='store_true',
                   help='store the stride-level probability maps and their geometry '
                        '(probs/<name>.npz, ~1.3 MB per Cityscapes image); '
                        'issegm.outputs.rebuild_prediction gives the full-resolution result')
    t.add_argument('--no-save-results', dest='save_results', action='store_false')
    t.add_argument('--no-official-eval', dest='official_eval', action='store_false',
                   help='skip the cityscapesscripts evaluation')
    add_precision_options(t)
    p.add_argument('--log-file', default=None)
    p.add_argument('--debug', action='store_true', help='NaiveEngine and debug logging')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    return p


def make_config(dataset, argv=None):
    """Parse ``argv`` into the run's config (a :class:`issegm.config.SegConfig`); derives
    what the user left out."""
    from rn38 import zoo  # here: loads MXNet (see rn38.runtime.use_all_cores)
    from rn38.devices import default_devices
    cfg = config_from_args(SegConfig, build_parser(dataset).parse_args(argv))
    cfg.dataset = getattr(cfg, 'dataset', None) or dataset
    if cfg.data_root is None:
        cfg.data_root = DATASET_DEFAULTS.get(cfg.dataset, {}).get(
            'data_root', os.path.join('data', cfg.dataset))
    if cfg.gpus is None:
        cfg.gpus = default_devices()
    if cfg.split is None:
        cfg.split = 'train' if cfg.phase == 'train' else 'val'
    if cfg.model is None:
        cfg.model = DATASET_DEFAULTS[dataset]['model']
        if dataset == 'folder':
            from .datasets import spec_from_config
            cfg.model = cfg.model.replace('<C>', str(spec_from_config(cfg).classes))
        if cfg.weights is not None:
            try:
                label, _ = zoo.label_from_weights(cfg.weights)
                if not label.startswith('ilsvrc-cls_'):
                    cfg.model = label
            except ValueError:
                pass
    model_spec, _ = zoo.resolve_label(cfg.model, 'segmentation')
    from .datasets import spec_from_config
    data_classes = spec_from_config(cfg).classes
    if model_spec.classes != data_classes:
        raise ValueError('--model %s has %d classes but dataset %s has %d%s'
                         % (cfg.model, model_spec.classes, cfg.dataset, data_classes,
                            '' if cfg.dataset != dataset else
                            ' (--dataset D evaluates or trains on the data of dataset D)'))
    if cfg.image_norm is None:
        cfg.image_norm = zoo.FAMILIES[model_spec.family].preprocessing
    if cfg.phase == 'val' and cfg.weights is None:
        raise ValueError('--phase val needs --weights (the .params file to evaluate)')
    if cfg.weights is not None and not os.path.isfile(cfg.weights):
        from rn38.params import read_params
        read_params(cfg.weights)  # raises the one-line error, with a hint for released files
    if cfg.phase == 'train' and cfg.lr_type == 'step' and not cfg.lr_steps:
        raise ValueError('--lr-type step needs --lr-steps (the updates after which the rate '
                         'is multiplied by --lr-factor, e.g. --lr-steps 30000,60000)')
    from rn38.checks import available_devices, writable_folder
    available_devices(cfg.gpus, '--gpus')
    if cfg.output is None:
        cfg.output = 'output' if cfg.phase == 'train' else \
            os.path.dirname(os.path.abspath(cfg.weights))
        try:
            writable_folder(cfg.output, 'output folder')
        except ValueError as err:
            raise ValueError("%s; give --output <folder>%s" % (
                err, " (by default --phase val writes beside --weights)"
                if cfg.phase == 'val' else '')) from None
    else:
        writable_folder(cfg.output, '--output')
    if cfg.log_file is not None:
        writable_folder(os.path.dirname(os.path.abspath(cfg.log_file)), '--log-file')
    if cfg.cache_images is None:
        cfg.cache_images = cfg.phase == 'train'
    cfg.cache_images = bool(cfg.cache_images)
    if cfg.log_file is None:
        name = cfg.model if cfg.phase == 'train' else \
            os.path.splitext(os.path.basename(cfg.weights))[0] + \
            ('' if cfg.split == 'val' else '_' + cfg.split)
        cfg.log_file = os.path.join(cfg.output, name + '.log')
    cfg.test_scales = [int(s) for s in str(cfg.test_scales).split(',') if s.strip()]
    if cfg.phase == 'val' and cfg.dtype != 'float32':  # before any work: one-line errors
        from rn38.lowprec import check_dtype
        from rn38.devices import parse_devices
        import logging
        cfg.dtype = check_dtype(cfg.dtype, parse_devices(cfg.gpus), logger=logging.getLogger(
            'issegm.cli'))
        if cfg.dtype == 'int8' and cfg.calib_images < 1:
            raise ValueError('--calib-images must be at least 1 for --dtype int8')
    return cfg


def main(dataset, argv=None):
    """Run the entry of ``dataset`` on ``argv``; returns the exit status (0; 2 after one
    ``error:`` line for bad input; 130 after Ctrl-C, see :func:`rn38.cli.run_command`)."""
    return run_command(_command, dataset, argv)


def _command(dataset, argv):
    cfg = make_config(dataset, argv)
    # before MXNet runs anything: its engine and workspaces follow the options
    from rn38.runtime import configure_mxnet
    configure_mxnet(debug=cfg.debug, mirror=cfg.phase == 'train' and cfg.backward_do_mirror,
                    training=cfg.phase == 'train')
    from rn38.train import setup_logging
    logger = setup_logging(cfg.log_file, cfg.debug)
    logger.info('config: %s', vars(cfg))
    with bad_input_logged(logger):  # the reason also stays in the run's log file
        if cfg.phase == 'train':
            from .train import train
            train(cfg, logger)
        else:
            from .evaluate import run_val
            run_val(cfg, logger)
