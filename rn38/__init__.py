"""ResNet-38 ("Wider or Deeper") for MXNet Gluon: networks, released weights, shared tools."""
# Before MXNet: the CUDA 11 libraries of the gpu extra must be loaded first (see rn38.cuda).
from . import cuda as _cuda
_cuda.preload()
# MXNet's settings (engine, workspaces) are chosen by the entries from their options, see
# rn38.runtime; importing this package changes none.

from .net import Level, stage_table, ResNet38Features, ResNet38Classifier, ResNet38FCN, BN_EPS
from .params import ParamsError, load_params, save_params, read_params, released_key
from .zoo import (REGISTERED, RELEASED, ModelSpec, parse_label, label_from_weights,
                  build_model, get_model)
