import importlib.util
import os
import sys

# Two pytest-xdist workers share the two cores: the entry commands the tests start inherit
# one thread each (rn38.runtime.use_all_cores keeps a count the user set).
os.environ.setdefault('OMP_NUM_THREADS', '1')

import mxnet as mx  # noqa: E402
import pytest  # noqa: E402

from rn38.synthetic import manifest_entries, synthetic_arrays  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REF_DIR = os.path.join(HERE, 'data', 'reference')

_CACHE = {}


def reference_arrays(label):
    """Deterministic reference weights of a released model, as ``{key: NDArray}`` (cached)."""
    if label not in _CACHE:
        entries = manifest_entries(os.path.join(REF_DIR, 'manifests', label + '.json'))
        _CACHE[label] = {k: mx.nd.array(v) for k, v in synthetic_arrays(entries).items()}
    return _CACHE[label]


def load_script(name):
    """The module ``scripts/<name>.py`` (not a package: scripts run as files), loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(REPO, 'scripts', name + '.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_demo_dataset(root, **options):
    """Writes the demo dataset of ``scripts/make_demo_data.py`` under ``root``."""
    return load_script('make_demo_data').make_demo_dataset(root, **options)


@pytest.fixture(scope='session')
def ref_dir():
    return REF_DIR
