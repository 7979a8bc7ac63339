"""Train or evaluate on VOC (``--help`` lists the options), also installed as ``rn38-voc``."""
import sys


def main(argv=None):
    from issegm.cli import main as run  # here, so that importing this file loads no library
    return run('voc', argv)


if __name__ == '__main__':
    sys.exit(main())
