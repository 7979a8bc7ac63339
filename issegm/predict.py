#!/usr/bin/env python
"""Segment images of any size with a ResNet-38 FCN; writes label PNGs and colour overlays.

    python issegm/predict.py --weights models/cityscapes_rna-a1_cls19_s8_ep-0001.params \\
        --input photos/ --output output/photos [--test-scales 1024,2048] [--test-flipping]

The model label (``--model``, by default taken from the weights file name) names the
dataset, whose class names and colours are used. For each input image ``<name>``, the
output folder gets ``labels/<name>.png`` (raw label ids of the dataset, e.g. Cityscapes
labelIds), ``color/<name>.png`` and ``overlay/<name>.png``; a folder input is searched
recursively and its sub-folders are kept. Also ``config.yaml`` and ``predict.log``.
``--gpus 0,1`` (or ``cpu:2``) spreads the images over the devices; ``--dtype bfloat16|int8``
runs the network in lower precision on the CPU (see ``rn38/lowprec.py``).
"""
import os
import sys


def parse_args(argv=None):
    from rn38.cli import ArgumentParser, add_model_options
    parser = ArgumentParser(
        description='Segment images with a ResNet-38 FCN (label PNGs and colour overlays).')
    add_model_options(parser, 'cityscapes_rna-a1_cls19_s8', 'the network to segment with',
                      required=True)
    parser.add_argument('--input', required=True, help='an image file or a folder of images')
    parser.add_argument('--output', required=True, help='output folder')
    parser.add_argument('--test-scales', dest='test_scales', default=None,
                        help='lengths of the longer image side, e.g. 1024,2048; averaged in '
                             'probability (default: the image size)')
    parser.add_argument('--test-flipping', dest='test_flipping', action='store_true',
                        help='average with the horizontally flipped image')
    parser.add_argument('--test-steps', dest='test_steps', type=int, default=1,
                        help='shifted passes per axis for a finer score map (divides the '
                             'stride)')
    parser.add_argument('--pad-mode', dest='pad_mode', default='stride',
                        choices=('stride', 'scale'),
                        help='pad the input to a multiple of the stride, or to a square of '
                             'the test scale (the authors\' VOC/ADE20K setting)')
    parser.add_argument('--max-input-pixels', dest='max_input_pixels', type=int, default=None,
                        help='tile network inputs larger than this many pixels')
    parser.add_argument('--tile-size', dest='tile_size', type=int, default=512,
                        help='core size of a tile, pixels')
    parser.add_argument('--tile-margin', dest='tile_margin', type=int, default=None,
                        help='context around a tile core, pixels (default: the receptive '
                             'field radius, exact)')
    parser.add_argument('--alpha', type=float, default=0.5, help='overlay colour weight')
    parser.add_argument('--gpus', default=None,
                        help="devices the images are spread over: GPU ids, e.g. 0 or 0,1; "
                             "'' or 'cpu': the CPU; 'cpu:2': two CPU contexts; default: GPU 0 "
                             "if there is one, else the CPU")
    parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'int8'), default='float32',
                        help='inference precision (CPU, oneDNN): bfloat16 needs avx512_bf16; '
                             'int8 calibrates once (cached next to --weights)')
    parser.add_argument('--calib-images', dest='calib_images', type=int, default=10,
                        help='images for the int8 calibration')
    parser.add_argument('--calib-input', dest='calib_input', default=None,
                        help='an image file or folder to calibrate int8 on (default: --input; '
                             'training images are best)')
    parser.add_argument('--calib-mode', dest='calib_mode', choices=('entropy', 'naive'),
                        default='entropy', help='int8 range calibration')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bar')
    return parser.parse_args(argv)


def list_images(path):
    """``([image paths], [output names])`` of a file or a folder (recursive, sorted)."""
    from issegm.datasets import DataError, IMAGE_EXTENSIONS
    if os.path.isfile(path):
        return [path], [os.path.splitext(os.path.basename(path))[0]]
    if not os.path.isdir(path):
        raise DataError('%s: no such image file or folder' % path)
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
    if not found:
        raise DataError('%s: no images (%s) in this folder'
                        % (path, ', '.join(IMAGE_EXTENSIONS)))
    names = [os.path.splitext(os.path.relpath(p, path))[0] for p in found]
    return found, names


