#!/usr/bin/env python3
"""ResNet-38 and the systems it is compared with, side by side in one run.

Every row runs what a user runs. Costs come from a fresh subprocess per row (so that its
peak memory is its own): the parameter count, GFLOPs (2 x multiply-adds of the
convolutions, transposed convolutions and FC layers) and the time of one forward of the
hybridized network at 1x3x512x1024 (after one warm-up forward), and one training step
(forward, backward, SGD-momentum update, batch 1, crop 504, the entry's loss) with the
peak resident memory of that process after it (``ru_maxrss``: weights, gradients,
optimizer state, activations and the libraries). Then every row is trained for the same
budget (the same updates, batch and crop) on the same generated Cityscapes-layout demo
data with ``issegm/cityscapes.py --phase train`` and evaluated with ``--phase val``; the
table gives the mean IoU reached. Everything starts from scratch (no ImageNet weights
here), so BatchNorm statistics are learned (``--bn-stats batch``) except in the Watershed
row, which keeps its own rule (``frozen-backbone``).

    flock /tmp/rn38-heavy.lock python scripts/compare_models.py --out /tmp/compare
    python scripts/compare_models.py --quick --rows a1-mini,fcn32s   # small shapes

Writes ``<out>/compare.md`` (the table), ``<out>/compare.json`` and ``<out>/compare.png``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# key -> (name, model label, recipe options of the entry)
ROWS = {
    'a1-mini': ('ResNet-38 A1-mini s8', 'cityscapes_rna-a1-mini_cls19_s8',
                ['--bn-stats', 'batch']),
    'a1': ('ResNet-38 A1 s8', 'cityscapes_rna-a1_cls19_s8', ['--bn-stats', 'batch']),
    'watershed': ('ResNet-38 A1 s8, Watershed recipe', 'cityscapes_rna-a1_cls19_s8',
                  ['--head', 'bn-2conv', '--bn-stats', 'frozen-backbone',
                   '--image-norm', 'per-image']),
    'fcn32s': ('FCN32s-VGG16', 'cityscapes_fcn32s-vgg16_cls19',
               ['--bn-stats', 'batch', '--loss', 'softmax']),
    'deeplabv3': ('DeepLabv3-ResNet101 (GluonCV)', 'cityscapes_deeplabv3-resnet101_cls19',
                  ['--bn-stats', 'batch', '--loss', 'softmax']),
    'deconvnet': ('DeconvNet-VGG16-BN', 'cityscapes_deconvnet-vgg16bn_cls19',
                  ['--bn-stats', 'batch', '--loss', 'softmax', '--base-lr', '0.01']),
}


def _option(options, name, default):
    return options[options.index(name) + 1] if name in options else default


def flops_of(net, shape):
    """2 x multiply-adds of Conv2D, Conv2DTranspose and Dense for one input ``shape``
    (counted with forward hooks on the imperative network)."""
    import mxnet as mx
    import numpy as np
    nn = mx.gluon.nn
    total = [0]

    def hook(block, inputs, output):
        w = block.weight.shape
        if isinstance(block, nn.Conv2DTranspose):  # every input cell meets the whole kernel
            total[0] += 2 * int(np.prod(w)) * int(np.prod(inputs[0].shape[2:])) * \
                inputs[0].shape[0]
        elif isinstance(block, nn.Conv2D):
            total[0] += 2 * int(np.prod(w[1:])) * int(np.prod(output.shape[1:])) * \
                output.shape[0]
        else:
            total[0] += 2 * int(np.prod(w)) * output.shape[0]

    handles = []
    net.apply(lambda b: handles.append(b.register_forward_hook(hook))
              if isinstance(b, (nn.Conv2D, nn.Conv2DTranspose, nn.Dense)) else None)
    net(mx.nd.zeros(shape)).wait_to_read()
    for h in handles:
        h.detach()
    return total[0]


def child_measure(key, forward_shape, crop):
    """One row's costs, printed as JSON (run in a fresh process)."""
    import mxnet as mx
    import numpy as np
    from rn38 import zoo
    from rn38.recompute import forward_backward
    from rn38.train import make_trainer, set_lr_wd_mults
    from issegm.train import BootstrappedSoftmaxLoss
    name, label, options = ROWS[key]
    kwargs = {'bn_stats': _option(options, '--bn-stats', 'frozen')}
    if zoo.parse_label(label).family == 'rna':
        kwargs['head'] = _option(options, '--head', '2conv')
    mx.random.seed(0)
    net = zoo.get_model(label, 'segmentation', **kwargs)
    params = sum(int(np.prod(p.shape)) for p in net.collect_params().values())
    set_lr_wd_mults(net, double_bias_lr=True)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = make_trainer(net, 'sgd', {'learning_rate': 1e-4, 'momentum': 0.9, 'wd': 5e-4},
                           'local', 1)
    loss = BootstrappedSoftmaxLoss() if _option(options, '--loss', 'ohem') == 'ohem' else \
        BootstrappedSoftmaxLoss(thresh=1.0, min_kept=0)
    x = mx.nd.random.uniform(-1, 1, shape=(1, 3, crop, crop))
    out_shape = net(x).shape
    rng = np.random.RandomState(0)
    y = mx.nd.array(rng.randint(0, 19, (1, out_shape[2] * out_shape[3])).astype(np.float32))

    def step():
        forward_backward(net, [x], [y], loss)
        trainer.step(1)
        mx.nd.waitall()

    step()  # warm-up
    start = time.perf_counter()
    step()
    step_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # forward at the benchmark size: hybridized (warm-up + timed), then GFLOPs imperatively
    big = mx.nd.random.uniform(-1, 1, shape=forward_shape)
    net(big).wait_to_read()
    start = time.perf_counter()
    net(big).wait_to_read()
    forward_seconds = time.perf_counter() - start
    net.hybridize(False)
    gflops = flops_of(net, forward_shape) / 1e9
    print(json.dumps({'params': params, 'gflops': gflops, 'forward_s': forward_seconds,
                      'step_s': step_seconds, 'peak_mib': peak}), flush=True)


