"""Verify the released weight files in models/ (or --models-dir) against checksum.md5.

Exit status 0 when every file asked for is present and intact, 1 otherwise, 2 for bad input
(one line on stderr). The same as the
``rn38-verify-models`` command, with this repository's models/ as the default folder.
"""
import os
import sys

from rn38.checksums import main

if __name__ == '__main__':
    sys.exit(main(models_dir=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'models')))
