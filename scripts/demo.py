"""The main job on embedded demo data: generate, train from scratch, evaluate, draw.

    python scripts/demo.py [--data-dir data/demo] [--output output/demo] [--epochs 30]

1. writes a synthetic street-scene dataset in the Cityscapes layout (scripts/make_demo_data.py),
2. trains the small variant ``cityscapes_rna-a1-mini_cls19_s8`` from scratch on the CPU with
   ``issegm/cityscapes.py --phase train`` (resumes from its last checkpoint if rerun),
3. evaluates the last checkpoint with ``--phase val`` (our scores and cityscapesscripts'),
4. draws ``predictions.png`` (image | prediction | ground truth for the val images) and keeps
   the loss curve, IoU bars and confusion matrix written by the trainer and the evaluation.
"""
import argparse
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

from make_demo_data import make_demo_dataset  # beside this script

MODEL = 'cityscapes_rna-a1-mini_cls19_s8'


def draw_predictions(data_root, result_dir, path, rows=4):
    """A grid, one val image per row: image | prediction | ground truth (Cityscapes colours)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from issegm.datasets import get_dataset_spec, read_label
    from rn38.image import read_image
    spec = get_dataset_spec('cityscapes')
    images = sorted(glob.glob(os.path.join(data_root, 'leftImg8bit', 'val', '*', '*.png')))[:rows]
    fig, axes = plt.subplots(len(images), 3, figsize=(12, 2.2 * len(images)), squeeze=False)
    for row, image_path in zip(axes, images):
        name = os.path.splitext(os.path.basename(image_path))[0]
        label_path = image_path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelIds.png')
        image = read_image(image_path)
        gt = read_label(spec, label_path, image.shape)
        color = read_image(os.path.join(result_dir, 'color', name + '.png'))
        for ax, picture, title in zip(row, (image, color, spec.palette[gt]),
                                      ('image', 'prediction', 'ground truth')):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    """Run the demo; returns the exit status (that of a failed step: 2 after one ``error:``
    line, 130 after Ctrl-C)."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    p = ArgumentParser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=os.path.join(REPO, 'data', 'demo'))
    p.add_argument('--output', default=os.path.join(REPO, 'output', 'demo'))
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--train-images', type=int, default=64)
    p.add_argument('--val-images', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-progress', dest='progress', action='store_false')
    args = p.parse_args(argv)
    from issegm import cli  # after run_command chose MXNet's threads

    if not os.path.isdir(os.path.join(args.data_dir, 'leftImg8bit', 'val')):
        make_demo_dataset(args.data_dir, seed=args.seed, train=args.train_images,
                          val=args.val_images, height=128, width=256)
    train_argv = ['--phase', 'train', '--data-root', args.data_dir, '--model', MODEL,
                  '--output', args.output, '--batch-images', '8', '--crop-size', '128',
                  '--origin-size', '256', '--scale-rate-range', '0.7,1.3',
                  '--lr-type', 'linear', '--base-lr', '0.05', '--to-epoch', str(args.epochs),
                  '--bn-stats', 'batch', '--prefetch-threads', '2', '--gpus', 'cpu',
                  '--seed', str(args.seed)]
    done = sorted(glob.glob(os.path.join(args.output, MODEL + '_ep-*.params')))
    if done:
        train_argv += ['--weights', done[-1]]
    if not args.progress:
        train_argv.append('--no-progress')
    status = cli.main('cityscapes', train_argv)
    if status:
        return status
    weights = os.path.join(args.output, '%s_ep-%04d.params' % (MODEL, args.epochs))
    val_argv = ['--phase', 'val', '--data-root', args.data_dir, '--weights', weights,
                '--test-scales', '256', '--output', args.output, '--gpus', 'cpu']
    if not args.progress:
        val_argv.append('--no-progress')
    status = cli.main('cityscapes', val_argv)
    if status:
        return status
    from issegm.evaluate import val_output_dir
    import json
    result_dir = val_output_dir(args.output, weights, 'val')
    summary = json.load(open(os.path.join(result_dir, 'summary.json')))
    picture = os.path.join(args.output, 'predictions.png')
    draw_predictions(args.data_dir, result_dir, picture)
    present = [v for v in summary['class_iou'].values() if v is not None]
    print('\ndemo done: val mean IoU %.1f%% over %d classes present (chance level: about '
          '%.0f%%), pixel accuracy %.1f%%'
          % (100 * summary['mean_iou'], len(present), 100.0 / len(present),
             100 * summary['pixel_accuracy']))
    if 'official' in summary:
        print('cityscapesscripts on the written label PNGs: class IoU %.1f%%'
              % (100 * summary['official']['mean_iou']))
    for path in (picture, os.path.join(args.output, 'loss_curve.png'),
                 os.path.join(result_dir, 'class_iou.png'),
                 os.path.join(result_dir, 'confusion.png'),
                 os.path.join(result_dir, 'summary.json')):
        print('  %s' % os.path.relpath(path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