def make_config(args):
    """The run's :class:`issegm.config.PredictConfig` from parsed arguments; derives the
    model label, dataset, scales and devices the user left out and checks them."""
    from issegm.config import PredictConfig
    from rn38.checks import available_devices, writable_folder
    from rn38.cli import config_from_args
    from rn38.devices import default_devices
    from rn38.zoo import label_from_weights, parse_label
    label = args.model or label_from_weights(args.weights)[0]
    spec = parse_label(label)
    scales = [None]
    if args.test_scales:
        try:
            scales = [int(s) for s in args.test_scales.split(',') if s.strip()]
        except ValueError:
            raise ValueError('--test-scales must be integers separated by commas, got %r'
                             % args.test_scales) from None
    gpus = default_devices() if args.gpus is None else args.gpus
    available_devices(gpus, '--gpus')
    writable_folder(args.output, '--output')
    return config_from_args(PredictConfig, args, model=label, dataset=spec.dataset,
                            test_scales=scales, gpus=gpus,
                            calib_input=args.calib_input or args.input)


def lower_precision(net, config, ctx, scale, logger):
    """``(net in config.dtype, dtype run)``; int8 calibrates on the first
    ``calib_images`` images of ``calib_input`` at ``scale`` (see rn38.lowprec)."""
    from issegm.predictor import SegPredictor, calibration_inputs
    from rn38 import lowprec
    if config.dtype != 'int8':
        return lowprec.lower_precision(net, config.dtype, ctx, logger=logger)
    if config.calib_images < 1:
        raise ValueError('--calib-images must be at least 1 for --dtype int8')
    images, _ = list_images(config.calib_input)
    chosen = images[:config.calib_images]
    probe = SegPredictor(net, ctx, scales=[scale], pad_mode=config.pad_mode)
    settings = {'calib_images': [os.path.abspath(p) for p in chosen], 'calib_scale': scale,
                'pad_mode': config.pad_mode, 'model': config.model}
    return lowprec.lower_precision(
        net, 'int8', ctx, calib_batches=lambda: calibration_inputs(probe, chosen, scale),
        calib_mode=config.calib_mode, weights=config.weights, settings=settings,
        logger=logger)


def run(config, failures=None):
    """Segment ``config.input`` (a :class:`issegm.config.PredictConfig`); returns the
    written ``[(image, label PNG)]``. failures: see :func:`issegm.evaluate.segment_images` (None: the first unreadable
    image raises)."""
    import issegm
    from issegm.datasets import get_dataset_spec
    from issegm.evaluate import segment_images
    from issegm.predictor import SegPredictor
    from rn38.train import save_config, setup_logging

    os.makedirs(config.output, exist_ok=True)
    logger = setup_logging(os.path.join(config.output, 'predict.log'),
                           name='issegm.predict')
    save_config(config, os.path.join(config.output, 'config.yaml'))
    spec = get_dataset_spec(config.dataset)
    images, names = list_images(config.input)
    from rn38.checks import available_devices
    ctx = available_devices(config.gpus, '--gpus')
    from rn38.lowprec import check_dtype
    check_dtype(config.dtype, ctx, logger=logger)
    net = issegm.get_model(config.model, pretrained=config.weights, ctx=ctx)
    if net.classes != spec.classes:
        raise ValueError('model %s has %d classes but dataset %s has %d'
                         % (config.model, net.classes, spec.name, spec.classes))
    net.hybridize(static_alloc=True)
    tile_margin = config.tile_margin
    if config.dtype != 'float32':
        from issegm.predictor import receptive_radius
        if tile_margin is None:  # a converted graph has no layers to walk
            tile_margin = receptive_radius(net)
        net, config.dtype = lower_precision(net, config, ctx, config.test_scales[0],
                                            logger)
    predictor = SegPredictor(net, ctx, scales=config.test_scales,
                             flip=config.test_flipping, test_steps=config.test_steps,
                             pad_mode=config.pad_mode,
                             max_input_pixels=config.max_input_pixels,
                             tile_size=config.tile_size, tile_margin=tile_margin)
    logger.info('model %s on %s, protocol %s, %d images', config.model, ctx,
                predictor.describe(), len(images))
    return segment_images(predictor, spec, images, config.output, names=names,
                          alpha=config.alpha, progress=config.progress, logger=logger,
                          failures=failures)


def main(argv=None):
    """Run the command line (also ``rn38-predict``); returns the exit status: 0, 2 after
    one ``error:`` line for bad input or skipped images, 130 after Ctrl-C (see
    :func:`rn38.cli.run_command`)."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    from rn38.image import DataError
    failures = []
    written = run(make_config(parse_args(argv)), failures)
    if failures:
        raise DataError('%d of %d images skipped (unreadable), the others are written: %s'
                        % (len(failures), len(failures) + len(written),
                           ', '.join(path for path, _ in failures)))


if __name__ == '__main__':
    sys.exit(main())
