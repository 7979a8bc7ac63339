#!/usr/bin/env python3
"""Training benchmarks: one function per mode, one table printer.

``--mode memory`` measures what the user runs: for each crop, the training entry
(``issegm/cityscapes.py --phase train``, or ``iclass/ilsvrc.py --phase train`` with
``--task classification``) with its defaults, once plain and once with
``--backward-do-mirror``, and the same network exported and driven by ``mx.mod.Module``
as in the authors' code (the anchor), each in a fresh process. Per process:

* ``peak``: whole-process peak RSS in MiB (``ru_maxrss`` of the child from ``wait4``, the
  figure ``/usr/bin/time -f %M`` prints), including data loading and checkpointing;
* ``step``: the median seconds of the training updates after the first (the entry's
  ``history.json`` records each update's time; the anchor times its own steps).

* ``train``: the peak RSS the trainer logged at the end of the epoch, before writing the
  checkpoint (``peak_rss_mib`` of ``history.json``): the training steps' peak.

``base`` is the whole-process peak of the plain entry at a 32-pixel crop (weights,
gradients, optimizer state, libraries, loading the weights, writing the checkpoint);
``act ratio = (peak mirror - base) / (peak plain - base)`` (meaningless when the mirrored
peak is below ``base``: the whole process then peaks outside the training steps). The
entries train one epoch on ``--images`` generated images (``scripts/make_demo_data.py``
at 1024x2048, or ImageNet-layout images for classification) in a temporary folder, or on
``--data-root``; segmentation starts from ImageNet weights as the published recipe does
(the reference values of :mod:`rn38.synthetic` unless ``--weights`` is given). Example (released A1-s8, crop 256 and 504, batch 1)::

    python scripts/bench_train.py --mode memory --crops 256,504

``--search-plan`` (memory mode, segmentation) then measures the planning table: for each
budget, starting at the crop the fit plans, the entry trains one update on one generated
image per probe, in a fresh process, until the largest crop within the budget and the
smallest over it are ``--plan-resolution`` pixels apart (:func:`search_largest_crop`).

``--mode speed``: ours against the Module in one process (step times alternately).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ENTRIES = {'segmentation': os.path.join(ROOT, 'issegm', 'cityscapes.py'),
           'classification': os.path.join(ROOT, 'iclass', 'ilsvrc.py')}
DEFAULT_MODEL = {'segmentation': 'cityscapes_rna-a1_cls19_s8',
                 'classification': 'ilsvrc-cls_rna-a1_cls1000'}


def peak_rss_mib():
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_measured(cmd, timeout, env=None):
    """Run ``cmd`` in a fresh process; ``(peak RSS MiB, stdout)``. RuntimeError if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = time.time() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError('timed out after %.0f s: %s' % (timeout, ' '.join(cmd)))
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError('%s failed (%d):\n%s' % (' '.join(cmd), proc.returncode,
                                                        err.read().decode()[-3000:]))
        return usage.ru_maxrss / 1024.0, out.read().decode()