def _run(cmd, timeout, log):
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO))
    with open(log, 'a') as f:
        f.write('$ %s\n%s\n' % (' '.join(cmd), proc.stdout))
    if proc.returncode != 0:
        raise RuntimeError('%s failed (see %s):\n%s' % (' '.join(cmd[:3]), log,
                                                         proc.stdout[-2000:]))
    return proc.stdout, time.time() - start


def train_and_score(key, args, data_root, log):
    """Train row ``key`` for the budget with the Cityscapes entry, evaluate: (mIoU, seconds)."""
    name, label, options = ROWS[key]
    out = os.path.join(args.out, key)
    entry = os.path.join(REPO, 'issegm', 'cityscapes.py')
    common = ['--data-root', data_root, '--gpus', 'cpu', '--no-progress']
    lr = [] if '--base-lr' in options else ['--base-lr', str(args.base_lr)]
    _, seconds = _run([sys.executable, entry, '--phase', 'train', '--model', label,
                       '--crop-size', str(args.train_crop), '--origin-size', str(args.width),
                       '--batch-images', str(args.batch), '--to-epoch', str(args.epochs),
                       '--output', out] + options + lr + common, args.timeout, log)
    weights = os.path.join(out, '%s_ep-%04d.params' % (label, args.epochs))
    val_options = [o for i, o in enumerate(options) if o in ('--head', '--image-norm') or
                   (i > 0 and options[i - 1] in ('--head', '--image-norm'))]
    _run([sys.executable, entry, '--phase', 'val', '--weights', weights, '--test-scales',
          str(args.width), '--no-official-eval'] + val_options + common, args.timeout, log)
    with open(os.path.join(out, '%s_ep-%04d' % (label, args.epochs), 'summary.json')) as f:
        return json.load(f)['mean_iou'], seconds


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metrics = [('params_m', 'parameters (M)'), ('gflops', 'GFLOPs at 512x1024'),
               ('forward_s', 'forward s at 512x1024'), ('step_s', 'train step s, crop 504'),
               ('peak_mib', 'peak memory MiB'), ('miou', 'demo mIoU (%)')]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    names = [r['name'] for r in rows]
    for ax, (key, title) in zip(axes.ravel(), metrics):
        ax.barh(range(len(rows)), [r[key] for r in rows], color='tab:blue')
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names if ax in axes[:, 0] else [''] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
    fig.tight_layout()
    from rn38.atomic import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format='png')
    plt.close(fig)


