#!/usr/bin/env python3
"""CPU threads: the user's prediction command with the thread count the entries choose
against MXNet's own default, each in fresh processes, timed in turns.

    python scripts/bench_threads.py [--model cityscapes_rna-a1_cls19_s8]
        [--height 512 --width 1024] [--rounds 2]

Writes the released architecture with the project's reference weights (:mod:`rn38.synthetic`,
released format) and one generated street scene (``scripts/make_demo_data.py``) into a
temporary folder, then runs ``issegm/predict.py`` on it, alternately:

* as the user runs it: no thread setting in the environment, so the entry gives MXNet one
  OpenMP thread per physical core (:func:`rn38.runtime.use_all_cores`);
* with ``MXNET_OMP_MAX_THREADS`` set to what MXNet 1.9 chooses by itself on x86: half the
  logical CPUs, at least one.

Prints the seconds of each whole command (start, loading, forward, writing) and the ratio of
the medians; identical settings (both counts equal, e.g. on a hyper-threaded machine) are
reported and not timed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write_inputs(folder, model, height, width):
    """``(weights path, image path)`` in ``folder``."""
    import cv2
    import numpy as np
    import mxnet as mx
    import issegm
    from make_demo_data import render_scene  # beside this script
    from rn38.params import save_arrays
    from rn38.synthetic import net_entries, synthetic_arrays
    net = issegm.get_model(model)
    net(mx.nd.zeros((1, 3, 64, 64)))
    weights = os.path.join(folder, model + '_ep-0001.params')
    save_arrays({k: mx.nd.array(v) for k, v in synthetic_arrays(net_entries(net)).items()},
                weights)
    image = os.path.join(folder, 'scene.png')
    rgb = render_scene(height, width, np.random.default_rng(0))[0]
    cv2.imwrite(image, rgb[:, :, ::-1])
    return weights, image


def run_predict(weights, image, output, threads):
    """Seconds of one ``issegm/predict.py`` process; ``threads`` None: the user's default."""
    from rn38.runtime import USER_THREADS, OMP_THREADS
    env = {k: v for k, v in os.environ.items() if k not in USER_THREADS}
    if threads is not None:
        env[OMP_THREADS] = str(threads)
    cmd = [sys.executable, os.path.join(ROOT, 'issegm', 'predict.py'), '--weights', weights,
           '--input', image, '--output', output, '--gpus', '', '--no-progress']
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (' '.join(cmd), proc.stderr[-2000:]))
    return time.time() - start


def main(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    p = ArgumentParser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='cityscapes_rna-a1_cls19_s8')
    p.add_argument('--height', type=int, default=512)
    p.add_argument('--width', type=int, default=1024)
    p.add_argument('--rounds', type=int, default=2)
    args = p.parse_args(argv)
    from rn38.runtime import physical_cores
    chosen = physical_cores()
    mxnet_default = max(1, len(os.sched_getaffinity(0)) // 2)
    print('machine: %d logical CPUs, %d physical cores; entries: %d threads, MXNet default: %d'
          % (len(os.sched_getaffinity(0)), chosen, chosen, mxnet_default), flush=True)
    if chosen == mxnet_default:
        print('the two settings are the same here: nothing to compare')
        return 0
    import numpy as np
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        weights, image = write_inputs(tmp, args.model, args.height, args.width)
        for r in range(args.rounds):
            for threads, seconds in ((None, ours), (mxnet_default, theirs)):
                seconds.append(run_predict(weights, image, os.path.join(tmp, 'out'), threads))
                print('round %d, %d threads: %.2f s' % (r + 1, threads or chosen, seconds[-1]),
                      flush=True)
    print('| model | image | entry default | s | MXNet default | s | MXNet time / entry time |')
    print('|---|---|---|---|---|---|---|')
    print('| %s | %dx%d | %d threads | %.2f | %d threads | %.2f | %.2fx |'
          % (args.model, args.height, args.width, chosen, np.median(ours), mxnet_default,
             np.median(theirs), np.median(theirs) / np.median(ours)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
