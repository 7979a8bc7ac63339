"""The training sample transform of the segmentation FCNs, and the training dataset.

Per image, as the authors' file iterator does:

1. draw the target length of the image's LONGER side uniformly from the integers
   ``[int(lo * origin_size), int(hi * origin_size)]`` (``scale_rate_range = (lo, hi)``);
   ``rate = target / max(H, W)``;
2. a square window of ``int(crop / rate)`` source pixels is placed at a random position.
   The authors paste the image at offset ``d0 = max(1, int(s_src // 2))`` into a big canvas
   filled with the mean colour (``s_src = stride / rate``) and draw the canvas origin
   ``sy`` from ``[0, max(1, int(s_src), d0 + H - window + 1))``; so the window's top row in
   image coordinates is ``sy - d0``: it may start up to ``d0`` rows above the image, and
   when the image is smaller than the window it only moves within one stride cell, the
   rest being mean-coloured padding (labels 255). Same for columns;
3. the window is resized to ``crop x crop`` with PIL: the image with the filter of the
   authors' ``get_interp_method`` (their training entries set
   ``choose_interpolation_method``): LANCZOS when the window is larger than the crop
   (shrinking), BICUBIC when smaller (enlarging), BILINEAR when equal; labels NEAREST;
4. labels are taken at the centre of each stride cell, rows/columns ``s//2 + k*s``;
5. image and labels are flipped horizontally with probability 1/2;
6. pixels are scaled to [0, 1] and normalised by the ImageNet mean and std.

This module reproduces those steps without the canvas: only the window is copied (with
mean-coloured padding where it leaves the image) and resized, and only the ``(crop/s)^2``
label samples are looked up, with the index arithmetic of Pillow's nearest resize. For
the same random draws the output equals, bit for bit, a transcription of the authors'
canvas code in ``tests/test_seg_data.py`` (``authors_read``), which
``scripts/bench_data.py`` also times. Resizing only the window is cheap: at most about
720x720 pixels for a 504 crop.
"""
import os
from collections import namedtuple

import numpy as np
from PIL import Image

from rn38.image import (IMAGENET_MEAN, IMAGENET_STD, DataError, decode_image, interp_method,
                        normalization_lut, read_file_bytes)

from .datasets import IGNORE_LABEL, decode_label


CropParams = namedtuple('CropParams', ['target_long_side', 'window', 'top', 'left', 'flip'])
CropParams.__doc__ = """Random draws for one training sample.

target_long_side: pixels of the rescaled image's longer side; window: side of the square
window in source pixels; top, left: window origin in source-image pixels (may be
negative: mean-coloured border); flip: horizontal flip of the output."""


