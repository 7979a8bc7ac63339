"""Memory-saving training (segment recomputation) and the forward + backward step over
per-device batch slices, shared by the segmentation and the classification trainers.

:func:`forward_backward` -- forward + backward over per-device batch slices (see
:func:`rn38.devices.split_batch`), gradients normalised by the global count, or per device
(the loss's ``normalization``), optionally with segment recomputation (``mirror``): the
network is cut into segments (:func:`stage_segments`, :func:`plan_segments`); the first
forward keeps only the segment boundary activations, the backward pass re-runs each segment
under ``autograd.record`` and back-propagates through it alone. The gradients equal those of
the plain pass (same dropout masks, BatchNorm running statistics updated once). A
convolution head (the FCN's ``conv6a`` + ReLU + ``linear``) is not recomputed and its input
gradient is a forward convolution with the flipped weights (:func:`_conv_input_grad`), not
MKLDNN's backward-data, whose im2col buffer for the dilated 4096-channel ``conv6a`` (585 MB
at crop 504) would otherwise dominate the peak.
"""
import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import nn

from .gluon_internals import (activation_type, conv_operator, dropout_rate, operator_settings,
                              uses_global_stats, walk_blocks)


# ---------------------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------------------


def stage_segments(net):
    """The recomputation units of ``net`` in forward order, or None if it exposes none.

    A network exposes them as ``net.recompute_units()`` (:class:`rn38.net.ResNet38FCN`,
    :class:`~rn38.net.ResNet38Classifier`): blocks that applied in order equal ``net(x)``,
    each parameter in exactly one of them.
    """
    units = getattr(net, 'recompute_units', None)
    return None if units is None else list(units())


def _has_dropout(block):
    return any(isinstance(b, nn.Dropout) and dropout_rate(b) > 0 for b in walk_blocks(block))


def _training_bns(block):
    """BatchNorm layers of ``block`` that update running statistics in training mode."""
    return [b for b in walk_blocks(block) if isinstance(b, nn.BatchNorm)
            and not uses_global_stats(b)]


def unit_costs(units, data_shape):
    """Memory estimates of each unit at input ``data_shape`` ``(N, C, H, W)``.

    Returns ``[(out_elems, internal_elems), ...]`` in elements (float32: x4 bytes):
    ``out_elems`` is the size of the unit's output (a segment boundary),
    ``internal_elems`` the summed size of every intermediate output of the unit's graph
    (what autograd keeps when the unit runs under ``record``), from symbolic shape
    inference; nothing runs on a device.
    """
    costs, shape = [], tuple(data_shape)
    for unit in units:
        sym = unit(mx.sym.var('data'))
        internals = sym.get_internals()
        variables = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
        _, out_shapes, _ = internals.infer_shape_partial(data=shape)
        internal = sum(int(np.prod(s)) for name, s in zip(internals.list_outputs(), out_shapes)
                       if name[:-len('_output')] not in variables and s)
        _, (out_shape,), _ = sym.infer_shape_partial(data=shape)
        out = int(np.prod(out_shape))
        costs.append((out, internal))
        shape = tuple(out_shape)
    return costs


def plan_peak(costs, bounds, grad_factor=2.0):
    """Modelled peak memory (elements) of recomputation with segments cut at ``bounds``.

    ``bounds``: sorted unit indices where segments start (``0`` first). While segment
    ``s`` is recomputed and back-propagated, the inputs of segments ``1..s`` are held
    (later ones were freed), plus the incoming gradient (segment output size) and
    ``grad_factor`` x the segment's internal activations (activations + their gradients).
    The last segment runs once under ``record`` with all boundaries held.
    """
    starts = list(bounds) + [len(costs)]
    held, peak = 0, 0
    for s in range(len(starts) - 1):
        i, j = starts[s], starts[s + 1]
        if s > 0:
            held += costs[i - 1][0]
        internal = sum(c[1] for c in costs[i:j])
        incoming = costs[j - 1][0] if j < len(costs) else 0
        peak = max(peak, held + incoming + grad_factor * internal)
    return peak


