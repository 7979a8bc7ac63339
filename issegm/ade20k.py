"""Train or evaluate on ADE20K (``--help`` lists the options), also installed as ``rn38-ade20k``."""
import sys


def main(argv=None):
    from issegm.cli import main as run  # here, so that importing this file loads no library
    return run('ade20k', argv)


if __name__ == '__main__':
    sys.exit(main())
