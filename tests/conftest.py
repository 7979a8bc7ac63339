import os

import mxnet as mx
import pytest

from rn38.synthetic import manifest_entries, synthetic_arrays

HERE = os.path.dirname(os.path.abspath(__file__))
REF_DIR = os.path.join(HERE, 'data', 'reference')

_CACHE = {}


def reference_arrays(label):
    """Deterministic reference weights of a released model, as ``{key: NDArray}`` (cached)."""
    if label not in _CACHE:
        entries = manifest_entries(os.path.join(REF_DIR, 'manifests', label + '.json'))
        _CACHE[label] = {k: mx.nd.array(v) for k, v in synthetic_arrays(entries).items()}
    return _CACHE[label]


@pytest.fixture(scope='session')
def ref_dir():
    return REF_DIR
