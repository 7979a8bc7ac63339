"""Train or evaluate on Cityscapes (``--help`` lists the options), also installed as ``rn38-cityscapes``."""
import sys


def main(argv=None):
    from issegm.cli import main as run  # here, so that importing this file loads no library
    return run('cityscapes', argv)


if __name__ == '__main__':
    sys.exit(main())
