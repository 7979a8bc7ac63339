"""ImageNet (ILSVRC 2012) classification with ResNet-38: validation and training.

Validate released weights (label taken from the file name; the defaults are the published
protocol: ``--test-scales 320``, no flipping, ``--no-choose-interp-method``)::

    python iclass/ilsvrc.py --data-root data/ilsvrc12 --phase val \\
        --weights models/ilsvrc-cls_rna-a1_cls1000_ep-0001.params \\
        --split val [--test-flipping] [--test-3crops]

The released Model A needs the authors' "caffe" pooling convention (pad 0); it is chosen
for its label and file without an option, a new Model A uses pad 1, and the style a run was
trained with is read from its saved config (``--pool-top-infer-style`` overrides).

Train (the authors' recipe)::

    python iclass/ilsvrc.py --data-root data/ilsvrc12 --phase train \\
        --model ilsvrc-cls_rna-a1_cls1000 --batch-images 256 --crop-size 224 \\
        --lr-type linear --base-lr 0.1 --to-epoch 90 --gpus 0,1,2,3

Everything happens in :mod:`iclass.train`; this file only turns the command line into
one :class:`iclass.train.Config`.
"""
import argparse
import os
import sys

from rn38.cli import (ArgumentParser, HelpFormatter, add_model_options, add_precision_options,
                      run_command)


def _bool01(text):
    if text not in ('0', '1'):
        raise argparse.ArgumentTypeError('expected 0 or 1, got %r' % text)
    return text == '1'


def build_parser():
    p = ArgumentParser(
        description='Validate or train ResNet-38 ImageNet classifiers.',
        formatter_class=HelpFormatter)
    p.add_argument('--phase', choices=('val', 'train'), default='train')
    p.add_argument('--data-root', required=True,
                   help='folder the list paths are relative to; lists are <root>/<split>.lst '
                        '(or iclass/data/<dataset>/<split>.lst)')
    p.add_argument('--split', default=None, help='list to use (default: val / train)')
    add_model_options(p, 'ilsvrc-cls_rna-a1_cls1000', 'the model to validate, or the start '
                      'of training (a checkpoint of --model resumes it)')
    p.add_argument('--dataset', default=None,
                   help='dataset folder name for the packaged lists (default: from the label)')
    p.add_argument('--output', default=None,
                   help='output folder (default: beside --weights for val, ./output for train)')
    p.add_argument('--gpus', default=None,
                   help="devices: '' or 'cpu' (CPU), '0,1' (GPUs), 'cpu:2' (2 CPU contexts); "
                        "default: GPU 0 if there is one, else the CPU")
    p.add_argument('--batch-images', type=int, default=None,
                   help='images per batch (default: 1 for val, 32 for train)')
    g = p.add_argument_group('validation (defaults: the published protocol of both released '
                             'models, ademxapp README: 320, no flipping, bicubic resize)')
    g.add_argument('--test-scales', default='320',
                   help='comma-separated shorter-side lengths; predictions are averaged')
    g.add_argument('--test-flipping', action='store_true',
                   help='average with the horizontally flipped crops')
    g.add_argument('--test-3crops', action='store_true',
                   help='three crops along the longer side instead of the centre one')
    g.add_argument('--choose-interp-method', type=_bool01, nargs='?', const=True,
                   default=None, metavar='0|1',
                   help='1: choose the resize filter by the resize direction (LANCZOS when '
                        'shrinking), 0: always bicubic (default: 0 for val, as published; '
                        '1 for train, as the authors trained)')
    g.add_argument('--no-choose-interp-method', dest='choose_interp_method',
                   action='store_false', help='same as --choose-interp-method 0')
    g.add_argument('--pool-top-infer-style', choices=('caffe', 'same'), default=None,
                   help='Model A max-pool convention: caffe (pad 0, the released weights) or '
                        'same (pad 1, a new Model A); default: the one the weights were '
                        'trained with (caffe for the released Model A, else same)')
    g.add_argument('--cache-dtype', choices=('float32', 'float16'), default='float32',
                   help='dtype of the per-scale prediction cache')
    add_precision_options(g, 'training images (of the train list)')
    g = p.add_argument_group('training')
    g.add_argument('--crop-size', type=int, default=224)
    g.add_argument('--lr-type', choices=('fixed', 'step', 'linear'), default='fixed')
    g.add_argument('--base-lr', type=float, default=0.1)
    g.add_argument('--lr-steps', default='',
                   help='comma-separated update counts where a step schedule multiplies '
                        'the rate by --lr-factor')
    g.add_argument('--lr-factor', type=float, default=0.1)
    g.add_argument('--weight-decay', '--wd', dest='weight_decay', type=float, default=0.0001)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--from-epoch', type=int, default=None,
                   help='epochs already done (default: from a --weights checkpoint, else 0)')
    g.add_argument('--stop-epoch', type=int, default=None, help='stop after this epoch')
    g.add_argument('--to-epoch', type=int, default=None,
                   help='total epochs of the schedule')
    g.add_argument('--kvstore', default='device')
    g.add_argument('--keep-checkpoints', type=int, default=2,
                   help='keep the last N checkpoints (0: all); the optimizer state is kept '
                        'beside the latest only')
    g.add_argument('--keep-epochs', default='',
                   help='comma-separated epochs whose checkpoints are always kept')
    g.add_argument('--val-every', type=int, default=0,
                   help='validate on --val-split every N epochs and after the last one with '
                        'the validation options; keeps <model>_best.params (0: never)')
    g.add_argument('--val-split', default='val', help='held-out list of --val-every')
    g.add_argument('--backward-do-mirror', action='store_true',
                   help='recompute activations in backward to save memory')
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--no-hybridize', dest='hybridize', action='store_false')
    g = p.add_argument_group('data loading and logging')
    g.add_argument('--prefetch-threads', type=int, default=1, help='loader workers')
    g.add_argument('--prefetcher', choices=('thread', 'process'), default='thread')
    g.add_argument('--log-file', default=None)
    g.add_argument('--debug', action='store_true')
    g.add_argument('--no-progress', dest='progress', action='store_false')
    return p


