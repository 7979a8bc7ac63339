"""Export a ResNet-38 network with released-format weights to ONNX, checked by onnxruntime.

    python scripts/export_onnx.py --weights models/cityscapes_rna-a1_cls19_s8_ep-0001.params \\
        --output cityscapes_a1_s8.onnx [--input-size 512,1024] [--dynamic]

The model label comes from the weights file name (or ``--model``); segmentation labels
(``..._s8``) give the dilated FCN with scores ``(N, C, H/s, W/s)``, classification labels
the classifier with scores ``(N, C)``; both are pre-softmax scores, input ``data``
``float32 (N, 3, H, W)`` normalised as in training (``(pixel/255 - mean)/std``, RGB).
The weights are stored as initializers of the graph (its only input is ``data``).
``--dynamic`` leaves N, H and W free (H, W multiples of the stride for segmentation).

Before it reports success the script runs the written file with onnxruntime (CPU) on a
random input of the export size (and, with ``--dynamic``, on a second size) and
compares with MXNet's float32 scores: the largest absolute difference divided by the
largest absolute score must be at most ``--rtol`` (1e-4). Otherwise no file is left and
the exit status is 2. Needs the ``export`` extra: ``pip install -e '.[export]'``.
"""
import argparse
import importlib
import os
import re
import sys
import tempfile


def _size(text):
    try:
        parts = [int(p) for p in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError('expected H,W, got %r' % text) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError('expected H,W (positive), got %r' % text)
    return tuple(parts)


def parse_args(argv=None):
    from rn38.cli import add_model_options
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, 'cityscapes_rna-a1_cls19_s8', 'the network to export', required=True)
    p.add_argument('--output', required=True, help='the .onnx file to write')
    p.add_argument('--input-size', type=_size, default=None,
                   help='H,W of the exported input (default: 512,1024 for segmentation, '
                        '224,224 for classification)')
    p.add_argument('--batch', type=int, default=1, help='N of the exported input')
    p.add_argument('--dynamic', action='store_true', help='free batch size, height and width')
    p.add_argument('--rtol', type=float, default=1e-4,
                   help='largest allowed max|onnx - mxnet| / max|mxnet| of the check')
    p.add_argument('--pool-top-infer-style', choices=('caffe', 'same'), default=None,
                   help='Model A max-pool convention (classification; default caffe)')
    return p.parse_args(argv)


class CheckFailed(ValueError):
    """The exported model does not reproduce MXNet's scores (reported like bad input: one
    line, exit status 2)."""


def task_of(label):
    """``'segmentation'`` for labels with an output stride (``_s8``), else classification."""
    return 'segmentation' if re.search(r'_s\d+(_|$)', label) else 'classification'


def build_net(label, weights, pool_style=None):
    from rn38 import zoo
    task = task_of(label)
    kwargs = {'pool_style': pool_style} if task == 'classification' else {}
    net = zoo.build_model(label, task, **kwargs)
    from rn38.params import load_params
    load_params(net, weights)
    net.hybridize(static_alloc=True)
    return net, task


def relative_error(ours, reference):
    """``max|ours - reference| / max|reference|``."""
    import numpy as np
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


def export(net, shape, path, dynamic=False):
    """Write ``net`` (run once at ``shape``) as ONNX to ``path``; returns the opset.

    The MXNet exporter also lists the weights as graph inputs; they are removed there so
    the weights are fixed initializers and ``data`` is the only input."""
    import mxnet as mx
    import numpy as np
    import onnx
    net(mx.nd.zeros(shape)).wait_to_read()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, 'net')
        net.export(prefix, 0)
        sym, args, auxs = mx.model.load_checkpoint(prefix, 0)
    params = dict(args)
    params.update(auxs)
    dyn_shapes = [(None, 3, None, None)] if dynamic else None
    mx.onnx.export_model(sym, params, in_shapes=[shape], in_types=[np.float32],
                         onnx_file_path=path, dynamic=dynamic,
                         dynamic_input_shapes=dyn_shapes)
    model = onnx.load(path)
    initializers = {t.name for t in model.graph.initializer}
    missing = set(params) - initializers
    if missing:
        raise RuntimeError('weights missing from the ONNX initializers: %s'
                           % ', '.join(sorted(missing)[:5]))
    kept = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def check_with_onnxruntime(net, path, shapes, seed=0):
    """Largest relative error of onnxruntime (CPU) against MXNet over inputs of ``shapes``."""
    import mxnet as mx
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    inputs = [i.name for i in session.get_inputs()]
    if inputs != ['data']:
        raise RuntimeError('graph inputs are %s, expected only data' % inputs)
    rng = np.random.RandomState(seed)
    worst = 0.0
    for shape in shapes:
        x = rng.uniform(-2, 2, shape).astype(np.float32)
        reference = net(mx.nd.array(x)).asnumpy()
        ours = session.run(None, {'data': x})[0]
        if ours.shape != reference.shape:
            raise RuntimeError('onnxruntime output %s, MXNet %s for input %s'
                               % (ours.shape, reference.shape, shape))
        worst = max(worst, relative_error(ours, reference))
    return worst


def main(argv=None):
    """Run the command line; returns the exit status: 0, 2 after one ``error:`` line (bad
    input, a missing export extra, a failed check), 130 after Ctrl-C."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    args = parse_args(argv)
    for module in ('onnx', 'onnxruntime'):  # the export extra, before any work
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError("%s; install the export extra: pip install -e '.[export]'"
                             % err) from None
    from rn38 import zoo
    label = args.model or zoo.label_from_weights(args.weights)[0]
    net, task = build_net(label, args.weights, args.pool_top_infer_style)
    h, w = args.input_size or ((512, 1024) if task == 'segmentation' else (224, 224))
    if task == 'segmentation' and (h % net.feat_stride or w % net.feat_stride):
        raise ValueError('--input-size %d,%d: use multiples of the stride %d'
                         % (h, w, net.feat_stride))
    shape = (args.batch, 3, h, w)
    shapes = [shape]
    if args.dynamic:  # a second size, to check that the free dimensions really are free
        step = net.feat_stride if task == 'segmentation' else 16
        shapes.append((args.batch + 1, 3, h + step, w - step if w > step else w + step))
    from rn38.atomic import atomic_path
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise ValueError('--output %s: folder %s does not exist' % (args.output, out_dir))
    with atomic_path(args.output) as tmp:  # renamed to --output only if the check passes
        opset = export(net, shape, tmp, args.dynamic)
        error = check_with_onnxruntime(net, tmp, shapes)
        if not error <= args.rtol:
            raise CheckFailed('onnxruntime differs from MXNet: relative error %.3g > %.3g; '
                              'no file written' % (error, args.rtol))
    print('exported %s (%s, input data %s%s) to %s: ONNX opset %d, %.1f MB; onnxruntime '
          'matches MXNet: relative error %.2g <= %.2g on %s'
          % (label, task, 'x'.join(map(str, shape)), ', dynamic N,H,W' if args.dynamic else '',
             args.output, opset, os.path.getsize(args.output) / 1e6, error, args.rtol,
             ', '.join('x'.join(map(str, s)) for s in shapes)))


if __name__ == '__main__':
    sys.exit(main())
