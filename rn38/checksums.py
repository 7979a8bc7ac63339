"""File checksums: the released weight files in ``models/`` against their md5 sums, and the
sha256 digests that key evaluation results to the weights and data they were computed from.

Command: ``rn38-verify-models`` (or ``python scripts/verify_models.py``); exit status 0 when
every file asked for is present and intact, 1 otherwise, 2 with a one-line error on stderr
for bad input (an unknown file name, a missing folder, a malformed checksum file).
"""
import hashlib
import os
import re


def read_checksums(path):
    """``{file name: md5}`` from an md5sum-style file; ValueError naming the file (and the
    line) if it is missing, unreadable or malformed."""
    sums = {}
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ValueError('%s: checksum file not found' % path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError('%s: cannot read the checksum file (%s)'
                         % (path, getattr(err, 'strerror', None) or err)) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.match(r'^[0-9a-fA-F]{32}$', parts[0]):
            raise ValueError('%s line %d: expected "<md5>  <file name>", got %r'
                             % (path, n, line[:80]))
        sums[parts[1].lstrip('*')] = parts[0].lower()
    if not sums:
        raise ValueError('%s: no checksums in this file' % path)
    return sums


def file_digest(path, algorithm='sha256', chunk=1 << 22):
    """Hex digest (``hashlib`` algorithm name) of a file's content, read in ``chunk``-byte
    blocks (constant memory)."""
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def sha256sum(path):
    """Hex sha256 of a file's content."""
    return file_digest(path, 'sha256')


def files_digest(paths, root=None):
    """Hex sha256 of a file list: each path (relative to ``root`` if given), its size and
    modification time, in order. A list, a renamed, resized or rewritten file changes it.
    ``None`` entries (e.g. a missing label) are kept as such."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            digest.update(b'-\n')
            continue
        st = os.stat(path)
        name = os.path.relpath(path, root) if root else path
        digest.update(('%s\t%d\t%d\n' % (name, st.st_size, st.st_mtime_ns)).encode('utf-8'))
    return digest.hexdigest()


def md5sum(path):
    """Hex md5 of a file's content (the released files' checksums)."""
    return file_digest(path, 'md5')


def verify_models(models_dir, names=None, checksum_file=None):
    """``[(file name, status, message)]`` with status 'ok', 'missing' or 'corrupt'."""
    if not os.path.isdir(models_dir):
        raise ValueError('%s: models folder not found (give --models-dir)' % models_dir)
    checksum_file = checksum_file or os.path.join(models_dir, 'checksum.md5')
    sums = read_checksums(checksum_file)
    results = []
    for name in (names or sorted(sums)):
        if name not in sums:
            raise ValueError('%s: no checksum for %s; known files: %s'
                             % (checksum_file, name, ', '.join(sorted(sums))))
        path = os.path.join(models_dir, name)
        if not os.path.isfile(path):
            results.append((name, 'missing', 'missing: put the released file %s at %s'
                            % (name, path)))
            continue
        actual = md5sum(path)
        if actual != sums[name]:
            results.append((name, 'corrupt', '%s: md5 %s, expected %s (incomplete or another '
                            'file)' % (path, actual, sums[name])))
        else:
            results.append((name, 'ok', '%s: ok' % path))
    return results


def main(argv=None, models_dir='models'):
    """The ``rn38-verify-models`` command: one line per file; returns the exit status."""
    from .cli import run_command
    return run_command(_command, argv, models_dir)


def _command(argv, models_dir):
    from .cli import ArgumentParser  # one-line usage errors, status 2
    parser = ArgumentParser(
        description='Verify the released weight files in --models-dir against its '
                    'checksum.md5.')
    parser.add_argument('--models-dir', default=models_dir, help='(default: %(default)s)')
    parser.add_argument('--checksums', default=None, help='default: <models-dir>/checksum.md5')
    parser.add_argument('files', nargs='*', help='file names to check (default: all six)')
    args = parser.parse_args(argv)
    results = verify_models(args.models_dir, args.files or None, args.checksums)
    for _, _, message in results:
        print(message)
    return 0 if all(status == 'ok' for _, status, _ in results) else 1