def make_divisible(value, divider):
    """Smallest multiple of ``divider`` that is >= ``value`` (ints)."""
    return int(-(-int(value) // int(divider)) * int(divider))


def crop_window_range(image_hw, target_long_side, crop_size, label_stride):
    """Where the crop window may lie in source-image pixels.

    Args:
        image_hw: ``(H, W)`` of the source image, pixels.
        target_long_side: length the longer side is rescaled to, pixels.
        crop_size: output crop side, pixels (a multiple of label_stride).
        label_stride: output pixels per label sample.
    Returns:
        ``(window, (top_lo, top_hi), (left_lo, left_hi))``: window side in source pixels and
        the half-open integer ranges of its top row and left column (source pixels; values
        below 0 or windows past the far edge are padded with the mean colour / label 255).
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    rate = 1.0 * target_long_side / max(h, w)
    window = int(crop_size / rate)
    stride_src = label_stride / rate
    border = max(1, int(stride_src // 2))

    def origin_range(length):
        high = max(1, int(stride_src), border + length - window + 1)
        return -border, high - border

    return window, origin_range(h), origin_range(w)


def nearest_source_index(window, crop_size):
    """``np.int64[crop_size]``: source index of each output pixel of Pillow's NEAREST resize
    from ``window`` to ``crop_size`` pixels (centre sampling, accumulated in float64 as
    Pillow does, so boundary cases agree exactly)."""
    step = float(window) / crop_size
    positions = np.cumsum(np.concatenate([[step * 0.5], np.full(crop_size - 1, step)]))
    return positions.astype(np.int64)


class SegTrainTransform:
    """Random rescale + crop + flip + normalisation of one training image.

    Args:
        crop_size: output side in pixels; rounded up to a multiple of feat_stride.
        feat_stride: network output stride; one label per ``feat_stride^2`` cell.
        origin_size: reference length of the longer side (e.g. 2048 for Cityscapes).
        scale_rate_range: ``(lo, hi)``; the longer side becomes uniform in
            ``[int(lo*origin_size), int(hi*origin_size)]`` pixels.
        mean, std: RGB normalisation of pixels scaled to [0, 1]; the padding colour is
            ``floor(255 * mean)`` (the authors' float canvas cast to uint8).
        rng: default ``np.random.Generator`` (a call may pass its own).

    ``__call__(image, label[, rng])``: ``image`` uint8 ``(H, W, 3)`` RGB, ``label`` uint8
    ``(H, W)`` train ids -> ``data`` float32 ``(3, crop, crop)``, ``label`` float32
    ``((crop / feat_stride)^2,)`` (row-major, 255 = ignore).
    """

    def __init__(self, crop_size, feat_stride, origin_size, scale_rate_range=(1.0, 1.0),
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, rng=None, ignore_label=IGNORE_LABEL):
        if crop_size <= 0 or feat_stride <= 0 or origin_size <= 0:
            raise ValueError('crop_size, feat_stride and origin_size must be positive, got '
                             '%s, %s, %s' % (crop_size, feat_stride, origin_size))
        lo, hi = (float(r) for r in scale_rate_range)
        if not 0 < lo <= hi:
            raise ValueError('scale_rate_range must be (lo, hi) with 0 < lo <= hi, got %r'
                             % (scale_rate_range,))
        self.feat_stride = int(feat_stride)
        self.crop_size = make_divisible(crop_size, self.feat_stride)
        self.origin_size = int(origin_size)
        self.scale_rate_range = (lo, hi)
        self.target_size_range = (int(lo * origin_size), int(hi * origin_size))
        if self.crop_size > self.target_size_range[1]:
            raise ValueError(
                'crop %d (crop_size %d rounded up to a multiple of stride %d) is larger than '
                'the largest rescaled image side %d (= %g x origin size %d); use a smaller '
                'crop or a larger scale range' % (self.crop_size, crop_size, self.feat_stride,
                                                   self.target_size_range[1], hi, origin_size))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad_color = np.floor(np.asarray(self.mean) * 255).astype(np.uint8)
        self.ignore_label = ignore_label
        self.rng = rng if rng is not None else np.random.default_rng()
        self._lut = normalization_lut(self.mean, self.std)
        self.label_size = self.crop_size // self.feat_stride

    def __repr__(self):
        return ('SegTrainTransform(crop_size=%d, feat_stride=%d, origin_size=%d, '
                'scale_rate_range=%r)' % (self.crop_size, self.feat_stride, self.origin_size,
                                          self.scale_rate_range))

    def sample_params(self, image_hw, rng=None):
        """Draws the :class:`CropParams` of an image of ``image_hw = (H, W)`` pixels."""
        rng = self.rng if rng is None else rng
        lo, hi = self.target_size_range
        target = int(rng.integers(lo, hi + 1))
        window, (top_lo, top_hi), (left_lo, left_hi) = crop_window_range(
            image_hw, target, self.crop_size, self.feat_stride)
        top = int(rng.integers(top_lo, top_hi))
        left = int(rng.integers(left_lo, left_hi))
        flip = bool(rng.integers(2) == 0)
        return CropParams(target, window, top, left, flip)

    def apply(self, image, label, params):
        """The output for given draws; see the class docstring for shapes."""
        h, w = image.shape[:2]
        if label.shape != (h, w):
            raise ValueError('label shape %s differs from image shape %s'
                             % (label.shape, image.shape[:2]))
        win, top, left = params.window, params.top, params.left
        crop, stride = self.crop_size, self.feat_stride
        # image window, mean-coloured where it leaves the image
        y0, y1 = max(top, 0), min(top + win, h)
        x0, x1 = max(left, 0), min(left + win, w)
        if y0 == top and x0 == left and y1 == top + win and x1 == left + win:
            window = image[y0:y1, x0:x1]
        else:
            window = np.empty((win, win, 3), np.uint8)
            window[:] = self.pad_color
            if y1 > y0 and x1 > x0:
                window[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(window)).resize(
            (crop, crop), interp_method((win, win), (crop, crop))))
        # labels at the stride-cell centres of the resized window (Pillow NEAREST indices)
        centres = nearest_source_index(win, crop)[stride // 2::stride]
        rows, cols = centres + top, centres + left
        row_ok, col_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        samples = np.full((self.label_size, self.label_size), self.ignore_label, np.uint8)
        samples[np.ix_(row_ok, col_ok)] = label[np.ix_(rows[row_ok], cols[col_ok])]
        if params.flip:
            resized = resized[:, ::-1]
            samples = samples[:, ::-1]
        data = np.empty((3, crop, crop), np.float32)
        for c in range(3):
            data[c] = self._lut[c][resized[:, :, c]]
        return data, samples.astype(np.float32).ravel()

    def __call__(self, image, label, rng=None):
        return self.apply(image, label, self.sample_params(image.shape[:2], rng))


class SegTrainDataset:
    """Training samples for :class:`rn38.loader.BatchLoader`.

    Args:
        spec: :class:`issegm.datasets.DatasetSpec` (labels are mapped to train ids on read).
        samples: ``[(image_path, label_path), ...]`` from :func:`issegm.datasets.list_samples`.
        transform: callable ``(image, label, rng) -> (data, label)``, e.g.
            :class:`SegTrainTransform`.
        cache_images: keep the encoded file bytes in memory after the first read (per
            process: each loader worker process fills its own cache).

    All files must exist (checked here, cheaply); image/label sizes and label values are
    checked when a sample is read. Problems are :class:`DataError` naming the file.
    ``__getitem__(index, rng)`` -> ``(data, label)`` of the transform.
    """

    def __init__(self, spec, samples, transform, cache_images=False):
        self.spec = spec
        self.samples = [(str(image), None if label is None else str(label))
                        for image, label in samples]
        self.transform = transform
        self.cache_images = bool(cache_images)
        self._cache = {}
        if not self.samples:
            raise DataError('<no samples>: the training sample list is empty')
        for image, label in self.samples:
            if label is None:
                raise DataError('%s: training sample has no label file' % image)
            for path, what in ((image, 'image'), (label, 'label')):
                if not os.path.isfile(path):
                    raise DataError('%s: %s file not found' % (path, what))

    def __len__(self):
        return len(self.samples)

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_cache'] = {}  # never ship cached bytes to worker processes
        return state

    def _bytes(self, path):
        if not self.cache_images:
            return read_file_bytes(path)
        buf = self._cache.get(path)
        if buf is None:
            buf = self._cache[path] = read_file_bytes(path)
        return buf

    def read(self, index):
        """``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids)`` of sample index."""
        image_path, label_path = self.samples[index]
        image = decode_image(self._bytes(image_path), image_path)
        label = decode_label(self.spec, self._bytes(label_path), label_path, image.shape)
        return image, label

    def __getitem__(self, index, rng=None):
        image, label = self.read(index)
        return self.transform(image, label, rng)
