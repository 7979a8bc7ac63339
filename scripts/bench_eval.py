#!/usr/bin/env python
"""Where evaluation time goes: network forward vs. the work around it, on one image.

    OMP_NUM_THREADS=1 python scripts/bench_eval.py [--height 1024 --width 2048]
        [--model cityscapes_rna-a1_cls19_s8] [--weights synthetic|random|PATH]

Writes a synthetic Cityscapes-layout sample (image + labelIds) of the given size in a
temporary folder and runs :func:`issegm.evaluate.evaluate` on it once with a
:class:`SegPredictor` at the image's own scale (the Cityscapes protocol, one pass, no
flip), then prints the split of the measured time:

* network: forward + softmax + copy to host (``SegPredictor.timings['network']``);
* outside: resizing the image and the score maps back (``resize``), argmax, scoring
  (confusion counts), writing the label-id / colour / correct PNGs and the per-image
  record, and reading the image and ground truth.

and the ratio outside / network (target: <= 10%). A warm-up forward on a 64x64 input
comes first and is not counted. ``--weights synthetic`` (default) gives the released
architecture the project's deterministic reference weights (:mod:`rn38.synthetic`);
the numbers do not depend on the weight values. On CPU the released A1 s8 net at
1024x2048 needs about 5.5 GB of memory and a few minutes per core; ``--height 512
--width 1024`` is a quarter of that.
"""
import os
import sys
import tempfile
import time


def parse_args(argv=None):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--height', type=int, default=1024)
    parser.add_argument('--width', type=int, default=2048)
    parser.add_argument('--model', default='cityscapes_rna-a1_cls19_s8')
    parser.add_argument('--weights', default='synthetic',
                        help="'synthetic' (reference rule), 'random' (initializer) or a "
                             "released-format .params path")
    parser.add_argument('--gpus', default='', help='GPU ids; empty: CPU')
    return parser.parse_args(argv)


def build_net(label, weights, ctx):
    import mxnet as mx
    import issegm
    from rn38.params import load_params
    from rn38.synthetic import net_entries, synthetic_arrays
    if weights == 'random':
        return issegm.get_model(label, ctx=ctx)
    if weights != 'synthetic':
        return issegm.get_model(label, pretrained=weights, ctx=ctx)
    net = issegm.get_model(label, ctx=ctx)
    arrays = {k: mx.nd.array(v) for k, v in synthetic_arrays(net_entries(net)).items()}
    load_params(net, arrays, ctx)
    return net


def write_sample(root, height, width, seed=0):
    """One Cityscapes-layout val sample of ``height x width``; returns [(image, label)]."""
    import cv2
    import numpy as np
    rs = np.random.RandomState(seed)
    img_dir = os.path.join(root, 'leftImg8bit', 'val', 'bench')
    gt_dir = os.path.join(root, 'gtFine', 'val', 'bench')
    os.makedirs(img_dir)
    os.makedirs(gt_dir)
    # smooth-ish image (compresses like a photo), blocky labels of real labelIds
    small = rs.randint(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    ids = np.array([0, 7, 8, 11, 17, 21, 23, 24, 26], np.uint8)
    cells = rs.choice(ids, (height // 32 + 1, width // 32 + 1))
    label = cv2.resize(cells, (width, height), interpolation=cv2.INTER_NEAREST)
    image_path = os.path.join(img_dir, 'bench_000000_000000_leftImg8bit.png')
    label_path = os.path.join(gt_dir, 'bench_000000_000000_gtFine_labelIds.png')
    cv2.imwrite(image_path, image)
    cv2.imwrite(label_path, label)
    return [(image_path, label_path)]


def main(argv=None):
    args = parse_args(argv)
    from rn38.runtime import use_all_cores
    use_all_cores()  # as the entries run: before MXNet loads
    import mxnet as mx
    import numpy as np
    from issegm.datasets import get_dataset_spec
    from issegm.evaluate import evaluate
    from issegm.predictor import SegPredictor
    from rn38.zoo import parse_label

    ids = [g for g in args.gpus.split(',') if g.strip()]
    ctx = [mx.gpu(int(g)) for g in ids] if ids else [mx.cpu()]
    spec = get_dataset_spec(parse_label(args.model).dataset)
    t0 = time.perf_counter()
    net = build_net(args.model, args.weights, ctx)
    print('model %s (%s weights) built in %.1f s; input %dx%d, OMP_NUM_THREADS=%s'
          % (args.model, args.weights, time.perf_counter() - t0, args.height, args.width,
             os.environ.get('OMP_NUM_THREADS', 'unset')))
    predictor = SegPredictor(net, ctx)
    predictor.predict_probs(np.zeros((64, 64, 3), np.uint8))  # warm-up, not counted
    predictor.reset_timings()
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_sample(os.path.join(tmp, 'data'), args.height, args.width)
        start = time.perf_counter()
        result = evaluate(predictor, spec, samples, os.path.join(tmp, 'out'),
                          progress=False, plots=False)
        wall = time.perf_counter() - start
    t = result['timing']
    network = t['network']
    parts = [('resize image + normalise, resize maps back', t['resize']),
             ('other prediction work (pad, shift, interleave)',
              t['predict'] - t['network'] - t['resize']),
             ('argmax', t['argmax']), ('scoring (confusion counts)', t['score']),
             ('writing PNGs + record', t['write']), ('reading image + gt', t['read'])]
    outside = sum(v for _, v in parts)
    print('network forward                                   %9.3f s' % network)
    for name, value in parts:
        print('  %-48s%9.3f s' % (name, value))
    print('outside the network                               %9.3f s' % outside)
    print('outside / network                                 %9.2f %%  (target <= 10 %%)'
          % (100.0 * outside / network))
    print('evaluate() wall time %.3f s, of which summary/plots/other %.3f s'
          % (wall, wall - network - outside))
    return 0


if __name__ == '__main__':
    sys.exit(main())
