"""Atomic file writes: everything a run leaves on disk is either complete or absent.

A file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX), so a run killed at any moment never
leaves a half-written checkpoint, result or summary behind.
"""
import contextlib
import json
import os
import re


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to ``path``; renames it to ``path`` if the block
    succeeds, removes it otherwise. Creates the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    # keep the extension: some writers (matplotlib, np.savez) choose the format by it
    tmp = os.path.join(folder, '.%s.tmp-%d%s' % (base, os.getpid(), ext))
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)


def write_json(obj, path):
    """JSON (sorted keys, indented, no NaN) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False)
                              + '\n').encode('utf-8'))


_TEMPORARY = re.compile(r'^\..+\.tmp-(\d+)(\.[^.]+)?$')


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files of :func:`atomic_path` in ``folder`` whose writing
    process no longer runs (a writer killed between write and rename). Returns them."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        m = _TEMPORARY.match(name)
        path = os.path.join(folder, name)
        if m and os.path.isfile(path) and not _process_alive(int(m.group(1))):
            os.remove(path)
            removed.append(path)
    return removed
