"""Make the CUDA 11 libraries of the ``gpu`` extra findable by ``mxnet-cu112``.

``pip install .[gpu]`` installs ``mxnet-cu112`` and NVIDIA's CUDA 11 runtime wheels
(``nvidia-cuda-runtime-cu11``, ``nvidia-cublas-cu11``, ``nvidia-cudnn-cu11`` < 9, ...). Those
wheels put their libraries under ``site-packages/nvidia/<component>/lib``, where the dynamic
loader does not look when ``libmxnet.so`` is opened. :func:`preload` opens them first
(``RTLD_GLOBAL``), so that ``import mxnet`` then finds them already loaded. It runs when
:mod:`rn38` is imported, before MXNet, and does nothing when the CPU ``mxnet`` is installed
or the libraries are already on the loader path.

The wheels hold GPU code for compute capability 5.0 to 8.6 only (Maxwell to Ampere); they
cannot run on Hopper (9.0) or newer GPUs.
"""
import ctypes
import glob
import os
import sys

# Load order matters: dependencies first.
SONAMES = ('libcudart.so.11.0', 'libnvToolsExt.so.1', 'libnvrtc.so.11.2', 'libcublasLt.so.11',
           'libcublas.so.11', 'libcufft.so.10', 'libcurand.so.10', 'libcusolver.so.11',
           'libcudnn.so.8', 'libnccl.so.2')


def installed_mxnet_wheels():
    """Names of the installed MXNet distributions; more than one is a broken install."""
    from importlib import metadata
    names = []
    for dist in ('mxnet', 'mxnet-cu112', 'mxnet-cu117', 'mxnet-cu110', 'mxnet-cu102'):
        try:
            metadata.version(dist)
            names.append(dist)
        except metadata.PackageNotFoundError:
            continue
    return names


def find_cuda_libs(search_dirs=None):
    """``{soname: path}`` of the libraries found under ``<dir>/nvidia/*/lib`` for each dir
    of ``search_dirs`` (default: ``sys.path``)."""
    found = {}
    for base in (search_dirs if search_dirs is not None else sys.path):
        for lib_dir in sorted(glob.glob(os.path.join(base, 'nvidia', '*', 'lib'))):
            for soname in SONAMES:
                path = os.path.join(lib_dir, soname)
                if soname not in found and os.path.isfile(path):
                    found[soname] = path
    return found


def preload(search_dirs=None, force=False):
    """Open the CUDA 11 libraries globally; returns the sonames loaded (none on CPU builds)."""
    wheels = installed_mxnet_wheels()
    if len(wheels) > 1:
        sys.stderr.write('rn38: several MXNet wheels are installed (%s); they share one module. '
                         'Keep one: pip uninstall %s\n' % (', '.join(wheels), wheels[0]))
    if not force and not any(w != 'mxnet' for w in wheels):
        return []
    loaded = []
    libs = find_cuda_libs(search_dirs)
    for soname in SONAMES:
        if soname in libs:
            try:
                ctypes.CDLL(libs[soname], mode=ctypes.RTLD_GLOBAL)
                loaded.append(soname)
            except OSError as err:
                sys.stderr.write('rn38: could not load %s (%s)\n' % (libs[soname], err))
    return loaded
