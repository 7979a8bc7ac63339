"""Deterministic weights from a parameter manifest (the reference rule of this project).

For a manifest entry ``arg:NAME``/``aux:NAME`` with shape S, the value is drawn from
``RandomState(crc32(NAME) ^ salt)``: weights ``N(0,1) * gain * sqrt(2 / prod(S[1:]))``,
biases and betas ``U(-0.1, 0.1)``, gammas ``U(0.5, 1.5)``, moving means ``U(-0.1, 0.1)``,
moving variances ``U(0.5, 1.5)``; sampled in float64, stored as float32. Used by the
parity tests and the benchmarks, so that any network can be given known weights without
the released files.
"""
import json
import math
import zlib

import numpy as np


def _sample(name, shape, rs, gain):
    if name.endswith('_weight'):
        return rs.standard_normal(shape) * gain * math.sqrt(2.0 / int(np.prod(shape[1:])))
    for suffix, (low, high) in (('_bias', (-0.1, 0.1)), ('_gamma', (0.5, 1.5)),
                                ('_beta', (-0.1, 0.1)), ('_moving_mean', (-0.1, 0.1)),
                                ('_moving_var', (0.5, 1.5))):
        if name.endswith(suffix):
            return rs.uniform(low, high, shape)
    raise ValueError('no rule for parameter %s' % name)


def synthetic_arrays(entries, salt=0, gain=0.7):
    """``{key: float32 numpy array}`` for ``[(key, shape), ...]`` in the given order."""
    out = {}
    for key, shape in entries:
        name = key.split(':', 1)[1]
        rs = np.random.RandomState((zlib.crc32(name.encode('utf-8')) ^ salt) & 0xffffffff)
        out[key] = _sample(name, tuple(shape), rs, gain).astype(np.float32)
    return out


def manifest_entries(path):
    """``[(key, shape), ...]`` of a manifest JSON file."""
    with open(path) as f:
        return [(e['key'], tuple(e['shape'])) for e in json.load(f)]


def net_entries(net):
    """``[(released key, shape), ...]`` of an initialised network, sorted by key."""
    from .params import released_keys
    return sorted((k, p.shape) for k, p in released_keys(net).items())
