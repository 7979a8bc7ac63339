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
        configure_allocator()
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
# Training: arrays up to this size come from the heap, whose freed memory the next
# allocations reuse; glibc's default maps every block above 32 MiB on its own (fresh
# memory, zeroed by the kernel, at every step).
HEAP_BLOCKS_UP_TO = 1 << 30
# Recomputation: the heap's free resident memory allowed to accumulate between two
# returns to the system (see HeapTrimmer).
HEAP_HOLE_BUDGET = 256 << 20


def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')


def configure_allocator():
    """glibc's malloc for a training run (MXNet 1.9 allocates CPU arrays with it; it has
    no CPU pool of its own): one heap (one arena), arrays up to 1 GiB from it, and the
    heap's top never given back on a ``free``, so that each step reuses the memory the
    previous one freed instead of faulting in fresh pages. Recomputing steps then return
    the heap's holes to the system at segment boundaries (:class:`HeapTrimmer`). Returns
    False where this is not glibc.

    Measured with the real command (A1-s8, crop 504, batch 1, 4 steps, two threads): plain
    5357 MiB and 17.3 s a step against glibc's defaults' 5206 MiB and 18.4 s (every
    block above 32 MiB mapped anew each step); recomputation 2712 MiB and 23.4 s with the
    trimming, 3376 MiB and 21.6 s without it, and 2534 MiB and 26 s with every block
    above 128 KiB mapped on its own (the previous setting: 10.5 million page faults in 4
    steps). The price is memory at large crops, where the heap's holes grow with the
    arrays: the plain step at crop 1152 peaks at 15601 MiB, 12639 MiB with arrays above
    64 MiB mapped on their own (``MALLOC_MMAP_THRESHOLD_=67108864``).

    Nothing is changed (returns False) if the user set glibc's malloc variables
    (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``).
    """
    if any(name in os.environ for name in USER_MALLOC) or \
            'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return False                 # the user's own glibc settings are kept
    try:
        libc = _libc()
        return all(bool(libc.mallopt(param, value)) for param, value in (
            (M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO),
            (M_TRIM_THRESHOLD, HEAP_BLOCKS_UP_TO)))
    except (OSError, AttributeError):
        return False


class HeapTrimmer:
    """Give the heap's free pages back to the system (``malloc_trim(0)``, which releases
    the free pages inside the heap too, not only at its top) when the free memory the
    process keeps resident has grown by more than ``budget`` bytes since the last call
    that trimmed.

    Recomputation frees a segment's activations while the segment boundaries stay: the
    freed memory becomes holes between live arrays that the next, differently sized
    arrays fill only in part. Kept resident, the holes added 840 MiB to the peak of the
    A1-s8 step at crop 504; trimmed at every segment boundary they cost time, because
    memory given back is faulted in again when reused (the budget trims 7 times a step).

    Free resident memory is estimated as resident memory minus what malloc has handed out
    (``mallinfo2``: ``uordblks + hblkhd``); the rest of the process (libraries, Python's
    own arenas) is in both the baseline and the later readings. ``read_rss`` and
    ``read_in_use`` (bytes) are for tests. A no-op where glibc lacks ``mallinfo2``.
    """

    def __init__(self, budget=HEAP_HOLE_BUDGET, read_rss=None, read_in_use=None, trim=None):
        self.budget = budget
        self.baseline = None
        self.trims = 0
        if read_in_use is None or trim is None:
            read_in_use, trim = _glibc_heap_functions()
        self._read_rss = read_rss or _resident_bytes
        self._read_in_use = read_in_use
        self._trim = trim

    def _free_resident(self):
        return self._read_rss() - self._read_in_use()

    def __call__(self):
        """Trim if the free resident memory grew by more than the budget; True if it did."""
        if self._trim is None:
            return False
        if self.baseline is not None and self._free_resident() - self.baseline <= self.budget:
            return False
        self._trim()
        self.trims += 1
        self.baseline = self._free_resident()
        return True


def _resident_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _glibc_heap_functions():
    """``(bytes handed out by malloc, malloc_trim(0))`` or ``(None, None)``."""
    import ctypes
    try:
        libc = _libc()
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None, None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
            'uordblks', 'fordblks', 'keepcost')]

    mallinfo2.restype = MallInfo2

    def in_use():
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use, lambda: libc.malloc_trim(0)


_heap_trimmer = None


def trim_heap_holes():
    """The process's :class:`HeapTrimmer` (one heap, one trimmer), called by recomputing
    steps at segment boundaries on CPU contexts. True if it trimmed."""
    global _heap_trimmer
    if _heap_trimmer is None:
        _heap_trimmer = HeapTrimmer()
    return _heap_trimmer()


def return_free_memory():
    """glibc: give the free pages of the heap back to the system (``malloc_trim(0)``), e.g.
    the activations of the last step before a checkpoint is serialised, so that the
    checkpoint's buffers do not add to them. Returns False where this is not glibc."""
    try:
        _libc().malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False