def table(rows, args):
    lines = ['| model | parameters (M) | GFLOPs 512x1024 | forward s 512x1024 | train step s '
             '(crop %d) | peak MiB | demo mIoU %% | demo training s |' % args.crop,
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %.1f | %.0f | %.2f | %.2f | %.0f | %.1f | %.0f |' % (
            r['name'], r['params_m'], r['gflops'], r['forward_s'], r['step_s'],
            r['peak_mib'], r['miou'], r['train_s']))
    return '\n'.join(lines)


def parse_args(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    p = ArgumentParser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='/tmp/rn38-compare')
    p.add_argument('--rows', default=','.join(ROWS), help='subset of: %s' % ', '.join(ROWS))
    p.add_argument('--quick', action='store_true',
                   help='small shapes (forward 1x3x256x512, step crop 224) for a smoke run')
    p.add_argument('--epochs', type=int, default=1, help='training budget, epochs')
    p.add_argument('--train-images', type=int, default=8)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--train-crop', type=int, default=224, help='crop of the demo training')
    p.add_argument('--base-lr', type=float, default=0.0016)
    p.add_argument('--width', type=int, default=256, help='demo image width (height = /2)')
    p.add_argument('--timeout', type=int, default=1200, help='seconds per subprocess')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.forward_shape = (1, 3, 256, 512) if args.quick else (1, 3, 512, 1024)
    args.crop = 224 if args.quick else 504
    unknown = [k for k in args.rows.split(',') if k not in ROWS]
    if unknown:
        p.error('unknown row %s; valid: %s' % (unknown[0], ', '.join(ROWS)))
    return args


def main(argv=None):
    """Run the command line; returns the exit status (2 after one ``error:`` line)."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    args = parse_args(argv)
    if args.child:
        child_measure(args.child, args.forward_shape, args.crop)
        return 0
    import mxnet as mx
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, 'compare.log')
    data_root = os.path.join(args.out, 'demo')
    if not os.path.isdir(os.path.join(data_root, 'gtFine')):
        _run([sys.executable, os.path.join(HERE, 'make_demo_data.py'), '--out', data_root,
              '--train', str(args.train_images), '--val', '8', '--height',
              str(args.width // 2), '--width', str(args.width)], args.timeout, log)
    rows = []
    keys = args.rows.split(',')
    start = time.time()
    nan = float('nan')
    for i, key in enumerate(keys):
        cmd = [sys.executable, os.path.abspath(__file__), '--child', key]
        if args.quick:
            cmd.append('--quick')
        row = {k: nan for k in ('params', 'gflops', 'forward_s', 'step_s', 'peak_mib',
                                'miou', 'train_s')}
        try:  # a failed row is reported as such; the others still run
            out, _ = _run(cmd, args.timeout, log)
            row.update(json.loads(out.strip().splitlines()[-1]))
            row['miou'], row['train_s'] = train_and_score(key, args, data_root, log)
            row['miou'] *= 100
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
            row['error'] = str(err).splitlines()[0]
            print('row %s failed: %s' % (key, row['error']), file=sys.stderr, flush=True)
        row['name'], row['label'] = ROWS[key][0], ROWS[key][1]
        row['options'] = ' '.join(ROWS[key][2])
        row['params_m'] = row['params'] / 1e6
        rows.append(row)
        print('[%d/%d %.0f s] %s: %s' % (i + 1, len(keys), time.time() - start, key,
                                         json.dumps(row)), flush=True)
    text = table(rows, args)
    header = ('machine: %d cores, MXNet %s; forward %s, train step batch 1 crop %d; demo: %d '
              'train images %dx%d, batch %d, crop %d, %d epoch(s), same for every row'
              % (os.cpu_count(), mx.__version__, 'x'.join(map(str, args.forward_shape)),
                 args.crop, args.train_images, args.width // 2, args.width, args.batch,
                 args.train_crop, args.epochs))
    print(header)
    print(text)
    from rn38.atomic import atomic_write_bytes, write_json
    atomic_write_bytes(os.path.join(args.out, 'compare.md'),
                       (header + '\n\n' + text + '\n').encode())
    write_json({'args': {k: v for k, v in vars(args).items() if k != 'forward_shape'},
                'rows': rows}, os.path.join(args.out, 'compare.json'))
    plot(rows, os.path.join(args.out, 'compare.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
