"""Train or evaluate on your own data (``--help`` lists the options), also installed as
``rn38-folder``: ``python issegm/folder.py --phase train|val --data-root DIR``.

DIR holds ``classes.yaml`` (the classes: name, colour, ignore) and one folder per split
(``train/``, ``val/``) with images and label PNGs paired by name (``--image-suffix``,
``--label-suffix``, e.g. ``0000_sat.jpg`` and ``0000_mask.png``). Labels are class
indices or RGB colours (see :func:`issegm.datasets.folder_spec`). The options, outputs and
scores are those of the Cityscapes entry.
"""
import sys


def main(argv=None):
    from issegm.cli import main as run  # here, so that importing this file loads no library
    return run('folder', argv)


if __name__ == '__main__':
    sys.exit(main())
