"""Inference in lower precision: bfloat16 (oneDNN AMP) and int8 (oneDNN quantization).

One entry point, :func:`lower_precision`, turns a float32 network with loaded weights
into a block that runs in the requested dtype and still takes ``float32 (N, 3, H, W)``
inputs and returns ``float32`` scores:

* ``'float32'``: the network unchanged.
* ``'bfloat16'``: ``mx.contrib.amp.convert_hybrid_block`` (casts inserted by MXNet's
  AMP lists, ReLUs kept in float32, weights converted once); needs oneDNN and the
  ``avx512_bf16`` instructions. Without them this module warns and keeps float32 (same
  scores, and oneDNN's emulation would be slower).
* ``'int8'``: ``mx.contrib.quantization.quantize_net_v2`` with calibration of the
  activation ranges (``'entropy'`` or ``'naive'``) on a few training inputs; oneDNN
  CPU only (an error on a GPU). The quantized graph is cached next to the weights
  (``<weights stem>.int8-<key>-symbol.json`` and ``-0000.params``); the key hashes the
  weights file's content and every calibration setting, so a later run with the same
  inputs loads it without calibrating, and a changed weights file or setting makes a
  new one.

Layers kept in float32, chosen here: the final score layer (``linear<C>``: its outputs
are the class scores and feed a softmax, where int8/bf16 rounding would change close
calls) in both modes, and for int8 also the first convolution ``conv1a`` (3 input
channels: little work, and its signed, unbounded input would get a coarse scale).
"""
import hashlib
import json
import logging
import os
import warnings

import mxnet as mx
from mxnet.contrib import amp, quantization
from mxnet.contrib.amp.lists import symbol_bf16
import numpy as np

from .checksums import sha256sum

DTYPES = ('float32', 'bfloat16', 'int8')
CALIB_MODES = ('entropy', 'naive')
CACHE_VERSION = 1  # bump when the choice of float layers or the quantization call changes


class LowPrecisionError(ValueError):
    """An unsupported dtype / device / build combination (a one-line message)."""


