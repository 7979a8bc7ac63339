"""The one module that reads or writes private attributes of MXNet Gluon.

Gluon 1.x has no public way to list a block's children, read a layer's operator settings
(kernel, stride, dilation, BatchNorm's ``use_global_stats``, a dropout rate), initialise a
Trainer's kvstore before the first step, or read and restore an optimizer's update
counters. The project needs all of these; each is a small named function here, written
against MXNet 1.9 (the version the tests pass with). Importing this module with another
MXNet version raises an ImportError that says so, instead of failing later on a missing
attribute.
"""
import mxnet as mx

SUPPORTED_MXNET = '1.9.'


def check_mxnet_version(version=None):
    """Raise ImportError unless ``version`` (default: the installed MXNet's) is 1.9.x."""
    version = mx.__version__ if version is None else version
    if not str(version).startswith(SUPPORTED_MXNET):
        raise ImportError('rn38 needs MXNet 1.9.x, found %s: rn38/gluon_internals.py uses '
                          'private Gluon attributes of 1.9 (install mxnet==1.9.1)' % version)


check_mxnet_version()


# --------------------------------------------------------------------------- blocks


def children(block):
    """The child blocks of ``block`` in registration order (a list)."""
    return list(block._children.values())


def walk_blocks(block):
    """``block`` and all its descendants, depth first, in registration order."""
    yield block
    for child in children(block):
        yield from walk_blocks(child)


def operator_settings(layer):
    """The operator keyword arguments of a Gluon layer (``Conv2D``, pooling, ``BatchNorm``,
    ...): ``kernel``, ``stride``, ``dilate``, ``pad``, ``num_group``, ``layout``, ... as
    the layer passes them to its operator; ``{}`` for a block without any. Read only."""
    kwargs = getattr(layer, '_kwargs', None)
    return dict(kwargs) if isinstance(kwargs, dict) else {}


def conv_operator(conv):
    """The operator name of a convolution layer (``'Convolution'``, ``'Deconvolution'``)."""
    return conv._op_name


def activation_type(layer):
    """The activation of an ``nn.Activation`` layer (``'relu'``, ...)."""
    return layer._act_type


def dropout_rate(layer):
    """The drop probability of an ``nn.Dropout`` layer."""
    return layer._rate


def uses_global_stats(bn):
    """True if the ``nn.BatchNorm`` layer ``bn`` normalises with its running statistics in
    training too (frozen: they are not updated)."""
    return bool(bn._kwargs.get('use_global_stats', False))


def set_global_stats(bn, frozen):
    """Freeze (True) or unfreeze the running statistics of the ``nn.BatchNorm`` ``bn``; takes
    effect at the next hybridization / forward."""
    bn._kwargs['use_global_stats'] = bool(frozen)


# --------------------------------------------------------------------------- parameters


def is_initialized(param):
    """True if the ``gluon.Parameter`` holds data (initialised, not deferred)."""
    return param._data is not None


def load_into(param, array, ctx):
    """Set ``param`` to ``array`` on the contexts ``ctx``, completing a deferred
    initialisation (and its unknown shape) if there is one."""
    param._load_init(array, ctx)


# --------------------------------------------------------------------------- trainer


def trainer_kvstore(trainer):
    """The kvstore of a ``gluon.Trainer`` (None without one), created now if the Trainer has
    not done so yet (it otherwise waits for the first ``step``)."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    return trainer._kvstore


def init_trainer_params(trainer):
    """Let ``trainer`` initialise its parameters from its kvstore now (with a ``dist`` store:
    every worker takes rank 0's values), instead of inside the first ``step``."""
    trainer_kvstore(trainer)
    if trainer._params_to_init:
        trainer._init_params()


def trainer_params(trainer):
    """The parameters of ``trainer`` in its index order (the optimizer's indices)."""
    return list(trainer._params)


def updates_on_kvstore(trainer):
    """True if the optimizer of ``trainer`` runs on the kvstore (the parameter servers)."""
    trainer_kvstore(trainer)
    return bool(trainer._update_on_kvstore)


def trainer_optimizer(trainer):
    """The ``mx.optimizer.Optimizer`` of ``trainer``."""
    return trainer._optimizer


def trainer_updaters(trainer):
    """The updaters of ``trainer``, one per device (``.states``: ``{index: state}``)."""
    trainer_kvstore(trainer)
    return list(trainer._updaters)


def update_counts(optimizer, device_id):
    """``{parameter index: number of updates}`` of ``optimizer`` on device ``device_id``
    (those of the current device if it has none)."""
    return optimizer._all_index_update_counts.get(device_id, optimizer._index_update_count)


def set_update_counts(optimizer, counts, device_ids):
    """Set the update counters of ``optimizer`` to ``counts`` (``{index: n}``) on each of
    ``device_ids``, the first (lowest) one current."""
    for device in device_ids:
        optimizer._all_index_update_counts[device] = dict(counts)
    optimizer._index_update_count = optimizer._all_index_update_counts[min(device_ids)]
