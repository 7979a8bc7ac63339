#!/usr/bin/env python3
"""Writes the SBD-augmented VOC 2012 training list ``train+.lst`` as the authors define it.

    python scripts/make_sbd_lists.py --voc-root data/VOCdevkit/VOC2012 --sbd-root data/sbd

Inputs:

- ``<voc-root>/ImageSets/Segmentation/{train,val}.txt``, ``JPEGImages/<id>.jpg``,
  ``SegmentationClass/<id>.png`` (the VOC 2012 layout);
- ``<sbd-root>/dataset/{train,val}.txt`` and ``dataset/cls/<id>.mat`` (the Semantic
  Boundaries Dataset, ``benchmark_RELEASE``): ``GTcls.Segmentation`` holds the class map,
  ``0..20`` in VOC's class order.

Outputs:

- ``<sbd-root>/dataset/clsImg/<id>.png``: each needed SBD class map as a single-channel
  8-bit PNG (palette mode, VOC's colours), the form the authors' list points at
  (``../sbd/dataset/clsImg/<id>.png``). A PNG is rewritten whenever its ``.mat`` differs.
- ``<voc-root>/train+.lst`` (or ``--out``): ``image<TAB>label`` lines, paths relative to the
  voc root (the folder the entries' ``--data-root`` names), so
  ``python issegm/voc.py --phase train --split train+ --data-root <voc-root>`` reads it.

``train+`` (10582 images with the full datasets) is, in the authors' list
(ademxapp ``issegm/data/voc/train+.lst``): the VOC ``train`` images in ``train.txt`` order
with their VOC labels, then, sorted by id, every image of SBD ``train`` and ``val`` that is
in neither VOC ``train`` nor VOC ``val``, with its SBD label. All images are VOC's JPEGs.

The authors also name a ``train++`` split; its list is not in their published code, which
only gives it a 640 x 640 image bound, larger than any VOC or SBD image (so it holds images
from elsewhere, e.g. COCO). It cannot be derived from SBD and is not written here.

Bad input ends in one line on stderr naming the file and exit status 2.
"""
import argparse
import io
import os
import sys

import numpy as np
from PIL import Image

from rn38.atomic import atomic_write_bytes
from rn38.cli import ArgumentParser, run_command

VOC_CLASSES = 21


class InputError(ValueError):
    """A missing or unusable input file; the message starts with its path."""


def read_ids(path):
    """Image ids of a split file, one per line (first field), in file order."""
    if not os.path.isfile(path):
        raise InputError('%s: split file not found' % path)
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise InputError('%s: split file lists no images' % path)
    return ids


def read_sbd_segmentation(path):
    """``uint8 (H, W)`` class map of an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``)."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat['GTcls'].Segmentation)
    except FileNotFoundError:
        raise InputError('%s: SBD class file not found' % path) from None
    except (KeyError, AttributeError):
        raise InputError('%s: no GTcls.Segmentation in this .mat file' % path) from None
    except Exception as err:  # scipy raises several types for damaged files
        raise InputError('%s: cannot read .mat file (%s)' % (path, err)) from None
    if seg.ndim != 2 or seg.size == 0:
        raise InputError('%s: GTcls.Segmentation has shape %s, expected (H, W)'
                         % (path, seg.shape))
    if seg.min() < 0 or seg.max() >= VOC_CLASSES:
        raise InputError('%s: class ids must be 0..%d, found %d..%d'
                         % (path, VOC_CLASSES - 1, seg.min(), seg.max()))
    return seg.astype(np.uint8)


def _voc_palette():
    from gluoncv.utils.viz.segmentation import vocpallete
    return list(vocpallete[:3 * 256]) + [0] * max(0, 3 * 256 - len(vocpallete))


def png_bytes(seg, palette):
    pil = Image.fromarray(seg, mode='P')
    pil.putpalette(palette)
    buf = io.BytesIO()
    pil.save(buf, format='PNG')
    return buf.getvalue()


def _same_png(path, seg):
    try:
        with Image.open(path) as pil:
            return pil.mode in ('L', 'P') and np.array_equal(np.asarray(pil), seg)
    except (OSError, ValueError):
        return False


def make_train_plus(voc_root, sbd_root, out=None, progress=True):
    """Write the SBD label PNGs and ``train+.lst``; returns ``(list path, lines)``."""
    from tqdm import tqdm
    seg_sets = os.path.join(voc_root, 'ImageSets', 'Segmentation')
    voc_train = read_ids(os.path.join(seg_sets, 'train.txt'))
    voc_val = read_ids(os.path.join(seg_sets, 'val.txt'))
    dataset = os.path.join(sbd_root, 'dataset')
    sbd_ids = set(read_ids(os.path.join(dataset, 'train.txt'))) | \
        set(read_ids(os.path.join(dataset, 'val.txt')))
    extra = sorted(sbd_ids - set(voc_train) - set(voc_val))
    out = out or os.path.join(voc_root, 'train+.lst')
    list_dir = os.path.dirname(os.path.abspath(out))

    def rel(path):
        return os.path.relpath(os.path.abspath(path), list_dir).replace(os.sep, '/')

    def image_of(i):
        path = os.path.join(voc_root, 'JPEGImages', i + '.jpg')
        if not os.path.isfile(path):
            raise InputError('%s: image not found' % path)
        return path

    lines = []
    for i in voc_train:
        label = os.path.join(voc_root, 'SegmentationClass', i + '.png')
        if not os.path.isfile(label):
            raise InputError('%s: label not found' % label)
        lines.append('%s\t%s' % (rel(image_of(i)), rel(label)))
    palette = _voc_palette()
    for i in tqdm(extra, unit='img', disable=not progress, desc='SBD labels'):
        image = image_of(i)
        seg = read_sbd_segmentation(os.path.join(dataset, 'cls', i + '.mat'))
        with Image.open(image) as pil:
            width, height = pil.size
        if seg.shape != (height, width):
            raise InputError('%s: class map is %dx%d but image %s is %dx%d'
                             % (os.path.join(dataset, 'cls', i + '.mat'), seg.shape[0],
                                seg.shape[1], image, height, width))
        png = os.path.join(dataset, 'clsImg', i + '.png')
        if not _same_png(png, seg):
            atomic_write_bytes(png, png_bytes(seg, palette))
        lines.append('%s\t%s' % (rel(image), rel(png)))
    atomic_write_bytes(out, ('\n'.join(lines) + '\n').encode('utf-8'))
    return out, lines


def main(argv=None):
    """Run the command line; returns the exit status (2 after one ``error:`` line)."""
    return run_command(_command, argv)


def _command(argv):
    p = ArgumentParser(description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--voc-root', required=True, help='the VOC2012 folder')
    p.add_argument('--sbd-root', required=True,
                   help='the SBD folder holding dataset/ (benchmark_RELEASE)')
    p.add_argument('--out', default=None, help='list file (default: <voc-root>/train+.lst)')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    args = p.parse_args(argv)
    out, lines = make_train_plus(args.voc_root, args.sbd_root, args.out, args.progress)
    print('%s: %d images' % (out, len(lines)))


if __name__ == '__main__':
    sys.exit(main())
