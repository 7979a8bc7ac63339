"""Up-front checks of an entry's options against this machine, before anything is built:
the devices exist, the output folder can be written."""
import os
import tempfile

import mxnet as mx

from .devices import parse_devices


def available_devices(spec, option='--gpus'):
    """Contexts of the device option ``spec`` (see :func:`rn38.devices.parse_devices`).

    ValueError naming ``option`` when the text does not parse or a GPU it names does not
    exist here (MXNet itself would only fail at the first array, with "GPU is not
    enabled" on a CPU build).
    """
    try:
        devices = parse_devices(spec)
    except ValueError as err:
        raise ValueError('%s %r: %s' % (option, spec, str(err).split(': ', 1)[-1])) from None
    gpus = [d.device_id for d in devices if d.device_type == 'gpu']
    if gpus:
        try:
            count = mx.context.num_gpus()
        except mx.base.MXNetError:  # a CUDA build on a machine without a usable driver
            count = 0
        missing = [i for i in gpus if i >= count]
        if missing:
            have = 'it has %d GPU%s' % (count, '' if count == 1 else 's') if count else \
                'it has no GPU, or MXNet was built without GPU support'
            raise ValueError('%s %s: no GPU %s on this machine (%s); use %s cpu'
                             % (option, spec, ','.join(map(str, missing)), have, option))
    return devices


def writable_folder(path, option='--output'):
    """Check that ``path`` is, or can become, a folder this process can write into.

    A missing folder is fine when its nearest existing parent is a writable folder (it is
    created later). Writing is tried (a temporary file, removed at once), so read-only
    mounts and immutable folders are caught too. ValueError naming ``option`` and the path.
    """
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError('%s %s: %s is a file, not a folder' % (option, path, probe))
    try:
        fd, name = tempfile.mkstemp(prefix='.write-test-', dir=probe)
    except OSError as err:
        raise ValueError('%s %s: cannot write into %s (%s)'
                         % (option, path, probe, err.strerror or err)) from None
    os.close(fd)
    os.remove(name)
