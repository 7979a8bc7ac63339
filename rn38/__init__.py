"""ResNet-38 ("Wider or Deeper") for MXNet Gluon: networks, released weights, shared tools."""
import importlib

# Before MXNet: the CUDA 11 libraries of the gpu extra must be loaded first (see rn38.cuda).
from . import cuda as _cuda
_cuda.preload()
# MXNet itself is loaded by the first use of a name below, not by importing this package,
# so that an entry can choose the settings MXNet fixes when it loads (rn38.runtime); its
# other settings are chosen by the entries from their options; importing changes none.

_EXPORTS = {
    'net': ('Level', 'stage_table', 'ResNet38Features', 'ResNet38Classifier', 'ResNet38FCN',
            'BN_EPS'),
    'params': ('ParamsError', 'load_params', 'save_params', 'read_params', 'released_key'),
    'zoo': ('REGISTERED', 'RELEASED', 'ModelSpec', 'parse_label', 'label_from_weights',
            'build_model', 'get_model'),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r' % (__name__, name))
    return getattr(importlib.import_module('.' + module, __name__), name)
