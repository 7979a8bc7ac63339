"""MXNet's process-wide settings, chosen from a run's options by the entry or trainer.

MXNet 1.9 reads these environment variables when it creates the object that uses them,
not when ``mxnet`` is imported (``src/engine/engine.cc``: the engine is made by the
first ``Engine::Get()``; ``src/resource.cc``: the resource manager, which owns the CPU
temporary workspaces, is made by the first ``ResourceManager::Get()``, i.e. the first
operator that needs a workspace or a random generator, or ``mx.random.seed``). So
:func:`configure_mxnet` works after ``import mxnet`` as long as no NDArray operation has
run yet; entries call it right after parsing their options, trainers again at their start
(a no-op then). Values the user set in the environment are kept.
"""
import os

# Read at first use; see the module docstring.
ENGINE_TYPE = 'MXNET_ENGINE_TYPE'
CPU_TEMP_COPY = 'MXNET_CPU_TEMP_COPY'


def mxnet_settings(debug=False, mirror=False):
    """``{variable: value}`` for a run with these options.

    ``debug``: MXNet's synchronous engine (errors surface at the operation that caused
    them). ``mirror`` (segment recomputation): one CPU temporary workspace instead of
    MXNet's default four; each copy grows to the largest request made of it and keeps it,
    so several copies keep memory that the recomputation frees.
    """
    settings = {}
    if debug:
        settings[ENGINE_TYPE] = 'NaiveEngine'
    if mirror:
        settings[CPU_TEMP_COPY] = '1'
    return settings


def configure_mxnet(debug=False, mirror=False, environ=None):
    """Put :func:`mxnet_settings` into ``environ`` (default ``os.environ``) unless set.

    Call before MXNet runs its first operation. Returns the variables this call set.
    """
    environ = os.environ if environ is None else environ
    applied = {}
    for key, value in mxnet_settings(debug, mirror).items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied
