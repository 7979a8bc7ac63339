"""ResNet-38 ("Wider or Deeper") for MXNet Gluon: networks, released weights, shared tools."""
import os as _os
import sys as _sys

# Before MXNet: the CUDA 11 libraries of the gpu extra must be loaded first (see rn38.cuda).
from . import cuda as _cuda
_cuda.preload()
if '--debug' in _sys.argv:
    # The entries' --debug: MXNet's synchronous engine (read when MXNet starts).
    _os.environ.setdefault('MXNET_ENGINE_TYPE', 'NaiveEngine')
if '--backward-do-mirror' in _sys.argv:
    # Memory-saving training: one CPU temporary workspace instead of MXNet's default
    # copies, or they keep what the recomputation frees (read when MXNet starts).
    _os.environ.setdefault('MXNET_CPU_TEMP_COPY', '1')

from .net import Level, stage_table, ResNet38Features, ResNet38Classifier, ResNet38FCN, BN_EPS
from .params import ParamsError, load_params, save_params, read_params, released_key
from .zoo import (REGISTERED, RELEASED, ModelSpec, parse_label, label_from_weights,
                  build_model, get_model)