def config_from_args(args):
    """The :class:`iclass.train.Config` of parsed options (lists from their comma forms)."""
    from iclass.train import Config
    from rn38.cli import config_from_args as build_config
    from rn38.devices import default_devices

    def ints(option):
        text = getattr(args, option.lstrip('-').replace('-', '_'))
        try:
            return tuple(int(s) for s in text.split(',') if s.strip())
        except ValueError:
            raise ValueError('%s takes comma-separated integers, got %r'
                             % (option, text)) from None
    return build_config(
        Config, args, test_scales=ints('--test-scales'), lr_steps=ints('--lr-steps'),
        keep_epochs=ints('--keep-epochs'),
        gpus=default_devices() if args.gpus is None else args.gpus,
        choose_interp_method=(args.phase == 'train' if args.choose_interp_method is None
                              else args.choose_interp_method))


def check_options(cfg):
    """ValueError naming the option for what can be told before any work: devices that
    this machine lacks, an output folder that cannot be written, a step schedule without
    steps."""
    from rn38.checks import available_devices, writable_folder
    if cfg.phase == 'train' and cfg.lr_type == 'step' and not cfg.lr_steps:
        raise ValueError('--lr-type step needs --lr-steps (the update counts where the rate '
                         'is multiplied by --lr-factor)')
    available_devices(cfg.gpus, '--gpus')
    if cfg.output is not None:
        writable_folder(cfg.output, '--output')
    elif cfg.phase == 'train' or cfg.weights:
        try:
            writable_folder('output' if cfg.phase == 'train' else
                            os.path.dirname(cfg.weights) or '.', 'output folder')
        except ValueError as err:
            raise ValueError('%s; give --output <folder>%s' % (
                err, ' (by default --phase val writes beside --weights)'
                if cfg.phase == 'val' else '')) from None
    if cfg.log_file is not None:
        writable_folder(os.path.dirname(os.path.abspath(cfg.log_file)), '--log-file')


def main(argv=None):
    """Run the command line (also the ``rn38-ilsvrc`` command); returns the exit status: 0,
    2 after one ``error:`` line for bad input, 130 after Ctrl-C (see
    :func:`rn38.cli.run_command`)."""
    return run_command(_command, argv)


def _command(argv):
    args = build_parser().parse_args(argv)
    # before MXNet runs anything: its engine and workspaces follow the options
    from rn38.runtime import configure_mxnet
    configure_mxnet(debug=args.debug, mirror=args.phase == 'train' and args.backward_do_mirror,
                    training=args.phase == 'train')
    cfg = config_from_args(args)
    check_options(cfg)
    from iclass import train as cls_train
    if cfg.phase == 'val':
        cls_train.validate(cfg)
    else:
        cls_train.train(cfg)


if __name__ == '__main__':
    sys.exit(main())
