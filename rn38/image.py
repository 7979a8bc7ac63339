"""Images for both tasks: reading and decoding files, the authors' resize-filter rule,
the ImageNet normalisation, and the error type for unusable image files.

Decoding: OpenCV, without EXIF orientation (``cv2.IMREAD_IGNORE_ORIENTATION``), so an
image has the pixel layout stored in the file, as with the authors' PIL
``Image.open(path).convert('RGB')``; for RGB, grey, palette and RGBA PNGs and for RGB and
grey JPEGs the pixels equal PIL's (tested). CMYK JPEGs may differ from PIL's conversion by
one grey level.

The networks take RGB pixels scaled to [0, 1] and normalised with the ImageNet mean/std,
and the authors resize images with PIL, choosing the filter from the direction of the
resize (their ``get_interp_method``).
"""
import os

import cv2
import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLING = getattr(Image, 'Resampling', Image)
BICUBIC = _RESAMPLING.BICUBIC
BILINEAR = _RESAMPLING.BILINEAR
LANCZOS = _RESAMPLING.LANCZOS

_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class DataError(ValueError):
    """A dataset file or folder that cannot be used; the message starts with its path."""


def interp_method(src_hw, dst_hw, choose=True):
    """PIL filter for resizing ``(h, w)`` ``src_hw`` to ``dst_hw``: with ``choose`` (the
    authors' default) LANCZOS ("antialias") when both sides shrink, BICUBIC when both grow,
    BILINEAR otherwise; without, always BICUBIC."""
    if not choose:
        return BICUBIC
    (h0, w0), (h1, w1) = src_hw, dst_hw
    if h1 < h0 and w1 < w0:
        return LANCZOS
    if h1 > h0 and w1 > w0:
        return BICUBIC
    return BILINEAR


def read_file_bytes(path):
    """The encoded bytes of ``path`` (for caching); DataError if it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise DataError('%s: no such file' % path) from None
    except OSError as err:
        raise DataError('%s: cannot read file (%s)' % (path, err.strerror or err)) from None


def decode_image(buf, path):
    """Encoded bytes -> ``np.uint8 (H, W, 3)`` RGB in the file's stored orientation (EXIF
    orientation ignored; grey images expanded, alpha dropped). ``path`` names the file in
    the DataError raised for an empty or undecodable buffer."""
    if len(buf) == 0:
        raise DataError('%s: cannot read image (empty file)' % path)
    try:
        im = cv2.imdecode(np.frombuffer(buf, np.uint8), _DECODE_FLAGS)
    except cv2.error as err:
        raise DataError('%s: cannot read image (%s)'
                        % (path, str(err).strip().splitlines()[-1])) from None
    if im is None or im.ndim != 3 or im.shape[2] != 3:
        raise DataError('%s: cannot read image (not a decodable image file)' % path)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def read_image(path):
    """``np.uint8 (H, W, 3)`` RGB pixels of the image file ``path``; see
    :func:`decode_image`. DataError naming the file if it is missing or not an image."""
    if not os.path.isfile(path):
        raise DataError('%s: image not found' % path)
    return decode_image(read_file_bytes(path), path)


def normalize(image01, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """``(H, W, 3)`` float RGB in [0, 1] -> ``(3, H, W)`` float32 ``(x - mean) / std``
    (float32 arithmetic)."""
    out = (np.asarray(image01, np.float32) - np.asarray(mean, np.float32)) / \
        np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def normalization_lut(mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """``float32 (3, 256)``: ``(v / 255 - mean[c]) / std[c]`` for every uint8 value v
    (computed in float64, then rounded once)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    lut = (values[None, :] - np.asarray(mean, np.float64)[:, None]) / \
        np.asarray(std, np.float64)[:, None]
    return lut.astype(np.float32)
