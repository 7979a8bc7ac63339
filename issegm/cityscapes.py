"""Train or evaluate ResNet-38 FCNs on cityscapes: `python issegm/cityscapes.py --phase train|val ...`.

`--help` lists the options; see README.md for the published recipes.
"""
import os
import sys

if __name__ == '__main__':
    # Run as a script: import the packages from the repository, not from issegm/.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from issegm.cli import script_main
    script_main('cityscapes')
