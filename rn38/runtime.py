"""MXNet's process-wide settings, chosen from a run's options by the entry or trainer.

One setting is fixed when MXNet loads (``import mxnet``): the number of OpenMP threads its
CPU operators use (``src/engine/openmp.cc``: ``omp_get_num_procs() / 2`` on x86, on the
assumption of two hyper-threads per core, unless ``OMP_NUM_THREADS`` or
``MXNET_OMP_MAX_THREADS`` is set). On a machine without hyper-threading that is half the
cores: on the 2-core test machine one thread, with which the prediction command took 1.73x
as long as with two (``scripts/bench_threads.py``). :func:`use_all_cores` sets one thread
per physical core; the entries call it first, before anything imports MXNet (importing
:mod:`rn38`, :mod:`issegm` or :mod:`iclass` does not).

The other settings here are environment variables that MXNet 1.9 reads when it creates
the object that uses them, not when ``mxnet`` is imported (``src/engine/engine.cc``: the
engine is made by the first ``Engine::Get()``; ``src/resource.cc``: the resource manager,
which owns the CPU temporary workspaces, is made by the first ``ResourceManager::Get()``,
i.e. the first operator that needs a workspace or a random generator, or
``mx.random.seed``). So :func:`configure_mxnet` works after ``import mxnet`` as long as no
NDArray operation has run yet; entries call it right after parsing their options,
trainers again at their start (a no-op then). Values the user set in the environment are
kept. For training it also chooses glibc's allocator settings (:func:`configure_allocator`).
"""
import os
import sys

# Read when MXNet loads; see the module docstring.
OMP_THREADS = 'MXNET_OMP_MAX_THREADS'
USER_THREADS = ('OMP_NUM_THREADS', OMP_THREADS)
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


def configure_mxnet(debug=False, mirror=False, environ=None, training=False):
    """Put :func:`mxnet_settings` into ``environ`` (default ``os.environ``) unless set, and
    for ``training`` choose glibc's allocator settings (:func:`configure_allocator`).

    Call before MXNet runs its first operation. Returns the variables this call set.
    """
    if training:
        configure_allocator(mirror)
    environ = os.environ if environ is None else environ
    applied = {}
    for key, value in mxnet_settings(debug, mirror).items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


def physical_cores(cpus=None, topology='/sys/devices/system/cpu'):
    """Number of physical cores among ``cpus`` (default: the CPUs this process may run on),
    from the kernel's CPU topology (package and core id of each logical CPU); the number
    of logical CPUs where the topology cannot be read."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    cores = set()
    for cpu in cpus:
        try:
            with open('%s/cpu%d/topology/physical_package_id' % (topology, cpu)) as f:
                package = f.read().strip()
            with open('%s/cpu%d/topology/core_id' % (topology, cpu)) as f:
                core = f.read().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def use_all_cores(environ=None, modules=None):
    """Let MXNet's CPU operators use one OpenMP thread per physical core
    (``MXNET_OMP_MAX_THREADS`` in ``environ``, default ``os.environ``); see the module
    docstring. Call before ``import mxnet``.

    Returns the thread count set, or None where nothing is set: the user chose a count
    (``OMP_NUM_THREADS`` or ``MXNET_OMP_MAX_THREADS`` in ``environ``), or MXNet is already
    loaded (in ``modules``, default ``sys.modules``: the count is fixed by then).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if 'mxnet' in modules or any(name in environ for name in USER_THREADS):
        return None
    threads = physical_cores()
    environ[OMP_THREADS] = str(threads)
    return threads


# glibc's malloc settings a user may give in the environment; kept if present
USER_MALLOC = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
               'MALLOC_TOP_PAD_', 'MALLOC_MMAP_MAX_')
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Plain training: arrays up to this size come from the heap, whose freed memory the next
# step reuses (glibc's default maps every block above 32 MiB anew at every step).
HEAP_BLOCKS_UP_TO = 1 << 30
# Recomputing training: blocks above this size mapped on their own and unmapped when freed.
RELEASE_ABOVE = 128 * 1024


def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')


def allocator_settings(mirror):
    """``[(mallopt parameter, value), ...]`` of a training run: each mode's purpose.

    * plain: speed. One heap (one arena: other threads' arenas map large arrays on their
      own), arrays up to 1 GiB from it, its top not given back on a ``free``: each step
      reuses the memory the previous one freed instead of faulting in pages the kernel
      zeroes. A1-s8 at crop 504: 17.32 s a step, as the authors' Module, against 18.34 s
      and 18.22 s with glibc's defaults; peak 5376 MiB against 5315. The price is the
      heap's holes at large crops: crop 1152 peaks at 15601 MiB, 12639 MiB with arrays
      above 64 MiB mapped on their own.
    * recomputation (``mirror``): memory. Every block above 128 KiB is mapped on its own
      and unmapped when freed, so that what recomputation frees leaves the process and
      the peak is that of the arrays in use: crop 504 2530 MiB and 26.7 s a step (one heap
      reused: 3376 MiB, 21.6 s), and crop 1528 within 8 GiB (one heap whose holes are given
      back at segment boundaries past 256 MiB: 1328).
    """
    if mirror:
        return [(M_MMAP_THRESHOLD, RELEASE_ABOVE)]
    return [(M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO),
            (M_TRIM_THRESHOLD, HEAP_BLOCKS_UP_TO)]


def configure_allocator(mirror):
    """Apply :func:`allocator_settings` to glibc's malloc (MXNet 1.9 allocates CPU arrays
    with it; it has no CPU pool of its own). Call before MXNet runs its first operation.
    Returns False where this is not glibc, or where the user set glibc's malloc variables
    (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``):
    those are kept and nothing is changed.
    """
    if any(name in os.environ for name in USER_MALLOC) or \
            'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return False
    try:
        libc = _libc()
        return all(bool(libc.mallopt(param, value))
                   for param, value in allocator_settings(mirror))
    except (OSError, AttributeError):
        return False


def return_free_memory():
    """glibc: give the free pages of the heap back to the system (``malloc_trim(0)``), e.g.
    the activations of the last step before a checkpoint is serialised, so that the
    checkpoint's buffers do not add to them. Returns False where this is not glibc."""
    try:
        _libc().malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False