def cpu_flags(path='/proc/cpuinfo'):
    """The set of instruction-set flags of the first CPU in ``path`` (empty if unreadable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def _on_gpu(ctx_list):
    return any(c.device_type == 'gpu' for c in ctx_list)


def check_dtype(dtype, ctx_list, flags=None, logger=None):
    """The dtype to run for a request: ``dtype`` itself, or ``'float32'`` with a warning
    (bfloat16 on a CPU without ``avx512_bf16``; to ``logger`` if given, else a Python
    warning). Raises :class:`LowPrecisionError` for what cannot run: an unknown dtype,
    int8 or bfloat16 on a GPU context, either without oneDNN in the MXNet build.

    flags: CPU flags (default: :func:`cpu_flags`).
    """
    if dtype not in DTYPES:
        raise LowPrecisionError('--dtype %r: valid are %s' % (dtype, ', '.join(DTYPES)))
    if dtype == 'float32':
        return dtype
    ctx_list = list(ctx_list)
    if _on_gpu(ctx_list):
        raise LowPrecisionError('--dtype %s runs on the CPU only (oneDNN); use --gpus cpu or '
                                '--dtype float32 on a GPU' % dtype)
    if not mx.runtime.Features().is_enabled('MKLDNN'):
        raise LowPrecisionError('--dtype %s needs an MXNet build with oneDNN (MKLDNN); this '
                                'one has none' % dtype)
    flags = cpu_flags() if flags is None else set(flags)
    if dtype == 'bfloat16' and 'avx512_bf16' not in flags:
        message = ('--dtype bfloat16: this CPU has no avx512_bf16 instructions (would be '
                   'emulated, slower); running float32 instead')
        if logger is None:
            warnings.warn(message)
        else:
            logger.warning(message)
        return 'float32'
    if dtype == 'int8' and 'avx512_vnni' not in flags:
        (logger or logging.getLogger(__name__)).warning(
            '--dtype int8: this CPU has no avx512_vnni instructions; int8 runs but gains '
            'less speed')
    return dtype


def float_layers(net, dtype):
    """Names of the graph nodes kept in float32 for ``dtype`` (see the module docstring)."""
    score = getattr(net, 'head_names', ('linear%d' % net.classes,))[-1] + '_fwd'
    if dtype == 'int8':
        return [score, 'conv1a_fwd']
    return [score]


def int8_cache_prefix(weights, settings):
    """``<dir>/<weights stem>.int8-<16 hex>``: the key hashes the weights file's content
    and ``settings`` (a JSON-ready dict of everything that shapes the calibration)."""
    key = dict(settings, weights_sha256=sha256sum(weights), cache_version=CACHE_VERSION,
               mxnet=mx.__version__)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.abspath(weights))[0]
    return '%s.int8-%s' % (stem, digest), key


class _CalibIter(mx.io.DataIter):
    """The calibration batches as a DataIter (data name ``data``)."""

    def __init__(self, batches):
        super().__init__(batch_size=batches[0].shape[0])
        self._batches = [mx.nd.array(b) for b in batches]
        self._i = 0

    @property
    def provide_data(self):
        return [mx.io.DataDesc('data', self._batches[0].shape)]

    @property
    def provide_label(self):
        return []

    def reset(self):
        self._i = 0

    def next(self):
        if self._i >= len(self._batches):
            raise StopIteration
        self._i += 1
        return mx.io.DataBatch([self._batches[self._i - 1]], pad=0)


def _save_quantized(qnet, prefix, key):
    """Symbol and params exported under temporary names, then renamed (params last: its
    presence marks a complete cache entry); ``<prefix>.json`` records the key."""
    from .atomic import write_json
    tmp_prefix = '%s.tmp%d' % (prefix, os.getpid())
    try:
        qnet.export(tmp_prefix, 0)
        os.replace(tmp_prefix + '-symbol.json', prefix + '-symbol.json')
        os.replace(tmp_prefix + '-0000.params', prefix + '-0000.params')
    finally:
        for suffix in ('-symbol.json', '-0000.params'):
            if os.path.exists(tmp_prefix + suffix):
                os.remove(tmp_prefix + suffix)
    write_json(key, prefix + '.json')


def _load_quantized(prefix, ctx_list):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'],
                                            prefix + '-0000.params', ctx=ctx_list)


def quantize_int8(net, ctx_list, calib_batches, calib_mode='entropy', weights=None,
                  settings=None, logger=None):
    """The int8 network of ``net`` (float32, weights loaded), cached next to ``weights``.

    calib_batches: a callable returning a list of ``float32 (n, 3, H, W)`` arrays (same
        shape), the calibration inputs; called only when no cache entry matches.
    settings: JSON-ready dict of the calibration settings (image count, input size,
        list, ...) that, with the weights' content and ``calib_mode``, key the cache.
    Returns ``(block, info)``; info has ``cache`` (prefix or None) and ``calibrated``.
    """
    logger = logger or logging.getLogger(__name__)
    if calib_mode not in CALIB_MODES:
        raise LowPrecisionError('--calib-mode %r: valid are %s'
                                % (calib_mode, ', '.join(CALIB_MODES)))
    prefix = None
    if weights is not None:
        prefix, key = int8_cache_prefix(weights, dict(settings or {}, calib_mode=calib_mode,
                                                      float_layers=float_layers(net, 'int8')))
        if os.path.isfile(prefix + '-0000.params') and os.path.isfile(prefix + '-symbol.json'):
            try:
                block = _load_quantized(prefix, ctx_list)
                logger.info('int8: quantized graph read from %s-*, calibration skipped', prefix)
                return block, {'cache': prefix, 'calibrated': False}
            except (mx.base.MXNetError, ValueError, AssertionError) as err:
                logger.warning('int8: cache %s unusable (%s); calibrating again', prefix,
                               str(err).splitlines()[0])
    batches = [np.asarray(b, np.float32) for b in calib_batches()]
    if not batches:
        raise LowPrecisionError('int8 calibration needs at least one image (--calib-images)')
    logger.info('int8: calibrating (%s) on %d inputs of %s', calib_mode,
                sum(len(b) for b in batches), batches[0].shape[1:])
    net.hybridize(static_alloc=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        qnet = quantization.quantize_net_v2(
            net, quantized_dtype='auto', exclude_layers=float_layers(net, 'int8'),
            calib_data=_CalibIter(batches), calib_mode=calib_mode, ctx=mx.cpu(),
            num_calib_examples=sum(len(b) for b in batches))
    qnet.hybridize(static_alloc=True)
    qnet(mx.nd.array(batches[0][:1])).wait_to_read()  # export needs the built graph
    if prefix is not None:
        try:
            _save_quantized(qnet, prefix, key)
            logger.info('int8: quantized graph saved as %s-*', prefix)
        except OSError as err:  # a read-only weights folder: run without the cache
            logger.warning('int8: cannot write the cache %s (%s)', prefix, err)
            prefix = None
    if prefix is not None:  # the cached graph, so a first and a later run use the same block
        return _load_quantized(prefix, ctx_list), {'cache': prefix, 'calibrated': True}
    qnet.collect_params().reset_ctx(ctx_list)
    return qnet, {'cache': None, 'calibrated': True}


# Operators kept in float32 by bfloat16 inference besides MXNet's own list: ReLU (MXNet 1.9
# runs ``relu`` on bfloat16 arrays about as slowly as the convolutions around it; in
# float32 it is oneDNN's; measured with the A1 classifier at 224: 1.16x float32's speed
# with bfloat16 ReLUs, 1.89x without).
BF16_FLOAT_OPS = ('relu',)


def convert_bfloat16(net, ctx_list, sample_shape=(1, 3, 64, 64)):
    """The bfloat16 network of ``net`` (float32 in and out, score layer in float32).

    Convolutions and fully connected layers run in bfloat16, with their weights converted
    once here (not at every forward); ReLUs (``BF16_FLOAT_OPS``) and the score layer in
    float32."""
    net.hybridize(static_alloc=True)
    net(mx.nd.zeros(sample_shape, ctx=ctx_list[0])).wait_to_read()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        block = amp.convert_hybrid_block(
            net, target_dtype='bfloat16', excluded_sym_names=float_layers(net, 'bfloat16'),
            fp32_ops=list(symbol_bf16.FP32_FUNCS) + list(BF16_FLOAT_OPS),
            ctx=ctx_list[0], cast_optional_params=True)
    block.collect_params().reset_ctx(ctx_list)
    return block


def lower_precision(net, dtype, ctx_list, calib_batches=None, calib_mode='entropy',
                    weights=None, settings=None, logger=None):
    """``(block, dtype run)`` for ``dtype`` in :data:`DTYPES`; see the module docstring.

    net: float32 network with its weights on ``ctx_list``; int8 arguments as
    :func:`quantize_int8`. The returned block is hybridized, takes float32 inputs on any
    of ``ctx_list`` and gives float32 scores; it keeps ``classes``/``feat_stride``.
    """
    logger = logger or logging.getLogger(__name__)
    ctx_list = list(ctx_list) if isinstance(ctx_list, (list, tuple)) else [ctx_list]
    dtype = check_dtype(dtype, ctx_list, logger=logger)
    if dtype == 'float32':
        return net, dtype
    if dtype == 'bfloat16':
        block = convert_bfloat16(net, ctx_list)
        logger.info('bfloat16: layers kept in float32: %s', float_layers(net, dtype))
    else:
        if calib_batches is None:
            raise LowPrecisionError('--dtype int8 needs calibration images (--calib-images)')
        block, info = quantize_int8(net, ctx_list, calib_batches, calib_mode, weights,
                                    settings, logger)
        logger.info('int8: layers kept in float32: %s', float_layers(net, dtype))
    # static_shape: MXNet 1.9 re-creates the oneDNN operators' state (the int8 weights,
    # quantized and reordered) at every forward of a graph without it; with it, once per
    # input shape. Measured with the A1 classifier, one 224x224 image: int8 3.35x
    # float32's speed against 1.54x without. A new input shape sets the graph up again.
    block.hybridize(static_alloc=True, static_shape=True)
    for attr in ('classes', 'feat_stride', 'head_names', 'spec'):
        if hasattr(net, attr):
            setattr(block, attr, getattr(net, attr))
    return block, dtype
