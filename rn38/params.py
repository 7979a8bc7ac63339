"""Weights in the released format: ``mx.nd.save`` dicts keyed ``arg:NAME`` / ``aux:NAME``.

Gluon parameter names equal the released names except BatchNorm statistics
(``running_mean``/``running_var`` here, ``moving_mean``/``moving_var`` in the files);
:func:`released_key` is the one mapping between the two, and it is one-to-one.
Loading is strict: a missing key, an unexpected key or a shape mismatch is a one-line
:class:`ParamsError` naming the file and the key.
"""
import os

import mxnet as mx

from .atomic import atomic_path
from .gluon_internals import is_initialized, load_into

_AUX_SUFFIXES = {'_running_mean': '_moving_mean', '_running_var': '_moving_var'}


class ParamsError(ValueError):
    """A params file that does not fit the model."""


def released_key(gluon_name):
    """``'bn2a_branch2a_running_mean'`` -> ``'aux:bn2a_branch2a_moving_mean'``; others ``arg:``."""
    for ours, theirs in _AUX_SUFFIXES.items():
        if gluon_name.endswith(ours):
            return 'aux:' + gluon_name[:-len(ours)] + theirs
    return 'arg:' + gluon_name


def gluon_name(key):
    """Inverse of :func:`released_key`."""
    kind, name = key.split(':', 1)
    if kind == 'aux':
        for ours, theirs in _AUX_SUFFIXES.items():
            if name.endswith(theirs):
                return name[:-len(theirs)] + ours
    return name


def released_keys(net):
    """``{released key: gluon Parameter}`` of ``net``, checked to be one-to-one."""
    params = list(net.collect_params().items())
    keys = {released_key(name): p for name, p in params}
    if len(keys) != len(params):
        raise ParamsError('parameter names of %s do not map one-to-one to released keys'
                          % type(net).__name__)
    return keys


def read_params(path):
    """``{key: NDArray}`` from a released-format file; a clear error if it is not one."""
    if not os.path.isfile(path):
        raise ParamsError('%s: no such params file%s' % (path, _released_hint(path)))
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as err:
        # MXNet's message is a C++ traceback; its last line says what is wrong
        raise ParamsError('%s: not an MXNet params file (%s)'
                          % (path, str(err).strip().splitlines()[-1])) from None
    if not isinstance(loaded, dict) or not all(
            k.startswith(('arg:', 'aux:')) for k in loaded):
        raise ParamsError('%s: expected a dict of arg:NAME/aux:NAME arrays (the released '
                          'format)' % path)
    return loaded


def _released_hint(path):
    """For a missing released file: where to put it (nothing is downloaded)."""
    from .zoo import RELEASED
    name = os.path.basename(path)
    if name in ['%s_ep-0001.params' % label for label in RELEASED]:
        return ('; put the authors\' released %s there (see models/README.md; nothing is '
                'downloaded)' % name)
    return ''


def _compatible(expected, actual):
    return len(expected) == len(actual) and all(e in (0, a) for e, a in zip(expected, actual))


def load_params(net, path, ctx=None, skip_prefixes=(), source=None):
    """Set every parameter of ``net`` from the released-format file ``path``.

    ``skip_prefixes``: parameter names starting with one of these are neither required in
    the file nor loaded (they are left to the caller's initializer), and keys of the file
    that the network does not have are then tolerated only if ``source`` says so:
    ``source='backbone'`` allows extra keys (e.g. the ImageNet ``linear1000`` head).
    Returns ``{'loaded': [...], 'skipped': [...], 'ignored': [...]}`` (released keys).
    """
    ctx = ctx or [mx.cpu()]
    ctx = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    arrays = read_params(path) if isinstance(path, str) else path
    label = path if isinstance(path, str) else '<params>'
    wanted = released_keys(net)
    skipped = sorted(k for k in wanted if gluon_name(k).startswith(tuple(skip_prefixes))) \
        if skip_prefixes else []
    for key in skipped:
        del wanted[key]
    missing = sorted(set(wanted) - set(arrays))
    if missing:
        more = ' (and %d more)' % (len(missing) - 1) if len(missing) > 1 else ''
        raise ParamsError('%s: missing key %s%s needed by the model' % (label, missing[0], more))
    extra = sorted(set(arrays) - set(wanted) - set(skipped))
    if extra and source != 'backbone':
        raise ParamsError('%s: unexpected key %s (%d keys the model does not have)'
                          % (label, extra[0], len(extra)))
    for key, param in wanted.items():
        shape = arrays[key].shape
        if not _compatible(param.shape, shape):
            raise ParamsError('%s: shape mismatch for %s: file has %s, model expects %s'
                              % (label, key, tuple(shape), tuple(param.shape)))
    for key, param in wanted.items():
        load_into(param, arrays[key].astype(param.dtype, copy=False), ctx)
    return {'loaded': sorted(wanted), 'skipped': skipped, 'ignored': extra}


def save_params(net, path):
    """Write ``net``'s parameters in the released format, atomically (write, then rename).

    The parameters' own arrays (of their first device) are written, without a copy of the
    whole model: see :func:`save_arrays`."""
    # Sorted keys, as the manifests: the file is then byte-identical to the original's.
    arrays = {}
    for key, p in sorted(released_keys(net).items()):
        if not is_initialized(p):
            raise ParamsError('%s: cannot save, %s is not initialised' % (path, key))
        arrays[key] = p.list_data()[0]
    save_arrays(arrays, path)


# mx.nd.save's file: uint64 magic, uint64 reserved, uint64 count, the arrays (each as
# NDArray::Save writes it), uint64 count, the names (each uint64 length + bytes)
_LIST_MAGIC = 0x112


def save_arrays(arrays, path):
    """``mx.nd.save(path, arrays)`` (a ``{name: NDArray}`` dict) through a temporary file
    in the same folder, then an atomic rename; arrays not on ``cpu(0)`` are written as
    their ``cpu(0)`` copies would be.

    Arrays on ``cpu(0)`` go to ``mx.nd.save`` as they are (no copy). Otherwise (GPUs,
    other CPU contexts) the file is written one array at a time, each copied to ``cpu(0)``
    and serialised by MXNet (``MXNDArraySaveRawBytes``) just before it is written, so at
    most one array's copy exists at a time; the bytes equal those of ``mx.nd.save`` of
    the copies."""
    with atomic_path(path) as tmp:
        if all(a.context == mx.cpu(0) for a in arrays.values()):
            mx.nd.save(tmp, arrays)
        else:
            _save_one_at_a_time(tmp, arrays)


def _save_one_at_a_time(path, arrays):
    import ctypes
    import struct
    from mxnet.base import _LIB, check_call
    names = list(arrays)
    with open(path, 'wb') as f:
        f.write(struct.pack('<QQQ', _LIST_MAGIC, 0, len(names)))
        for name in names:
            array = arrays[name]
            copy = array if array.context == mx.cpu(0) else array.as_in_context(mx.cpu(0))
            length, data = ctypes.c_size_t(), ctypes.POINTER(ctypes.c_char)()
            check_call(_LIB.MXNDArraySaveRawBytes(copy.handle, ctypes.byref(length),
                                                  ctypes.byref(data)))
            f.write(memoryview((ctypes.c_char * length.value).from_address(
                ctypes.addressof(data.contents))))
            del copy
        f.write(struct.pack('<Q', len(names)))
        for name in names:
            encoded = name.encode('utf-8')
            f.write(struct.pack('<Q', len(encoded)) + encoded)
