"""Train or evaluate on your own data: `python issegm/folder.py --phase train|val --data-root DIR`.

DIR holds ``classes.yaml`` (the classes: name, colour, ignore) and one folder per split
(``train/``, ``val/``) with images and label PNGs paired by name (``--image-suffix``,
``--label-suffix``, e.g. ``0000_sat.jpg`` and ``0000_mask.png``). Labels are class
indices or RGB colours (see :func:`issegm.datasets.folder_spec`). The options, outputs and
scores are those of the Cityscapes entry; `--help` lists them.
"""
import os
import sys

if __name__ == '__main__':
    # Run as a script: import the packages from the repository, not from issegm/.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from issegm.cli import script_main
    script_main('folder')