def plan_segments(units, data_shape, grad_factor=2.0):
    """Group ``units`` into contiguous segments minimising :func:`plan_peak`.

    Exact minimisation of the model (binary search on the peak, dynamic programming over
    where segments start). Returns a list of segments, each a list of units in order.
    The plain (no recomputation) peak of the same model is ``grad_factor * sum(internal)``.
    """
    costs = unit_costs(units, data_shape)
    n = len(costs)
    prefix = np.cumsum([0] + [c[1] for c in costs])

    def solve(limit):
        # best[i]: least boundary memory held when a segment starts at unit i
        best, back = [np.inf] * (n + 1), [None] * (n + 1)
        best[0] = 0.0
        for i in range(n):
            if best[i] == np.inf:
                continue
            for j in range(i + 1, n + 1):
                incoming = costs[j - 1][0] if j < n else 0
                if best[i] + incoming + grad_factor * (prefix[j] - prefix[i]) > limit:
                    continue
                held = best[i] + (costs[j - 1][0] if j < n else 0)
                if held < best[j]:
                    best[j], back[j] = held, i
        if best[n] == np.inf:
            return None
        bounds, j = [], n
        while j > 0:
            j = back[j]
            bounds.append(j)
        return bounds[::-1]

    lo, hi = 0.0, float(plan_peak(costs, [0], grad_factor)) + 1.0
    bounds = solve(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        found = solve(mid)
        if found is None:
            lo = mid
        else:
            hi, bounds = mid, found
    starts = bounds + [n]
    return [list(units[starts[k]:starts[k + 1]]) for k in range(len(bounds))]


class _PlanCache:
    """Per-network cache of segment plans, keyed by input shape (an object, not a dict,
    so that Gluon does not take it for an unregistered container of Blocks)."""

    def __init__(self):
        self.plans = {}


def _resolve_segments(net, units, segments, data_shape):
    """Segments as a list of lists of units (see :func:`forward_backward`)."""
    if segments is None:
        holder = vars(net).setdefault('_rn38_segment_plans', _PlanCache())
        cache = holder.plans
        key = (tuple(data_shape), tuple(id(u) for u in units))
        if key not in cache:
            cache[key] = plan_segments(units, data_shape)
        return cache[key]
    if isinstance(segments, int):
        if not 1 <= segments <= len(units):
            raise ValueError('segments=%d: need 1..%d' % (segments, len(units)))
        cuts = np.linspace(0, len(units), segments + 1).round().astype(int)
        return [list(units[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    flat = [u for seg in segments for u in seg]
    if len(flat) != len(units) or any(a is not b for a, b in zip(flat, units)):
        raise ValueError('segments must partition stage_segments(net) in order')
    return [list(seg) for seg in segments]


def _run(units, x, seeds, ctx):
    """Apply ``units`` in order; before each unit with dropout, seed ``ctx``'s generator."""
    for unit in units:
        seed = seeds.get(id(unit))
        if seed is not None:
            mx.random.seed(seed, ctx=ctx)
        x = unit(x)
    return x


# ---------------------------------------------------------------------------------------
# Forward + backward
# ---------------------------------------------------------------------------------------


# How training hybridizes: ``static_alloc=False``. forward_backward runs the network unit by
# unit (ResBlocks, the head), each unit its own CachedOp. With ``static_alloc=True`` every
# CachedOp keeps its forward and backward buffers for the life of the process, so the
# units' buffers never share memory (the plain step then holds more than the authors'
# whole-graph Module) and recomputation frees nothing: its memory saving is lost.
TRAIN_HYBRIDIZE_FLAGS = {'static_alloc': False, 'static_shape': False}


def hybridize_for_training(net):
    """Hybridize ``net`` as the trainers do (see ``TRAIN_HYBRIDIZE_FLAGS``), for plain and
    recomputing (``mirror``) steps alike; returns ``net``."""
    net.hybridize(**TRAIN_HYBRIDIZE_FLAGS)
    return net


def forward_backward(net, data_list, label_list, loss_fn, mirror=False, segments=None):
    """Forward and backward over per-device slices; gradients written into ``net``.

    ``data_list``/``label_list``: one ``(n_d, 3, H, W)`` float32 / label NDArray per
    device (see :func:`split_batch`). ``loss_fn(scores, label) -> (loss_sum, count)``:
    NDArray scalars, e.g. the summed loss of the kept pixels and their number. The
    gradient written into each parameter (grad_req ``'write'``) on device d is that of

    * ``loss_sum_d / sum_e count_e`` if ``loss_fn.normalization`` is ``'global'`` (the
      default when the attribute is absent): after the kvstore sums the devices,
      ``trainer.step(1)`` makes the update of one device with the whole batch (the
      authors' classification: ``rescale_grad = 1 / batch size``);
    * ``loss_sum_d / (count_d * D)`` (0 if ``count_d`` is 0) with ``'device'``: each
      device normalised by its own count, then averaged over the ``D`` devices (the
      authors' segmentation: their OHEM softmax normalises by the pixels it keeps on its
      device, and ``rescale_grad = 1 / D``). Not the update of one device with the whole
      batch when the counts differ.

    ``mirror``: segment recomputation (memory saving). ``segments``: None (automatic plan
    by :func:`plan_segments` for this input shape, cached on ``net``), an int k (k
    contiguous groups of equal unit count) or a list of lists of units partitioning
    :func:`stage_segments` in order. If ``net`` exposes no segments, ``mirror`` falls back
    to plain backward. A last unit made of stride-1 convolutions and ReLUs (the FCN head)
    is split off its segment and run once, each convolution recorded on its own for its
    parameter gradients, its input gradient computed by :func:`_conv_input_grad`. Dropout units are re-seeded (``mx.random.seed(s, ctx)``, ``s``
    drawn from MXNet's CPU generator) before each run, in both modes, so that the
    recomputation uses the masks of the first forward; BatchNorm layers in training mode
    get their running statistics saved before the first forward and restored before the
    recomputation, so that they are updated exactly once whether the backend updates them
    in the forward (cuDNN) or in the backward (MXNet 1.9 CPU/MKLDNN).

    Returns ``(loss_total, count_total, outputs)``: floats summed over devices, and the
    per-device scores (detached).
    """
    if len(data_list) != len(label_list):
        raise ValueError('%d data slices but %d label slices' % (len(data_list), len(label_list)))
    units = stage_segments(net)
    if units is None:
        return _plain(net, data_list, label_list, loss_fn)
    seeds = _dropout_seeds(units, len(data_list))
    if not mirror:
        return _plain(net, data_list, label_list, loss_fn, [units], seeds)
    return _mirror(net, units, data_list, label_list, loss_fn, segments, seeds)


def _dropout_seeds(units, num_devices):
    """Per device ``{id(unit): seed}`` for the units containing dropout."""
    drop = [u for u in units if _has_dropout(u)]
    if not drop:
        return [{} for _ in range(num_devices)]
    values = mx.nd.random.randint(1, 2 ** 31 - 1, shape=(num_devices * len(drop),),
                                  dtype='int32', ctx=mx.cpu()).asnumpy().tolist()
    return [{id(u): int(values[d * len(drop) + k]) for k, u in enumerate(drop)}
            for d in range(num_devices)]


def _scaled_backward(losses, counts, loss_fn):
    """``(summed count, [head gradient scale of each device's loss])``, see
    :func:`forward_backward`."""
    totals = [float(c.asscalar()) for c in counts]
    total = float(sum(totals))
    mode = getattr(loss_fn, 'normalization', 'global')
    if mode == 'device':
        return total, [1.0 / (c * len(totals)) if c > 0 else 0.0 for c in totals]
    if mode != 'global':
        raise ValueError('unknown loss normalization %r; valid: global, device' % mode)
    return total, [1.0 / total if total > 0 else 0.0] * len(totals)


def _plain(net, data_list, label_list, loss_fn, segments=None, seeds=None):
    losses, counts, outputs = [], [], []
    with autograd.record():
        for d, (x, y) in enumerate(zip(data_list, label_list)):
            out = net(x) if segments is None else _run(segments[0], x, seeds[d], x.context)
            loss, count = loss_fn(out, y)
            losses.append(loss)
            counts.append(count)
            outputs.append(out)
    total, scales = _scaled_backward(losses, counts, loss_fn)
    autograd.backward(losses, head_grads=[mx.nd.ones_like(l) * s for l, s in zip(losses, scales)])
    loss_total = float(sum(l.asscalar() for l in losses))
    return loss_total, total, [o.detach() for o in outputs]


def _snapshot_bn(bns, ctx):
    return [(b.running_mean.data(ctx).copy(), b.running_var.data(ctx).copy()) for b in bns]


def _restore_bn(bns, saved, ctx):
    for b, (mean, var) in zip(bns, saved):
        mean.copyto(b.running_mean.data(ctx))
        var.copyto(b.running_var.data(ctx))


def _head_layers(unit):
    """The layers of ``unit`` if it is a sequence of stride-1 ``nn.Conv2D`` (NCHW, one group,
    no fused activation, padding at most ``dilation * (kernel - 1)``) and ReLU
    ``nn.Activation`` -- a head that :func:`_head_forward` / :func:`_head_backward` can
    run -- else None."""
    if not isinstance(unit, nn.HybridSequential) or len(unit) == 0:
        return None
    layers = list(unit)
    for layer in layers:
        if type(layer) is nn.Conv2D:
            kw = operator_settings(layer)
            if (tuple(kw['stride']) != (1, 1) or kw['num_group'] != 1 or layer.act is not None
                    or kw['layout'] != 'NCHW' or conv_operator(layer) != 'Convolution'
                    or any(p > d * (k - 1) for p, d, k in zip(kw['pad'], kw['dilate'],
                                                              kw['kernel']))):
                return None
        elif not (type(layer) is nn.Activation and activation_type(layer) == 'relu'):
            return None
    return layers


def _head_forward(layers, x):
    """Apply the head ``layers`` (see :func:`_head_layers`) to ``x``, recording each
    convolution on its own with a detached input, so that its backward computes the
    parameter gradients only. Returns ``(keep, out)``: per layer what its backward needs
    (a convolution's input and recorded output, a ReLU's output) and the detached output."""
    keep = []
    for layer in layers:
        ctx = x.context
        if isinstance(layer, nn.Conv2D):
            args = [x, layer.weight.data(ctx)]
            if layer.bias is not None:
                args.append(layer.bias.data(ctx))
            with autograd.record():
                y = mx.nd.Convolution(*args, name='fwd', **operator_settings(layer))
            keep.append((x, y))
            x = y.detach()
        else:
            x = mx.nd.relu(x)
            keep.append(x)
    return keep, x


def _conv_input_grad(conv, dy):
    """Gradient of a stride-1 ``conv``'s input given its output gradient ``dy``, as a
    forward convolution of ``dy`` with the transposed, spatially flipped weights.

    Why not autograd: MKLDNN runs a dilated convolution's backward-data as a GEMM into an
    im2col buffer of ``C_in * kh * kw * H_out * W_out`` floats (585 MB for the A1-s8
    ``conv6a`` at crop 504: 4096 x 9 x 63 x 63), which oneDNN keeps for the rest of the
    process; the forward convolution of ``dy`` (``C_out`` = 512 channels) blocks its im2col
    and needs at most ``C_out * kh * kw * H * W``."""
    kw = operator_settings(conv)
    w = conv.weight.data(dy.context)
    flipped = mx.nd.reverse(w.transpose((1, 0, 2, 3)), axis=(2, 3))
    pad = tuple(d * (k - 1) - p for p, d, k in zip(kw['pad'], kw['dilate'], kw['kernel']))
    return mx.nd.Convolution(dy, flipped, kernel=kw['kernel'], dilate=kw['dilate'], pad=pad,
                             stride=(1, 1), num_filter=w.shape[1], no_bias=True)


def _head_backward(layers, keep, dout, need_dx):
    """Backward of :func:`_head_forward` given the output gradient ``dout``: writes the
    parameter gradients, returns the gradient of the head input (None unless
    ``need_dx``)."""
    grad = dout
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, nn.Conv2D):
            x, y = keep[i]
            if any(p.grad_req != 'null' for p in (layer.weight, layer.bias) if p is not None):
                autograd.backward(y, head_grads=grad)
            grad = _conv_input_grad(layer, grad) if need_dx or i > 0 else None
        else:
            grad = grad * (keep[i] > 0)
        keep[i] = None
        if grad is not None:
            grad.wait_to_read()
    return grad


def _mirror(net, units, data_list, label_list, loss_fn, segments, seeds):
    segs = [list(seg) for seg in _resolve_segments(net, units, segments, data_list[0].shape)]
    # a convolution head (the FCN's conv6a + ReLU + linear) is run by _head_forward /
    # _head_backward: no recomputation, and no MKLDNN backward-data im2col buffer
    head = _head_layers(segs[-1][-1]) if not _has_dropout(segs[-1][-1]) else None
    if head is not None:
        segs[-1].pop()
        if not segs[-1]:
            segs.pop()
    body = len(segs) if head is not None else len(segs) - 1   # segments run unrecorded
    bns = [[b for u in seg for b in _training_bns(u)] for seg in segs]
    states = []
    losses, counts, outputs = [], [], []
    for d, (x, y) in enumerate(zip(data_list, label_list)):
        ctx = x.context
        bounds, saved = [x], []
        with autograd.train_mode():
            for s in range(body):
                saved.append(_snapshot_bn(bns[s], ctx) if bns[s] else None)
                bounds.append(_run(segs[s], bounds[-1], seeds[d], ctx))
                # bound the asynchronous engine to one segment in flight: its
                # intermediate arrays are freed only after their consumers ran
                bounds[-1].wait_to_read()
        keep = None
        if head is not None:
            with autograd.train_mode():
                keep, out = _head_forward(head, bounds[-1])
            bounds[-1] = None                # kept in ``keep`` while needed
            out.attach_grad()
            with autograd.record():
                loss, count = loss_fn(out, y)
        else:
            last_in = bounds[-1]
            if len(segs) > 1:
                last_in.attach_grad()
            with autograd.record():
                out = _run(segs[-1], last_in, seeds[d], ctx)
                loss, count = loss_fn(out, y)
        losses.append(loss)
        counts.append(count)
        outputs.append(out)
        states.append((bounds, saved, keep, out))
    total, scales = _scaled_backward(losses, counts, loss_fn)
    for d, (loss, (bounds, saved, keep, out)) in enumerate(zip(losses, states)):
        ctx = data_list[d].context
        autograd.backward(loss, head_grads=mx.nd.ones_like(loss) * scales[d])
        if head is not None:
            grad = _head_backward(head, keep, out.grad, need_dx=body > 0)
            keep.clear()
            first = body - 1
        else:
            first = len(segs) - 2
            grad = bounds[-1].grad if len(segs) > 1 else None
            if grad is not None:
                grad.wait_to_read()
        for s in range(first, -1, -1):
            bounds[s + 1] = None             # free the boundary as soon as it is used
            x = bounds[s]
            if s > 0:
                x.attach_grad()
            if saved[s] is not None:
                _restore_bn(bns[s], saved[s], ctx)
            with autograd.record():
                y = _run(segs[s], x, seeds[d], ctx)
            autograd.backward(y, head_grads=grad)
            del y, grad
            grad = None
            if s > 0:
                grad = x.grad
                grad.wait_to_read()
        bounds.clear()
    loss_total = float(sum(l.asscalar() for l in losses))
    return loss_total, total, [o.detach() for o in outputs]