def make_data(task, images, folder):
    """Generated training data for ``task`` in ``folder``; returns the data root."""
    if task == 'segmentation':
        from make_demo_data import make_demo_dataset  # beside this script
        make_demo_dataset(folder, train=images, val=1, height=1024, width=2048, color=False)
    else:
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            'make_imagenet', os.path.join(ROOT, 'tests', 'make_imagenet.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        make_imagenet = module.make_imagenet
        make_imagenet(folder, classes=5, per_class=-(-images // 5), val_per_class=1)
    return folder


IMAGENET_WEIGHTS = 'ilsvrc-cls_rna-a1_cls1000_ep-0001.params'


def child_weights(args):
    """Write the ImageNet classifier's weights with the project's reference values
    (:mod:`rn38.synthetic`, sane BatchNorm statistics) to ``args.out`` (released format)."""
    import mxnet as mx
    from rn38.params import save_arrays
    from rn38.synthetic import net_entries, synthetic_arrays
    from rn38.zoo import get_model
    net = get_model(IMAGENET_WEIGHTS.split('_ep-')[0], 'classification')
    arrays = synthetic_arrays(net_entries(net))
    save_arrays({k: mx.nd.array(v) for k, v in arrays.items()}, args.out)


def entry_command(args, crop, mirror, out_dir):
    """The user's training command for one epoch at ``crop``."""
    cmd = [sys.executable, ENTRIES[args.task], '--phase', 'train', '--model', args.model,
           '--data-root', args.data_root, '--crop-size', str(crop),
           '--batch-images', str(args.batch), '--to-epoch', '1', '--output', out_dir,
           '--no-progress']
    if args.weights:
        cmd += ['--weights', args.weights]
    if mirror:
        cmd.append('--backward-do-mirror')
    return cmd


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def run_entry(args, crop, mirror):
    """``{'peak': MiB, 'step': s}`` of the entry in a fresh process."""
    with tempfile.TemporaryDirectory(prefix='bench_train_') as out_dir:
        peak, _ = run_measured(entry_command(args, crop, mirror, out_dir), args.timeout)
        with open(os.path.join(out_dir, 'history.json')) as f:
            history = json.load(f)
    seconds = [u['seconds'] for u in history['updates']]
    return {'peak': peak, 'step': _median(seconds[1:] or seconds),
            'logged peak': history['epochs'][-1]['peak_rss_mib']}


def run_module(args, crop):
    """``{'peak': MiB, 'step': s}`` of the Module anchor in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), '--child', 'module', '--task', args.task,
           '--model', args.model, '--crop', str(crop), '--batch', str(args.batch),
           '--steps', str(args.steps)]
    peak, out = run_measured(cmd, args.timeout)
    return {'peak': peak, 'step': json.loads(out.strip().splitlines()[-1])['step']}


def child_module(args):
    """The anchor, in this fresh process: our network's symbol (the authors' graph) with a
    softmax output, bound and trained by ``mx.mod.Module`` (SGD, momentum 0.9), one
    warm-up step then ``--steps`` timed ones on random data; prints one JSON line."""
    import mxnet as mx
    import numpy as np
    from rn38.zoo import get_model

    seg = args.task == 'segmentation'
    mx.random.seed(0)
    net = get_model(args.model, args.task, freeze_bn=seg)
    sym = net(mx.sym.var('data'))
    params = net.collect_params()
    arg_names, aux_names = set(sym.list_arguments()), set(sym.list_auxiliary_states())
    arg_params = {n: p.data() for n, p in params.items() if n in arg_names}
    aux_params = {n: p.data() for n, p in params.items() if n in aux_names}
    classes, stride = net.classes, getattr(net, 'feat_stride', None)
    del net, params
    rs = np.random.RandomState(0)
    x = mx.nd.array(rs.standard_normal((args.batch, 3, args.crop, args.crop)))
    if seg:
        side = -(-args.crop // stride)
        y = mx.nd.array(rs.randint(0, classes, (args.batch, side * side)))
        sym = mx.sym.SoftmaxOutput(sym.reshape((0, 0, -1)), mx.sym.var('softmax_label'),
                                   multi_output=True, use_ignore=True, ignore_label=255,
                                   normalization='valid', name='softmax')
    else:
        y = mx.nd.array(rs.randint(0, classes, (args.batch,)))
        sym = mx.sym.SoftmaxOutput(sym, mx.sym.var('softmax_label'), name='softmax')
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[('data', x.shape)], label_shapes=[('softmax_label', y.shape)],
             for_training=True)
    mod.init_params(arg_params=arg_params, aux_params=aux_params)
    del arg_params, aux_params
    mod.init_optimizer(optimizer='sgd', optimizer_params={
        'learning_rate': 1e-6, 'momentum': 0.9, 'wd': 5e-4})
    batch = mx.io.DataBatch([x], [y])
    times = []
    for _ in range(args.steps + 1):
        start = time.time()
        mod.forward_backward(batch)
        mod.update()
        mx.nd.waitall()
        times.append(time.time() - start)
    print(json.dumps({'step': _median(times[1:])}), flush=True)


def prepare_weights(args, folder):
    """Segmentation without ``--weights``: write the ImageNet weights the entries start
    from into ``folder`` (fine-tuning, as the published recipe; random weights with frozen
    BatchNorm statistics diverge within a few updates)."""
    if args.task == 'segmentation' and args.weights is None:
        args.weights = os.path.join(folder, IMAGENET_WEIGHTS)
        run_measured([sys.executable, os.path.abspath(__file__), '--child', 'weights',
                      '--out', args.weights], args.timeout)


def mode_memory(args):
    """Rows of the memory table: one per crop; plain, mirror and Module side by side."""
    with tempfile.TemporaryDirectory(prefix='bench_train_data_') as data_dir:
        if args.data_root is None:
            args.data_root = make_data(args.task, args.images, data_dir)
        prepare_weights(args, data_dir)
        base = run_entry(args, 32, False)['peak'] if args.base else None
        rows = []
        for crop in args.crops:
            plain = run_entry(args, crop, False)
            mirror = run_entry(args, crop, True)
            module = run_module(args, crop) if args.module else None
            row = {'crop': crop, 'batch': args.batch}
            if base is not None:
                row['base MiB'] = base
            row.update({'peak plain': plain['peak'], 'peak mirror': mirror['peak']})
            row.update({'train plain': plain['logged peak'],
                        'train mirror': mirror['logged peak']})
            if module:
                row['peak Module'] = module['peak']
            if base is not None:
                act_plain = plain['peak'] - base
                row['act ratio'] = (mirror['peak'] - base) / act_plain if act_plain > 0 \
                    else float('nan')
            row.update({'step plain s': plain['step'], 'step mirror s': mirror['step']})
            if module:
                row['step Module s'] = module['step']
            row['mirror/plain time'] = mirror['step'] / plain['step']
            if module:
                row['Module/plain time'] = module['step'] / plain['step']
            rows.append(row)
            print_table([row], sys.stderr)   # progress: each row as soon as it is measured
        if args.search_plan and args.task == 'segmentation':
            args.plan_check = search_plan(args, planning_rows(rows))
    return rows


def search_largest_crop(measure, budget_mib, start, origin_mib, multiple=8, resolution=32,
                        max_probes=6):
    """The largest crop whose measured peak is within ``budget_mib``, by measurement.

    ``measure(crop) -> peak MiB``, or None where the entry refuses the crop (taken as too
    large). Starts at ``start``; each next crop solves ``peak = budget`` on the line
    ``peak(crop^2)`` through the two measured crops nearest the budget (while only one is
    measured: through it and ``origin_mib``, the peak at crop 0), rounded down to ``multiple``;
    a solution within ``resolution`` of the largest crop within the budget (or of the
    smallest over it) is moved ``resolution`` away from it, so that the next probe can
    close the bracket. Stops when those two crops are at most ``resolution`` apart or
    after ``max_probes`` runs. Returns ``(within, over, probes)``: ``(crop, peak)`` pairs
    or None, and ``[(crop, peak or None), ...]`` in the order measured.
    """
    probes = []
    crop = max(multiple, start // multiple * multiple)
    while True:
        probes.append((crop, measure(crop)))
        fits = [(c, p) for c, p in probes if p is not None and p <= budget_mib]
        over = [(c, p) for c, p in probes if p is None or p > budget_mib]
        within = max(fits) if fits else None
        above = min(over) if over else None
        lo = within[0] if within else 0
        hi = above[0] if above else None
        if (hi is not None and hi - lo <= resolution) or len(probes) >= max_probes:
            return within, above, probes
        known = [(c, p) for c, p in probes if p is not None]
        if not known:                       # only refusals: step down
            target = hi - max(resolution, hi // 8)
        else:
            near = sorted(known, key=lambda cp: abs(cp[1] - budget_mib))[:2]
            c1, p1 = near[0]
            k = k_origin = (p1 - origin_mib) / float(c1 ** 2)
            if len(near) == 2 and near[1][1] != p1:
                c2, p2 = near[1]
                k = (p2 - p1) / float(c2 ** 2 - c1 ** 2)
            if k <= 0:          # the two probes show no growth: the line through the origin
                k = k_origin if k_origin > 0 else 1e-9
            target = max(c1 ** 2 + (budget_mib - p1) / k, 0.0) ** 0.5
        if within and target < lo + resolution:
            target = lo + resolution
        if hi is not None and target > hi - resolution:
            target = max(hi - resolution, lo + multiple)
        crop = int(target) // multiple * multiple
        if crop <= lo or (hi is not None and crop >= hi) or any(c == crop for c, _ in probes):
            return within, above, probes


def machine_memory_mib():
    """Physical memory of this machine, MiB (``MemTotal``)."""
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) / 1024.0
    return float('inf')


def search_plan(args, plan):
    """The planning table measured: for each mode and budget, the entry trains one update
    (one generated 1024x2048 image) per probe in a fresh process, from the fit's crop on
    (:func:`search_largest_crop`); budgets above this machine's memory are not run."""
    found = []
    ram = machine_memory_mib()
    with tempfile.TemporaryDirectory(prefix='bench_train_plan_') as data_dir:
        one = argparse.Namespace(**vars(args))
        one.data_root = make_data(args.task, 1, data_dir)
        for row in plan:
            if row['mode'] not in args.plan_modes:
                continue
            mirror = row['mode'] == 'mirror'
            for key, cell in row.items():
                if not key.startswith('crop <= ') or cell == '-':
                    continue
                budget = int(key.split()[2])
                result = {'mode': row['mode'], 'budget GiB': budget}
                if budget * 1024 > ram:
                    result.update({'largest within': '-', 'peak MiB': '-',
                                   'smallest over': '-', 'its peak MiB': '-',
                                   'probes': 'not run: the machine has %.1f GiB' % (ram / 1024)})
                    found.append(result)
                    print_table([result], sys.stderr)
                    continue

                def measure(crop, mirror=mirror):
                    try:
                        peak = run_entry(one, crop, mirror)['peak']
                    except RuntimeError as err:   # e.g. a crop the entry refuses
                        if 'larger than the largest rescaled image side' not in str(err):
                            raise
                        peak = None
                    print('  %s crop %d: %s' % (row['mode'], crop, 'refused by the entry'
                                                 if peak is None else '%.0f MiB' % peak),
                          file=sys.stderr, flush=True)
                    return peak

                origin = row['search from MiB']
                start = int((1e6 * (budget * 1024.0 - origin) / row['search MiB per Mpx']) ** 0.5)
                within, over, probes = search_largest_crop(
                    measure, budget * 1024.0, start, origin, resolution=args.plan_resolution)
                result.update({
                    'largest within': within[0] if within else '-',
                    'peak MiB': within[1] if within else '-',
                    'smallest over': over[0] if over else '-',
                    'its peak MiB': ('refused' if over[1] is None else over[1]) if over else '-',
                    'probes': len(probes)})
                found.append(result)
                print_table([result], sys.stderr)
    return found


def mode_speed(args):
    """Rows of the speed table: one training step (forward, backward, SGD update) of the
    same network, ours (hybridized Gluon, :func:`rn38.recompute.forward_backward`, the
    bootstrapped loss, gluon.Trainer) against the exported symbol driven by
    ``mx.mod.Module`` as the authors' code does (SoftmaxOutput loss), in this process."""
    import tempfile
    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from issegm.train import BootstrappedSoftmaxLoss
    from rn38 import recompute
    from rn38.zoo import get_model

    rows = []
    for crop in args.crops:
        mx.random.seed(0)
        net = get_model(args.model, 'segmentation', freeze_bn=True)
        recompute.hybridize_for_training(net)
        rs = np.random.RandomState(0)
        x = mx.nd.array(rs.standard_normal((args.batch, 3, crop, crop)))
        out = -(-crop // net.feat_stride)
        y = mx.nd.array(rs.randint(0, net.classes, (args.batch, out * out)))
        params = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
        trainer = gluon.Trainer(params, 'sgd', {'learning_rate': 1e-6, 'momentum': 0.9,
                                                'wd': 5e-4}, kvstore=None)
        loss = BootstrappedSoftmaxLoss()

        def ours():
            recompute.forward_backward(net, [x], [y], loss)
            trainer.step(1)
            mx.nd.waitall()

        ours()
        net(x)  # the whole-network graph, for export
        with tempfile.TemporaryDirectory() as tmp:
            net.export(os.path.join(tmp, 'net'), 0)
            sym, arg_params, aux_params = mx.model.load_checkpoint(os.path.join(tmp, 'net'), 0)
        sym = mx.sym.SoftmaxOutput(sym.reshape((0, 0, -1)), mx.sym.Variable('softmax_label'),
                                   multi_output=True, use_ignore=True, ignore_label=255,
                                   normalization='valid', name='softmax')
        mod = mx.mod.Module(sym, context=mx.cpu())
        mod.bind(data_shapes=[('data', x.shape)], label_shapes=[('softmax_label', y.shape)],
                 for_training=True)
        mod.init_params(arg_params=arg_params, aux_params=aux_params)
        mod.init_optimizer(optimizer='sgd', optimizer_params={
            'learning_rate': 1e-6, 'momentum': 0.9, 'wd': 5e-4})
        batch = mx.io.DataBatch([x], [y])

        def module():
            mod.forward_backward(batch)
            mod.update()
            mx.nd.waitall()

        module()
        times = {}
        for name, fn in (('ours', ours), ('module', module)) * args.steps:
            start = time.time()
            fn()
            times.setdefault(name, []).append(time.time() - start)
        t_ours, t_mod = float(np.median(times['ours'])), float(np.median(times['module']))
        rows.append({'model': args.model, 'crop': crop, 'batch': args.batch,
                     'Module step s': t_mod, 'ours step s': t_ours,
                     'Module / ours': t_mod / t_ours})
    return rows


def planning_rows(rows, budgets_gib=(8, 16, 24), multiple=8):
    """The largest crop that fits each memory budget, from the memory table.

    Model: the training step's peak (the ``train`` columns, logged by the trainer before
    the checkpoint) grows with the pixels, ``a + k * crop**2``, ``a`` and ``k`` through the
    two largest measured crops; the whole process also peaks at the ``base`` run's value
    (loading, checkpoint) whatever the crop. Crops rounded down to a ``multiple``; "(fit)"
    marks crops beyond the largest measured one (an extrapolation)."""
    if len(rows) < 2:
        return []
    (small, large), out = sorted(rows, key=lambda r: r['crop'])[-2:], []
    floor = rows[0].get('base MiB', 0.0)
    for mode in ('plain', 'mirror'):
        k = (large['train ' + mode] - small['train ' + mode]) / float(
            large['crop'] ** 2 - small['crop'] ** 2)
        a = large['train ' + mode] - k * large['crop'] ** 2
        row = {'mode': mode, 'MiB per Mpx': k * 1e6, 'MiB at crop 0': a}
        # the search starts from the line through the base and the largest crop (the
        # two-crop line underestimates the mirrored growth: the small crop's peak is
        # mostly the base)
        origin = floor or a
        row['search from MiB'] = origin
        row['search MiB per Mpx'] = 1e6 * max(large['train ' + mode] - origin, 1.0) / \
            large['crop'] ** 2
        for gib in budgets_gib:
            budget = gib * 1024.0
            if k <= 0 or budget < max(a, floor):
                row['crop <= %d GiB' % gib] = '-'
                continue
            crop = int(((budget - a) / k) ** 0.5) // multiple * multiple
            row['crop <= %d GiB' % gib] = '%d%s' % (crop, '' if crop <= large['crop'] else
                                                     ' (fit)')
        out.append(row)
    return out


MODES = {'memory': mode_memory, 'speed': mode_speed}


def print_table(rows, out=sys.stdout):
    """Print ``rows`` (list of dicts with the same keys) as an aligned text table."""
    if not rows:
        return
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return '%.2f' % v if abs(v) < 100 else '%.0f' % v
        return str(v)

    cells = [[fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    out.write('  '.join(k.rjust(w) for k, w in zip(keys, widths)) + '\n')
    for c in cells:
        out.write('  '.join(v.rjust(w) for v, w in zip(c, widths)) + '\n')
    out.flush()


def parse_args(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mode', choices=sorted(MODES), default='memory')
    ap.add_argument('--task', choices=sorted(ENTRIES), default='segmentation')
    ap.add_argument('--model', default=None,
                    help='model label (default: the released A1 s8 Cityscapes size; '
                         'ilsvrc-cls_rna-a1_cls1000 for classification)')
    ap.add_argument('--crops', type=lambda s: [int(c) for c in s.split(',')],
                    default=None, help='comma-separated square crop sizes (default: 256,504; '
                                       '224 for classification)')
    ap.add_argument('--batch', type=int, default=None,
                    help='images per batch (default: 1; 8 for classification)')
    ap.add_argument('--images', type=int, default=3,
                    help='training images generated for the entries (updates = images / batch)')
    ap.add_argument('--data-root', default=None, help='train on this data instead')
    ap.add_argument('--weights', default=None,
                    help='--weights of the entries (default for segmentation: ImageNet '
                         'weights with the reference values of rn38.synthetic)')
    ap.add_argument('--steps', type=int, default=2, help='timed steps (speed mode, anchor)')
    ap.add_argument('--no-base', dest='base', action='store_false',
                    help='skip the 32-pixel run that gives the base memory')
    ap.add_argument('--no-module', dest='module', action='store_false',
                    help='skip the mx.mod.Module anchor')
    ap.add_argument('--search-plan', action='store_true',
                    help='memory mode, segmentation: then find by measurement the largest '
                         'crop within each budget, starting at the planned crop')
    ap.add_argument('--plan-from', metavar='JSON',
                    help='memory mode: skip the table, take its rows from this file (written '
                         'by --json) and run --search-plan on them')
    ap.add_argument('--plan-modes', type=lambda v: v.split(','), default=['plain', 'mirror'],
                    help='--search-plan for these modes (comma-separated: plain,mirror)')
    ap.add_argument('--plan-resolution', type=int, default=32,
                    help='--search-plan stops when the largest crop within a budget and the '
                         'smallest over it are this close (pixels)')
    ap.add_argument('--timeout', type=float, default=3600, help='seconds per process')
    ap.add_argument('--json', help='also write the rows to this JSON file')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    ap.add_argument('--crop', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--out', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cls = args.task == 'classification'
    args.model = args.model or DEFAULT_MODEL[args.task]
    args.crops = args.crops or ([224] if cls else [256, 504])
    args.batch = args.batch or (8 if cls else 1)
    if not args.child and args.images < args.batch:
        ap.error('--images %d: need at least one batch (--batch %d)' % (args.images, args.batch))
    unknown = sorted(set(args.plan_modes) - {'plain', 'mirror'})
    if unknown:
        ap.error('--plan-modes %s: valid are plain, mirror' % ','.join(unknown))
    if args.plan_from and not os.path.isfile(args.plan_from):
        ap.error('--plan-from %s: no such file' % args.plan_from)
    return args


def main(argv=None):
    args = parse_args(argv)
    from rn38.runtime import use_all_cores
    use_all_cores()  # as the entries run (the children inherit it): before MXNet loads
    if args.child == 'module':
        child_module(args)
        return
    if args.child == 'weights':
        child_weights(args)
        return
    if args.plan_from:
        with open(args.plan_from) as f:
            rows = json.load(f)
        with tempfile.TemporaryDirectory(prefix='bench_train_data_') as folder:
            prepare_weights(args, folder)
            args.plan_check = search_plan(args, planning_rows(rows))
    else:
        rows = MODES[args.mode](args)
    print_table(rows)
    if args.mode == 'memory' and args.task == 'segmentation':
        plan = planning_rows(rows)
        if plan:
            print('\nlargest crop at batch %d within a budget of whole-process peak RSS '
                  '(peak = base + k * crop^2, k from the crops above):' % args.batch)
            print_table(plan)
        if getattr(args, 'plan_check', None):
            print('\nthe largest crop within each budget, measured (one update per probe, '
                  'whole-process peak RSS):')
            print_table(args.plan_check)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
