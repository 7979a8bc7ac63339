"""Verify the released weight files in models/ (or --models-dir) against checksum.md5.

Exit status 0 when every file asked for is present and intact, 1 otherwise, 2 with a
one-line error on stderr for bad input (an unknown file name, a missing folder, a
malformed checksum file).
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from rn38.checksums import verify_models  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models-dir', default=os.path.join(REPO, 'models'))
    parser.add_argument('--checksums', default=None, help='default: <models-dir>/checksum.md5')
    parser.add_argument('files', nargs='*', help='file names to check (default: all six)')
    args = parser.parse_args(argv)
    try:
        results = verify_models(args.models_dir, args.files or None, args.checksums)
    except (ValueError, OSError) as err:
        print('error: %s' % str(err).strip().splitlines()[0], file=sys.stderr)
        return 2
    for _, _, message in results:
        print(message)
    return 0 if all(status == 'ok' for _, status, _ in results) else 1


if __name__ == '__main__':
    sys.exit(main())
