"""Devices and batches: the device list of a ``--devices`` option and per-device batch slices.

``'cpu:2'`` makes multi-device code testable on one CPU.
"""
import re

import mxnet as mx
import numpy as np


def default_devices():
    """The device option of every entry when ``--gpus`` is not given: ``'0'`` (GPU 0) if
    this machine has a GPU MXNet can use, else ``'cpu'``."""
    try:
        count = mx.context.num_gpus()
    except mx.base.MXNetError:  # a CUDA build on a machine without a usable driver
        count = 0
    return '0' if count > 0 else 'cpu'


def parse_devices(spec):
    """Device list of a ``--devices`` string.

    ``None`` -> as :func:`default_devices`; ``''``/``'cpu'`` -> ``[cpu(0)]``; ``'0,1'`` -> ``[gpu(0), gpu(1)]``; ``'cpu:2'`` ->
    ``[cpu(0), cpu(1)]`` (several CPU contexts, to run multi-device code on one CPU);
    ``'cpu0,cpu1'``, ``'gpu0,gpu1'`` and ``'gpu:2'`` work too. ValueError otherwise.
    """
    if spec is None:
        spec = default_devices()
    spec = spec.strip().lower()
    if spec in ('', 'cpu'):
        return [mx.cpu()]
    m = re.match(r'^(cpu|gpu):(\d+)$', spec)
    if m:
        count = int(m.group(2))
        if count < 1:
            raise ValueError('--devices %r: need at least one device' % spec)
        make = mx.cpu if m.group(1) == 'cpu' else mx.gpu
        return [make(i) for i in range(count)]
    devices = []
    for item in spec.split(','):
        m = re.match(r'^(cpu|gpu)?(\d+)$', item.strip())
        if m is None:
            raise ValueError("--devices %r: expected '', 'cpu', 'cpu:N', 'gpu:N' or a comma list "
                             "of GPU ids / cpuN / gpuN, e.g. '0,1'" % spec)
        make = mx.cpu if m.group(1) == 'cpu' else mx.gpu
        devices.append(make(int(m.group(2))))
    if len(set(devices)) != len(devices):
        raise ValueError('--devices %r: a device is listed twice' % spec)
    return devices


def split_batch(data, label, ctx_list):
    """Slice a batch along axis 0 into one slice per device, copied to that device.

    ``data``: ``(N, ...)`` NDArray or numpy array; ``label``: ``(N, ...)`` or None.
    Slice sizes differ by at most one (the first ``N % k`` devices get one more); with the
    global normalisation of :func:`rn38.recompute.forward_backward` uneven slices are still
    exact (the per-device one, the authors' for segmentation, weighs each device equally).
    Returns ``(data_list, label_list)`` (``label_list`` is Nones if ``label`` is None). ValueError if ``N`` is smaller than the number of devices.
    """
    ctx_list = list(ctx_list)
    n = data.shape[0]
    if n < len(ctx_list):
        raise ValueError('batch of %d is smaller than the %d devices: use a batch of at '
                         'least one image per device' % (n, len(ctx_list)))
    if label is not None and label.shape[0] != n:
        raise ValueError('data has %d samples, label %d' % (n, label.shape[0]))
    base, extra = divmod(n, len(ctx_list))
    bounds = np.cumsum([0] + [base + (1 if i < extra else 0) for i in range(len(ctx_list))])

    def to(x, lo, hi, ctx):
        part = x[int(lo):int(hi)]
        if isinstance(part, mx.nd.NDArray):
            return part.as_in_context(ctx)
        return mx.nd.array(part, ctx=ctx, dtype=part.dtype)

    data_list = [to(data, lo, hi, c) for lo, hi, c in zip(bounds[:-1], bounds[1:], ctx_list)]
    label_list = [None if label is None else to(label, lo, hi, c)
                  for lo, hi, c in zip(bounds[:-1], bounds[1:], ctx_list)]
    return data_list, label_list
