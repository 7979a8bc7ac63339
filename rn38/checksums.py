"""Check released weight files that a user placed in ``models/`` against their md5 sums.

Command: ``rn38-verify-models`` (or ``python scripts/verify_models.py``); exit status 0 when
every file asked for is present and intact, 1 otherwise.
"""
import argparse
import hashlib
import os
import sys


def read_checksums(path):
    """``{file name: md5}`` from an md5sum-style file."""
    sums = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 32:
                raise ValueError('%s:%d: expected "<md5>  <file name>"' % (path, n))
            sums[parts[1].lstrip('*')] = parts[0].lower()
    return sums


def md5sum(path, chunk=1 << 22):
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def verify_models(models_dir, names=None, checksum_file=None):
    """``[(file name, status, message)]`` with status 'ok', 'missing' or 'corrupt'."""
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
    parser = argparse.ArgumentParser(
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
