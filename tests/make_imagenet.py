"""A tiny ImageNet-layout folder for tests and demos.

``make_imagenet(root, classes=5, per_class=4)`` writes::

    root/train/c<k>/<k>_<i>.{png,JPEG}     root/val/c<k>/<k>_<i>.{png,JPEG}
    root/train.lst                          root/val.lst

with lists in the authors' format ``<id>\\t<class>\\t<relative path>``. Each class has its
own colour, so a small network can learn the classes in a few updates; sizes alternate
between landscape 48x64 and portrait 64x48 so the three-crop code sees both orientations.

Run as a script: ``python tests/make_imagenet.py OUT_DIR [--classes 5 --per-class 4]``.
"""
import argparse
import os

import numpy as np
from PIL import Image

SIZES = ((48, 64), (64, 48), (48, 64), (56, 60))


def class_colour(k, classes):
    """A distinct, saturated RGB colour per class (hues spread around the circle)."""
    hue = k / float(classes)
    import colorsys
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.9)) * 255


def make_image(k, classes, h, w, rng):
    base = class_colour(k, classes)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((xx + yy) / float(h + w) - 0.5)[..., None] * 60
    noise = rng.normal(0, 12, (h, w, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def make_imagenet(root, classes=5, per_class=4, val_per_class=None, seed=0, jpeg_every=3):
    """Write the folder and its lists; return ``{'train': [(rel, k)], 'val': [...]}``."""
    rng = np.random.RandomState(seed)
    val_per_class = per_class if val_per_class is None else val_per_class
    out = {}
    for split, count in (('train', per_class), ('val', val_per_class)):
        entries = []
        for k in range(classes):
            folder = os.path.join(root, split, 'c%d' % k)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                h, w = SIZES[(k + i) % len(SIZES)]
                ext = 'JPEG' if (k * count + i) % jpeg_every == 0 else 'png'
                rel = '%s/c%d/%d_%d.%s' % (split, k, k, i, ext)
                image = Image.fromarray(make_image(k, classes, h, w, rng))
                image.save(os.path.join(root, rel), **({'quality': 95} if ext == 'JPEG' else {}))
                entries.append((rel, k))
        with open(os.path.join(root, split + '.lst'), 'w') as f:
            for i, (rel, k) in enumerate(entries):
                f.write('%d\t%d\t%s\n' % (i, k, rel))
        out[split] = entries
    return out


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root')
    parser.add_argument('--classes', type=int, default=5)
    parser.add_argument('--per-class', type=int, default=4)
    args = parser.parse_args()
    made = make_imagenet(args.root, args.classes, args.per_class)
    print('wrote %d train and %d val images under %s'
          % (len(made['train']), len(made['val']), args.root))
