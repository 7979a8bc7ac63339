"""Segmentation inference and evaluation: the authors' test protocol and a few extensions.

The authors' single-scale protocol (ademxapp ``issegm/voc.py``, ``_val_impl`` and
``interp_preds_as``; their network ends with a softmax, so everything after the network
works on class PROBABILITIES), for an RGB image of ``H0 x W0`` pixels, test scale L,
feature stride s and T = ``test_steps``:

1. Resize the image so that its longer side is L, the other side
   ``round(L * shorter / longer)`` (numpy rounding); no resize when the longer side is
   already L. The PIL filter follows their ``get_interp_method`` (enabled in their
   entry): LANCZOS ("ANTIALIAS") when both sides shrink, BICUBIC when both grow, BILINEAR
   otherwise. Result: ``h x w``.
2. Normalise: ``(pixel / 255 - mean) / std`` with the ImageNet mean/std.
3. Padding: the network input is ``ceil(h/s)*s x ceil(w/s)*s`` (their Cityscapes setting,
   ``pad_mode='stride'``) or a square ``ceil(L/s)*s`` (their VOC/ADE20K setting,
   ``pad_mode='scale'``); the image sits at the top-left, the rest is 0 (= the mean
   colour after normalisation).
4. Half-stride offset and ``test_steps``: the image is first put at offset ``s//2`` in a
   zero canvas of ``(h+s) x (w+s)``; with ``p = s/T`` (T must divide s), pass ``(i, j)``
   (``0 <= i, j < T``) copies the ``h x w`` window of that canvas starting at
   ``(p//2 + i*p, p//2 + j*p)`` into the top-left of the input. For T = 1 the two offsets
   cancel and the input is the image itself; for T > 1 pass (i, j) sees the image shifted
   by ``p//2 + i*p - s//2`` rows and ``p//2 + j*p - s//2`` columns (e.g. s=8, T=2: -2 and
   +2 pixels). The ``(h/s, w/s)`` output of pass (i, j) fills the rows ``i::T`` and
   columns ``j::T`` of a finer ``(T*h/s, T*w/s)`` map, i.e. a map of stride p.
5. Flipping (``flip=True``): each pass also runs the horizontally flipped input (the
   whole padded input is flipped, so its padding moves to the left) and the flipped-back
   output is averaged with the plain one, in probability.
6. Back to the image: each class map is resized with PIL BICUBIC by the factor p (to the
   padded input size), cropped to ``h x w``, then resized to ``H0 x W0`` with the filter
   of step 1's rule (BICUBIC when the image was shrunk for the network); argmax gives the
   train ids. They wrote the ids mapped to raw label ids as a PNG with the colour map as
   its palette, and a "correct" map: 255 where the ground truth is not a valid label,
   127 where the prediction equals it, 0 elsewhere.

A consequence worth knowing (kept as is, since the released scores were measured this
way): in these networks output cell j is centred on input pixel ``j*s`` (3x3 convs with
padding 1, strides taken at even positions), and the pass offsets of step 4 are
symmetric around that grid (for T = 1 they vanish), but the bicubic resize of step 6
puts cell m of the stride-p map at pixel ``m*p + (p-1)/2``. The score maps therefore sit
``(s-1)/2`` pixels (3.5 px for s = 8) right of and below where they were computed.

Beyond the original (their code asserts a single scale):

* Several scales: each scale goes through steps 1-6 and the ``(C, H0, W0)``
  probabilities are averaged over the scales.
* Sliding window: a network input larger than ``max_input_pixels`` is cut into tiles.
  Tile cores (``tile_size``) and margins (``tile_margin``) are multiples of s and each
  window is clipped to the padded input; only the core's output cells are kept. This is
  EXACT (same numbers as the whole input, up to float rounding) when the margin covers
  the network's receptive-field radius r (sum over the convolutions on the longest path
  of ``dilation * (kernel//2) * input stride``, see :func:`receptive_radius`): then no
  kept cell depends on anything outside its window, the windows start on multiples of
  s so the strided sampling grid is the same, and a window that touches the input's
  border keeps the same zero padding there. For the released A1 s8 nets r = 470 px
  (the mini s8 nets: 318 px), so exact tiling needs windows of the core + 2 x 472 px; a
  smaller margin is allowed and gives an approximation near the tile borders.

Everything here is plain functions and classes; the entries do the argument parsing.
"""
import copy
import io
import json
import logging
import math
import os
import threading
import time
import warnings

import cv2
import mxnet as mx
import numpy as np
from PIL import Image

from rn38.atomic import atomic_write_bytes, write_json
from rn38.image import BICUBIC, IMAGENET_MEAN, IMAGENET_STD, interp_method

from .datasets import DataError, read_image, read_label
from .metrics import ConfusionMatrix
from .transforms import make_divisible



# ----------------------------------------------------------------------------- geometry

def scaled_size(height, width, scale):
    """``(h, w)`` with the longer side equal to ``scale`` (None: unchanged), as the authors."""
    if scale is None or max(height, width) == scale:
        return height, width
    if width >= height:
        return int(np.round(1.0 * scale * height / width)), int(scale)
    return int(scale), int(np.round(1.0 * scale * width / height))


def resize_image(image, size_hw):
    """``uint8 (H, W, 3)`` -> ``uint8 (h, w, 3)`` with PIL and :func:`interp_method`."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    method = interp_method(image.shape[:2], (h, w))
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), method))


def resize_maps(maps, size_hw, method=BICUBIC):
    """``float32 (C, h, w)`` -> ``float32 (C, H, W)``, each map resized by PIL (mode F)."""
    h, w = size_hw
    if maps.shape[1:] == (h, w):
        return maps
    out = np.empty((maps.shape[0], h, w), np.float32)
    for c in range(maps.shape[0]):
        pil = Image.fromarray(np.ascontiguousarray(maps[c], np.float32))
        out[c] = np.asarray(pil.resize((w, h), method))
    return out


def maps_to_image(fine, pred_stride, resized_hw, image_hw):
    """Step 6: ``float32 (C, m, n)`` map of stride ``pred_stride`` on the padded input of
    an image resized to ``resized_hw`` -> ``float32 (C, H0, W0)`` at ``image_hw``: PIL
    BICUBIC by the stride, crop to ``resized_hw``, then the resize rule back to the image."""
    h, w = resized_hw
    up = resize_maps(np.asarray(fine, np.float32),
                     (fine.shape[1] * pred_stride, fine.shape[2] * pred_stride), BICUBIC)
    up = up[:, :h, :w]
    if (h, w) != tuple(image_hw):
        up = resize_maps(np.ascontiguousarray(up), tuple(image_hw),
                         interp_method((h, w), tuple(image_hw)))
    return np.ascontiguousarray(up)


def _layer_geometry(layer):
    """(kernel, stride, dilation) of a Conv2D or pooling block along one axis, else None."""
    kw = getattr(layer, '_kwargs', None)
    if not isinstance(kw, dict) or 'kernel' not in kw:
        return None
    if kw.get('global_pool'):
        return None
    kernel = kw['kernel'][0] if isinstance(kw['kernel'], (tuple, list)) else kw['kernel']
    stride = kw.get('stride', 1)
    stride = stride[0] if isinstance(stride, (tuple, list)) else stride
    dilate = kw.get('dilate', 1)
    dilate = dilate[0] if isinstance(dilate, (tuple, list)) else dilate
    return int(kernel), int(stride or 1), int(dilate or 1)


def receptive_radius(net):
    """Receptive-field radius in input pixels of a feed-forward conv network.

    Walks the blocks in order and sums ``dilation * (kernel - 1) / 2 * input stride`` over
    the convolutions and poolings. In a residual block only the main branch (``.convs``)
    is followed: the 1x1 shortcut reaches no further. A network can state its own value as
    ``net.receptive_radius``. Returns an int, or None if the network has no convolution.
    """
    if hasattr(net, 'receptive_radius') and not callable(net.receptive_radius):
        return int(net.receptive_radius)
    state = {'radius': 0.0, 'stride': 1, 'found': False}

    def walk(block):
        geom = _layer_geometry(block)
        if geom is not None:
            kernel, stride, dilate = geom
            state['radius'] += dilate * (kernel - 1) / 2.0 * state['stride']
            state['stride'] *= stride
            state['found'] = True
            return
        convs = getattr(block, 'convs', None)
        if convs is not None and hasattr(block, 'shortcut'):  # rn38.net.ResBlock
            walk(convs)
            return
        for child in block._children.values():
            walk(child)

    walk(net)
    return int(math.ceil(state['radius'])) if state['found'] else None


# ----------------------------------------------------------------------------- predictor

class SegPredictor:
    """Class probabilities of a segmentation network for images of any size.

    net: a Gluon block, ``(1, 3, H, W)`` float32 -> pre-softmax scores
        ``(1, C, H/s, W/s)`` for H, W multiples of s (``net.feat_stride``,
        ``net.classes`` give s and C unless passed).
    ctx: a context or list. :meth:`predict_probs` runs on the first one;
        :meth:`on_device` gives a predictor for another (the net's parameters must be
        on all of them), as :func:`evaluate` does to spread images over the devices.
    mean, std: per-channel RGB normalisation of ``pixel / 255``.
    scales: test scales (length of the longer side, pixels); None in the list means the
        image's own size. Several scales are averaged in probability.
    flip: also run the mirrored input and average (in probability).
    test_steps: T, shifted passes per axis giving a map of stride s/T (T divides s).
    pad_mode: ``'stride'`` (input padded to multiples of s) or ``'scale'`` (a square of
        the test scale, rounded up to s), see the module docstring.
    max_input_pixels: network inputs with more pixels are tiled (None: never tile).
    tile_size: core size of a tile, pixels (int or (h, w)), rounded down to s.
    tile_margin: context added on each side of a core, pixels, rounded up to s; None =
        :func:`receptive_radius` of the net (exact tiling).
    tile_batch: windows of the same size run together, this many per forward; None:
        as many as fit in ``max_input_pixels`` (at least one), so the memory bound the
        user set still holds. The results equal one window at a time exactly.

    ``timings`` accumulates seconds: ``network`` (forward + softmax + copy to host),
    ``resize`` (image resizing + normalisation, resizing the maps back) and the count of
    ``forwards``; ``reset_timings()`` clears them.
    """

    PAD_MODES = ('stride', 'scale')

    def __init__(self, net, ctx=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, scales=(None,),
                 flip=False, test_steps=1, pad_mode='stride', max_input_pixels=None,
                 tile_size=512, tile_margin=None, feat_stride=None, num_classes=None,
                 tile_batch=None):
        self.net = net
        ctx = ctx if ctx is not None else mx.cpu()
        self.ctx = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
        self.mean_std = ([float(v) for v in mean], [float(v) for v in std])
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)
        scales = (scales,) if scales is None or np.isscalar(scales) else tuple(scales)
        if not scales:
            raise ValueError('no test scale given')
        for sc in scales:
            if sc is not None and int(sc) < 1:
                raise ValueError('test scale must be a positive length, got %r' % (sc,))
        self.scales = tuple(None if sc is None else int(sc) for sc in scales)
        self.flip = bool(flip)
        self.feat_stride = int(feat_stride or net.feat_stride)
        self.num_classes = int(num_classes or net.classes)
        self.test_steps = int(test_steps)
        if self.test_steps < 1 or self.feat_stride % self.test_steps:
            raise ValueError('test_steps must divide the feature stride %d, got %r'
                             % (self.feat_stride, test_steps))
        if pad_mode not in self.PAD_MODES:
            raise ValueError('unknown pad mode %r; valid: %s'
                             % (pad_mode, ', '.join(self.PAD_MODES)))
        self.pad_mode = pad_mode
        s = self.feat_stride
        self.max_input_pixels = None if max_input_pixels is None else int(max_input_pixels)
        th, tw = (tile_size, tile_size) if np.isscalar(tile_size) else tile_size
        self.tile_size = (max(s, int(th) // s * s), max(s, int(tw) // s * s))
        self._tile_margin = tile_margin
        self.tile_batch = None if tile_batch is None else max(1, int(tile_batch))
        self._timing_lock = threading.Lock()
        self.timings = {}
        self.reset_timings()

    def on_device(self, index):
        """A predictor running on ``self.ctx[index]``, sharing the parameters and the
        timings. Its network is a graph of its own over the same parameters, so that
        threads running different devices share no block state (Gluon's is not
        thread-safe); call this from one thread."""
        other = copy.copy(self)
        other.ctx = [self.ctx[index]]
        if self.max_input_pixels is not None:
            other._tile_margin = self.tile_margin  # needs the layers of the original net
        data = mx.sym.var('data')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            other.net = mx.gluon.SymbolBlock(self.net(data), data,
                                             params=self.net.collect_params())
        other.net.hybridize(static_alloc=True)
        return other

    def _add_time(self, key, seconds, forwards=0):
        with self._timing_lock:
            self.timings[key] += seconds
            self.timings['forwards'] += forwards

    # -- bookkeeping ---------------------------------------------------------------------
    def reset_timings(self):
        self.timings = {'network': 0.0, 'resize': 0.0, 'forwards': 0}

    @property
    def tile_margin(self):
        """Margin of the tiles in pixels (a multiple of the stride)."""
        margin = self._tile_margin
        if margin is None:
            margin = receptive_radius(self.net)
            if margin is None:
                raise ValueError('cannot find the receptive field of %s; pass tile_margin'
                                 % type(self.net).__name__)
        return make_divisible(int(margin), self.feat_stride)

    def describe(self):
        """The protocol settings, JSON-ready."""
        return {'scales': list(self.scales), 'flip': self.flip,
                'test_steps': self.test_steps, 'pad_mode': self.pad_mode,
                'feat_stride': self.feat_stride, 'classes': self.num_classes,
                'mean': self.mean_std[0], 'std': self.mean_std[1],
                'max_input_pixels': self.max_input_pixels,
                'tile_size': list(self.tile_size) if self.max_input_pixels else None,
                'tile_margin': self.tile_margin if self.max_input_pixels else None}

    # -- network -------------------------------------------------------------------------
    def _run(self, x):
        """``float32 (n, 3, H, W)``, H and W multiples of s -> probabilities
        ``(n, C, H/s, W/s)``."""
        start = time.perf_counter()
        data = mx.nd.array(x, ctx=self.ctx[0])
        out = mx.nd.softmax(self.net(data), axis=1).asnumpy()
        self._add_time('network', time.perf_counter() - start, forwards=len(x))
        s = self.feat_stride
        expected = (len(x), self.num_classes, x.shape[2] // s, x.shape[3] // s)
        if out.shape != expected:
            raise ValueError('network output %s for input %s, expected %s (stride %d)'
                             % (out.shape, x.shape, expected, s))
        return out

    def forward_probs(self, x):
        """Probabilities of one padded input ``float32 (3, H, W)`` -> ``(C, H/s, W/s)``,
        tiled when ``H * W > max_input_pixels``; windows of equal size are batched."""
        _, h, w = x.shape
        if self.max_input_pixels is None or h * w <= self.max_input_pixels:
            return self._run(x[np.newaxis])[0]
        s = self.feat_stride
        margin = self.tile_margin
        th, tw = self.tile_size
        out = np.empty((self.num_classes, h // s, w // s), np.float32)
        by_shape = {}  # window size -> [(window box, core box)]
        for y0 in range(0, h, th):
            y1 = min(h, y0 + th)
            wy0, wy1 = max(0, y0 - margin), min(h, y1 + margin)
            for x0 in range(0, w, tw):
                x1 = min(w, x0 + tw)
                wx0, wx1 = max(0, x0 - margin), min(w, x1 + margin)
                by_shape.setdefault((wy1 - wy0, wx1 - wx0), []).append(
                    ((wy0, wy1, wx0, wx1), (y0, y1, x0, x1)))
        for (wh, ww), tiles in by_shape.items():
            batch = self.tile_batch or max(1, self.max_input_pixels // (wh * ww))
            for i in range(0, len(tiles), batch):
                group = tiles[i:i + batch]
                probs = self._run(np.stack([x[:, wy0:wy1, wx0:wx1]
                                            for (wy0, wy1, wx0, wx1), _ in group]))
                for p, ((wy0, _, wx0, _), (y0, y1, x0, x1)) in zip(probs, group):
                    out[:, y0 // s:y1 // s, x0 // s:x1 // s] = \
                        p[:, (y0 - wy0) // s:(y1 - wy0) // s, (x0 - wx0) // s:(x1 - wx0) // s]
        return out

    def _forward_flip(self, x):
        probs = self.forward_probs(x)
        if self.flip:
            mirrored = self.forward_probs(np.ascontiguousarray(x[:, :, ::-1]))
            probs = 0.5 * (probs + mirrored[:, :, ::-1])
        return probs

    def input_size(self, h, w, scale):
        """Padded network input ``(H, W)`` for an ``h x w`` resized image."""
        s = self.feat_stride
        if self.pad_mode == 'scale':
            side = make_divisible(max(h, w) if scale is None else max(scale, h, w), s)
            return side, side
        return make_divisible(h, s), make_divisible(w, s)

    def fine_probs(self, image, scale=None):
        """Steps 3-5 of the protocol on a normalised image ``float32 (h, w, 3)``.

        Returns ``float32 (C, T*H/s, T*W/s)``: probabilities on the grid of stride s/T of
        the padded input ``(H, W) = input_size(h, w, scale)``.
        """
        h, w = image.shape[:2]
        s, steps = self.feat_stride, self.test_steps
        in_h, in_w = self.input_size(h, w, scale)
        pred_stride = s // steps
        canvas = np.zeros((3, h + s, w + s), np.float32)
        canvas[:, s // 2:s // 2 + h, s // 2:s // 2 + w] = image.transpose(2, 0, 1)
        offsets = pred_stride // 2 + np.arange(steps) * pred_stride
        fine = np.empty((self.num_classes, in_h // s * steps, in_w // s * steps), np.float32)
        for ix in range(steps):
            for iy in range(steps):
                x = np.zeros((3, in_h, in_w), np.float32)
                oy, ox = offsets[iy], offsets[ix]
                x[:, :h, :w] = canvas[:, oy:oy + h, ox:ox + w]
                fine[:, iy::steps, ix::steps] = self._forward_flip(x)
        return fine

    def normalize(self, image):
        """``uint8 (h, w, 3)`` RGB -> ``float32 (h, w, 3)`` ``(pixel/255 - mean) / std``."""
        return (image.astype(np.float32) * np.float32(1.0 / 255) - self.mean) / self.std

    def probs_for_scale(self, image, scale):
        """Steps 1-6 for one scale: ``uint8 (H0, W0, 3)`` -> ``float32 (C, H0, W0)``."""
        return self._scale_maps(image, scale)[0]

    def _scale_maps(self, image, scale):
        """``(probs (C, H0, W0), fine (C, T*H/s, T*W/s), (h, w))`` of one scale."""
        h0, w0 = image.shape[:2]
        start = time.perf_counter()
        h, w = scaled_size(h0, w0, scale)
        resized = self.normalize(resize_image(image, (h, w)))
        self._add_time('resize', time.perf_counter() - start)
        fine = self.fine_probs(resized, scale)
        start = time.perf_counter()
        up = maps_to_image(fine, self.feat_stride // self.test_steps, (h, w), (h0, w0))
        self._add_time('resize', time.perf_counter() - start)
        return up, fine, (h, w)

    def predict_probs(self, image):
        """``uint8 (H, W, 3)`` RGB -> ``float32 (C, H, W)`` class probabilities (the mean
        over the test scales; each pixel's values sum to 1 up to float rounding, and
        bicubic resizing can overshoot [0, 1] slightly)."""
        return self.predict_maps(image)[0]

    def predict_maps(self, image):
        """:meth:`predict_probs` and what it was computed from.

        Returns ``(probs, maps)``: ``probs`` as :meth:`predict_probs`; ``maps`` a dict with
        ``'fine'``: per test scale the ``float32 (C, T*H/s, T*W/s)`` stride-level map of
        step 5, and the geometry that turns them into ``probs`` (:func:`maps_to_image`,
        averaged over the scales): ``'image_size'`` ``(H0, W0)``, ``'resized_sizes'``
        ``[(h, w)]`` per scale, ``'pred_stride'`` s/T, and the protocol settings.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError('expected a uint8 (H, W, 3) RGB image, got %s %s'
                             % (image.dtype, image.shape))
        total = None
        fines, sizes, inputs = [], [], []
        for scale in self.scales:
            probs, fine, size = self._scale_maps(image, scale)
            fines.append(fine)
            sizes.append(size)
            inputs.append(self.input_size(size[0], size[1], scale))
            if total is None:
                total = probs
            else:
                total += probs
        if len(self.scales) > 1:
            total /= len(self.scales)
        s, steps = self.feat_stride, self.test_steps
        p = s // steps
        maps = {'fine': fines, 'image_size': image.shape[:2], 'resized_sizes': sizes,
                'input_sizes': inputs, 'pred_stride': p, 'feat_stride': s,
                'test_steps': steps, 'flip': self.flip, 'pad_mode': self.pad_mode,
                'scales': [0 if sc is None else sc for sc in self.scales],
                'canvas_offset': s // 2, 'pass_offsets': [p // 2 + i * p for i in range(steps)]}
        return total, maps

    def predict(self, image):
        """``uint8 (H, W, 3)`` -> ``uint8 (H, W)`` train ids (argmax of the probabilities)."""
        return self.predict_probs(image).argmax(0).astype(np.uint8)


# ----------------------------------------------------------------------------- writing

def _encode_png(array):
    ok, buf = cv2.imencode('.png', array)
    if not ok:
        raise IOError('PNG encoding failed')
    return buf.tobytes()


def write_label_png(path, label_ids):
    """``uint8 (H, W)`` label ids -> a single-channel 8-bit PNG (atomic write)."""
    atomic_write_bytes(path, _encode_png(np.ascontiguousarray(label_ids, np.uint8)))


def write_rgb_png(path, rgb):
    """``uint8 (H, W, 3)`` RGB -> PNG (atomic write)."""
    atomic_write_bytes(path, _encode_png(cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8),
                                                      cv2.COLOR_RGB2BGR)))


def correct_map(pred, gt, ignore_label=255):
    """The authors' "correct" picture: ``uint8 (H, W)``, 255 where the ground truth is
    ignored, 127 where the prediction is right, 0 where it is wrong."""
    out = np.where(pred == gt, 127, 0).astype(np.uint8)
    out[gt == ignore_label] = 255
    return out


def overlay(image, color, alpha=0.5):
    """Blend ``uint8 (H, W, 3)`` image and colour map: ``(1-alpha)*image + alpha*color``."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def plot_class_iou(class_iou, class_names, path, title=''):
    """Horizontal bar chart of per-class IoU (percent) as a PNG; NaN classes shown empty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    values = np.nan_to_num(np.asarray(class_iou, np.float64) * 100, nan=0.0)
    fig = Figure(figsize=(7, 1.0 + 0.22 * len(class_names)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ypos = np.arange(len(class_names))
    ax.barh(ypos, values, color='tab:blue')
    ax.set_yticks(ypos)
    ax.set_yticklabels(class_names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel('IoU (%)')
    valid = np.asarray(class_iou, np.float64)
    valid = valid[~np.isnan(valid)]
    miou = 100 * valid.mean() if valid.size else float('nan')
    ax.axvline(miou, color='tab:red', lw=1)
    ax.set_title('%s mIoU %.2f%%' % (title, miou) if title else 'mIoU %.2f%%' % miou)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion(matrix, class_names, path, title=''):
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    matrix = np.asarray(matrix, np.float64)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(class_names)
    side = min(30.0, 2.5 + 0.3 * n)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap='viridis')
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    fontsize = 7 if n <= 40 else 4
    ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- evaluation

def sample_name(image_path):
    """Output stem of a sample: the image file name without extension (for Cityscapes
    ``<city>_<seq>_<frame>_leftImg8bit``, the name the official evaluation matches)."""
    return os.path.splitext(os.path.basename(image_path))[0]


def output_paths(out_dir, name):
    """Where :func:`evaluate` writes the files of sample ``name``.

    ``labels/<name>.png`` raw label ids (the official format), ``color/<name>.png``
    palette colours, ``correct/<name>.png`` the authors' correct map,
    ``probs/<name>.npz`` the stride-level maps (:func:`prediction_record_bytes`,
    :func:`rebuild_prediction`), ``counts/<name>.npz`` the image's
    confusion counts (written last: its presence marks the image done).
    """
    return {'label': os.path.join(out_dir, 'labels', name + '.png'),
            'color': os.path.join(out_dir, 'color', name + '.png'),
            'correct': os.path.join(out_dir, 'correct', name + '.png'),
            'probs': os.path.join(out_dir, 'probs', name + '.npz'),
            'counts': os.path.join(out_dir, 'counts', name + '.npz')}


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


PREDICTION_FORMAT = 'rn38-stride-maps-1'


def prediction_record_bytes(maps, train_ids):
    """An ``.npz`` (no pickled objects) holding a prediction at the network's resolution.

    maps: the dict of :meth:`SegPredictor.predict_maps`; train_ids: ``uint8 (H0, W0)``, the
    argmax of its probabilities (what was written as the label PNG).
    Keys: ``fine_<k>`` float16 ``(C, T*H/s, T*W/s)`` probability map of test scale k (on
    the padded network input, stride s/T); ``scales`` (0 = the image's own size),
    ``resized_sizes`` and ``input_sizes`` ``(K, 2)`` (image resized for scale k, and the
    padded network input), ``image_size`` ``(H0, W0)``, ``pred_stride`` s/T,
    ``feat_stride`` s, ``test_steps`` T, ``flip``, ``pad_mode``, ``canvas_offset`` (s/2,
    where the image sits in the shifted-pass canvas) and ``pass_offsets`` (the T window
    offsets per axis in that canvas); ``label_fix_index``/``label_fix_value``: the pixels
    (flat indices) whose argmax from the float16 maps differs from ``train_ids`` and their
    train ids, so that :func:`rebuild_prediction` gives ``train_ids`` exactly.
    """
    fines = [np.asarray(f).astype(np.float16) for f in maps['fine']]
    rebuilt = _average_maps(fines, maps['pred_stride'], maps['resized_sizes'],
                            maps['image_size']).argmax(0)
    fix = np.flatnonzero(rebuilt.ravel() != np.asarray(train_ids).ravel())
    arrays = {'fine_%d' % k: f for k, f in enumerate(fines)}
    arrays.update(
        format=np.array(PREDICTION_FORMAT), image_size=np.array(maps['image_size'], np.int64),
        scales=np.array(maps['scales'], np.int64),
        resized_sizes=np.array(maps['resized_sizes'], np.int64).reshape(-1, 2),
        input_sizes=np.array(maps['input_sizes'], np.int64).reshape(-1, 2),
        pred_stride=np.array(maps['pred_stride'], np.int64),
        feat_stride=np.array(maps['feat_stride'], np.int64),
        test_steps=np.array(maps['test_steps'], np.int64), flip=np.array(bool(maps['flip'])),
        pad_mode=np.array(maps['pad_mode']),
        canvas_offset=np.array(maps['canvas_offset'], np.int64),
        pass_offsets=np.array(maps['pass_offsets'], np.int64),
        label_fix_index=fix.astype(np.int64),
        label_fix_value=np.asarray(train_ids).ravel()[fix].astype(np.uint8))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _average_maps(fines, pred_stride, resized_sizes, image_size):
    total = None
    for fine, size in zip(fines, resized_sizes):
        probs = maps_to_image(np.asarray(fine, np.float32), int(pred_stride), tuple(size),
                              tuple(image_size))
        total = probs if total is None else total + probs
    if len(fines) > 1:
        total /= len(fines)
    return total


def rebuild_prediction(path):
    """Full-resolution result of a ``probs/<name>.npz`` record.

    Returns ``(probs, train_ids)``: ``float32 (C, H0, W0)`` probabilities rebuilt from the
    float16 stride-level maps exactly as the evaluation did from its float32 maps (so equal
    to them up to float16 rounding), and ``uint8 (H0, W0)`` train ids equal to the written
    label PNG (mapped back through the dataset's ``label_to_train``) pixel for pixel.
    Raises DataError if the file is not such a record.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            if 'format' not in f.files or str(f['format']) != PREDICTION_FORMAT:
                raise DataError('%s: not a %s prediction record' % (path, PREDICTION_FORMAT))
            sizes = f['resized_sizes']
            fines = [f['fine_%d' % k] for k in range(len(sizes))]
            image_size = tuple(int(v) for v in f['image_size'])
            pred_stride = int(f['pred_stride'])
            fix_index, fix_value = f['label_fix_index'], f['label_fix_value']
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise DataError('%s: cannot read prediction record (%s)' % (path, err)) from None
    probs = _average_maps(fines, pred_stride, sizes, image_size)
    train_ids = probs.argmax(0).astype(np.uint8)
    np.put(train_ids, fix_index, fix_value)
    return probs, train_ids


def _read_counts(path, num_classes):
    """(counts (C, C) int64, has_gt) of a finished image, or None if the file is unusable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            counts, has_gt = f['counts'], bool(f['has_gt'])
    except Exception:  # a damaged record: the image is simply done again
        return None
    if counts.shape != (num_classes, num_classes):
        return None
    return counts.astype(np.int64), has_gt


KEY_FILE = 'key.json'

# What an evaluation folder holds (see :func:`output_paths` and :func:`evaluate`).
_RESULT_ENTRIES = ('counts', 'labels', 'color', 'correct', 'probs', 'summary.json',
                   'confusion.npz', 'class_iou.png', 'confusion.png', 'official.json')


def key_differences(old, new, prefix=''):
    """``['protocol.flip: False -> True', ...]``: the entries in which two keys differ."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else ['%s: %s -> %s' % (prefix or 'key', _short(old),
                                                          _short(new))]
    out = []
    for name in sorted(set(old) | set(new)):
        out += key_differences(old.get(name), new.get(name),
                               '%s.%s' % (prefix, name) if prefix else name)
    return out


def _short(value):
    text = repr(value)
    return text if len(text) <= 20 else text[:12] + '...'


def _check_key(out_dir, key, logger):
    """Make ``out_dir`` hold only results computed under ``key``.

    Results of another key (other settings, model, weights content, split or files), or
    of an unknown one (no readable ``key.json``), are moved into
    ``superseded-<UTC time>/`` with a one-line log saying why; then ``key.json`` is
    written, before any per-image record. Returns True if earlier results may be resumed.
    """
    key_path = os.path.join(out_dir, KEY_FILE)
    old = None
    if os.path.isfile(key_path):
        try:
            with open(key_path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
    present = [n for n in _RESULT_ENTRIES if os.path.exists(os.path.join(out_dir, n))]
    if old == key:
        return True
    if present:
        if old is None:
            why = 'no readable %s (computed by an older version or damaged)' % KEY_FILE
        else:
            why = '; '.join(key_differences(old, key))
        stamp = os.path.join(out_dir, time.strftime('superseded-%Y%m%dT%H%M%S', time.gmtime()))
        aside, n = stamp, 1
        while os.path.exists(aside):
            n += 1
            aside = '%s-%d' % (stamp, n)
        os.makedirs(aside)
        for name in present + ([KEY_FILE] if old is not None else []):
            os.replace(os.path.join(out_dir, name), os.path.join(aside, name))
        logger.warning('earlier results in %s do not match this evaluation (%s): recomputing '
                    'all images; the old ones are in %s', out_dir, why, aside)
    write_json(key, key_path)
    return False


def map_over_devices(predictor, fn, items):
    """``fn(device predictor, item)`` for each item, yielded in order; the items are
    spread over ``predictor.ctx`` with one worker thread per device (at most two items
    in flight per device). One device: run inline, no thread."""
    items = list(items)
    devices = len(getattr(predictor, 'ctx', ())) if hasattr(predictor, 'on_device') else 1
    if devices <= 1:
        for item in items:
            yield fn(predictor, item)
        return
    from concurrent.futures import ThreadPoolExecutor
    import queue
    free = queue.Queue()
    for i in range(devices):
        free.put(predictor.on_device(i))
    local = threading.local()

    def run(item):
        if not hasattr(local, 'predictor'):  # each worker thread keeps one device
            local.predictor = free.get_nowait()
        return fn(local.predictor, item)

    with ThreadPoolExecutor(max_workers=devices) as pool:
        pending = []
        try:
            for item in items:
                pending.append(pool.submit(run, item))
                if len(pending) >= 2 * devices:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()


def evaluate(predictor, spec, samples, out_dir, save_results=True, save_predictions=False,
             progress=True, resume=True, plots=True, logger=None, title='', result_key=None):
    """Segment ``samples``, write the results and score them against the ground truth.

    predictor: anything with ``predict_probs(uint8 (H, W, 3)) -> float32 (C, H, W)``
        (e.g. :class:`SegPredictor`), C = ``spec.classes``.
    spec: :class:`issegm.datasets.DatasetSpec`.
    samples: ``[(image_path, label_path or None), ...]`` (``datasets.list_samples``).
    out_dir: output folder, see :func:`output_paths` for the per-image files; also
        ``confusion.npz`` (:class:`ConfusionMatrix` state), ``summary.json`` (written
        atomically), ``class_iou.png`` and ``confusion.png`` (with ground truth).
    save_results: write the label-id, colour and correct PNGs.
    save_predictions: write the stride-level maps (:func:`prediction_record_bytes`);
        needs a predictor with ``predict_maps`` (:class:`SegPredictor`).
    resume: skip images whose ``counts`` record exists (and whose requested outputs
        exist); their stored counts are added, so totals equal an uninterrupted run.
    result_key: a JSON-ready dict of everything that determines the results (see
        :func:`evaluation_key`), stored as ``key.json``; earlier results under another
        key are set aside (see :func:`_check_key`) and everything is recomputed. None:
        no check (the caller vouches for the folder).

    Memory stays constant: one image per device at a time (images are spread over
    ``predictor.ctx``, see :func:`map_over_devices`; the results do not depend on the
    device count), the confusion counts are accumulated.
    Returns the summary dict (also in ``summary.json``) plus ``'resumed'`` and
    ``'computed'`` (image counts) and ``'timing'``: seconds spent in this call on
    ``read`` (image + ground truth), ``predict`` (all of ``predict_probs``), of which
    ``network`` and ``resize`` when the predictor keeps ``timings``, ``argmax``,
    ``score`` and ``write`` (these three are not written to the summary, which is
    deterministic).
    Bad input raises :class:`DataError` naming the file.
    """
    from tqdm import tqdm
    logger = logger or logging.getLogger(__name__)
    samples = list(samples)
    if not samples:
        raise DataError('%s: no samples to evaluate (empty split)' % out_dir)
    if save_predictions and not hasattr(predictor, 'predict_maps'):
        raise ValueError('save_predictions needs a predictor with predict_maps (SegPredictor)')
    names = [sample_name(image) for image, _ in samples]
    seen = {}
    for (image, _), name in zip(samples, names):
        if name in seen:
            raise DataError('%s: same output name %r as %s' % (image, name, seen[name]))
        seen[name] = image
    os.makedirs(out_dir, exist_ok=True)
    if result_key is not None and not _check_key(out_dir, result_key, logger):
        resume = False

    cm = ConfusionMatrix(spec.classes, spec.ignore_label)
    with_gt = resumed = computed = 0
    predictor_timings = dict(getattr(predictor, 'timings', None) or {})
    timing = {'read': 0.0, 'predict': 0.0, 'argmax': 0.0, 'score': 0.0, 'write': 0.0}
    records = []
    for (image_path, label_path), name in zip(samples, names):
        paths = output_paths(out_dir, name)
        wanted = []
        if save_results:
            wanted += ['label', 'color'] + (['correct'] if label_path else [])
        if save_predictions:
            wanted.append('probs')
        record = None
        if resume and os.path.isfile(paths['counts']) and \
                all(os.path.isfile(paths[k]) for k in wanted):
            record = _read_counts(paths['counts'], spec.classes)
        records.append(record)

    def read_and_predict(device_predictor, sample):
        image_path, label_path = sample
        t0 = time.perf_counter()
        image = read_image(image_path)
        gt = read_label(spec, label_path, image.shape) if label_path else None
        t1 = time.perf_counter()
        if save_predictions:
            probs, maps = device_predictor.predict_maps(image)
        else:
            probs, maps = device_predictor.predict_probs(image), None
        return image, gt, probs, maps, t1 - t0, time.perf_counter() - t1

    predicted = map_over_devices(predictor, read_and_predict,
                                 [sample for sample, record in zip(samples, records)
                                  if record is None])
    bar = tqdm(total=len(samples), unit='img', disable=not progress, dynamic_ncols=True)
    try:
        for (image_path, label_path), name, record in zip(samples, names, records):
            paths = output_paths(out_dir, name)
            if record is not None:
                counts, has_gt = record
                cm.add_counts(counts)
                with_gt += has_gt
                resumed += 1
            else:
                image, gt, probs, maps, read_seconds, predict_seconds = next(predicted)
                if probs.shape != (spec.classes,) + image.shape[:2]:
                    raise ValueError('%s: predictor returned %s, expected %s'
                                     % (image_path, probs.shape,
                                        (spec.classes,) + image.shape[:2]))
                t2 = time.perf_counter()
                t0, t1 = t2 - read_seconds - predict_seconds, t2 - predict_seconds
                pred = probs.argmax(0).astype(np.uint8)
                t3 = time.perf_counter()
                if gt is not None:
                    counts = cm.update(pred, gt)
                    with_gt += 1
                else:
                    counts = np.zeros((spec.classes, spec.classes), np.int64)
                t4 = time.perf_counter()
                if save_results:
                    write_label_png(paths['label'], spec.train_to_label[pred])
                    write_rgb_png(paths['color'], spec.palette[pred])
                    if gt is not None:
                        write_label_png(paths['correct'], correct_map(pred, gt,
                                                                      spec.ignore_label))
                if save_predictions:
                    atomic_write_bytes(paths['probs'], prediction_record_bytes(maps, pred))
                atomic_write_bytes(paths['counts'], _npz_bytes(
                    counts=counts, has_gt=np.array(gt is not None)))
                t5 = time.perf_counter()
                for key, dt in (('read', t1 - t0), ('predict', t2 - t1), ('argmax', t3 - t2),
                                ('score', t4 - t3), ('write', t5 - t4)):
                    timing[key] += dt
                computed += 1
            bar.update(1)
            if with_gt:
                bar.set_postfix(mIoU='%.2f%%' % (100 * cm.mean_iou()), refresh=False)
    finally:
        predicted.close()
        bar.close()

    summary = {'dataset': spec.name, 'images': len(samples), 'images_with_gt': with_gt}
    if result_key is not None:
        summary['key'] = result_key
    if hasattr(predictor, 'describe'):
        summary['protocol'] = predictor.describe()
    if with_gt:
        summary.update(cm.to_dict(spec.class_names))
        cm.save(os.path.join(out_dir, 'confusion.npz'))
        logger.info('%d images, pixel acc %.2f%%, mean class acc %.2f%%, mean IoU %.2f%%',
                    with_gt, 100 * cm.pixel_accuracy(), 100 * cm.mean_class_accuracy(),
                    100 * cm.mean_iou())
        logger.info('per-class scores:\n%s', cm.table(spec.class_names))
        if plots:
            plot_class_iou(cm.class_iou(), spec.class_names,
                           os.path.join(out_dir, 'class_iou.png'), title)
            plot_confusion(cm.matrix, spec.class_names,
                           os.path.join(out_dir, 'confusion.png'), title)
    write_json(summary, os.path.join(out_dir, 'summary.json'))
    if getattr(predictor, 'timings', None):  # this call's share of the predictor's totals
        for key in ('network', 'resize'):
            timing[key] = predictor.timings.get(key, 0.0) - predictor_timings.get(key, 0.0)
    logger.info('%d images computed, %d resumed; seconds: %s', computed, resumed,
                ', '.join('%s %.2f' % kv for kv in sorted(timing.items())))
    result = dict(summary)
    result.update(timing=timing, resumed=resumed, computed=computed)
    return result


# ----------------------------------------------------------------------------- official

def official_cityscapes_eval(result_dir, gt_root, split='val', export_file=None):
    """Score label-id PNGs with ``cityscapesscripts``' pixel-level evaluation.

    result_dir: folder searched (recursively) for one ``<city>_<seq>_<frame>*.png`` per
        ground-truth file, holding raw label ids (:func:`evaluate`'s ``labels/``).
    gt_root: the Cityscapes root holding ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
        and the matching ``*_gtFine_instanceIds.png`` (needed for the iIoU).
    export_file: if given, their full JSON result is written there.

    Their module keeps its settings in a module-level object; a separate settings object
    is built here and passed to their functions, and no environment variable is read or
    set. Their error exits become a :class:`DataError`.
    Returns ``{'class_iou', 'class_iiou', 'category_iou', 'category_iiou'}`` (dicts name
    -> value in [0, 1], None for NaN, evaluated classes only) and ``'mean_iou'``,
    ``'mean_iiou'``, ``'mean_category_iou'``, ``'mean_category_iiou'``.
    """
    import contextlib
    import glob
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as csev
    from cityscapesscripts.helpers.labels import labels as cs_labels

    gt_files = sorted(glob.glob(os.path.join(gt_root, 'gtFine', split, '*',
                                             '*_gtFine_labelIds.png')))
    if not gt_files:
        raise DataError('%s: no gtFine/%s/<city>/*_gtFine_labelIds.png files'
                        % (gt_root, split))
    if not os.path.isdir(result_dir):
        raise DataError('%s: result folder not found' % result_dir)
    args = csev.CArgs()
    args.cityscapesPath = gt_root
    args.exportFile = export_file
    args.groundTruthSearch = os.path.join(gt_root, 'gtFine', split, '*',
                                          '*_gtFine_labelIds.png')
    args.evalInstLevelScore = True
    args.evalPixelAccuracy = False
    args.evalLabels = []
    args.printRow = 5
    args.normalized = True
    args.colorized = False
    args.bold = ''
    args.nocol = ''
    args.JSONOutput = export_file is not None
    args.quiet = True
    args.avgClassSize = dict(csev.args.avgClassSize)
    args.predictionPath = result_dir
    args.predictionWalk = None

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            predictions = [csev.getPrediction(args, gt) for gt in gt_files]
            result = csev.evaluateImgLists(predictions, gt_files, args)
    except SystemExit:
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        raise DataError('%s: cityscapesscripts evaluation failed: %s'
                        % (result_dir, lines[-1] if lines else 'exit')) from None

    def clean(value):
        return None if value is None or math.isnan(value) else float(value)

    evaluated = [lab.name for lab in cs_labels if lab.id >= 0 and not lab.ignoreInEval]
    with_instances = [lab.name for lab in cs_labels
                      if lab.id >= 0 and not lab.ignoreInEval and lab.hasInstances]
    categories = [c for c, v in result['categoryScores'].items() if not math.isnan(v)]
    return {
        'class_iou': {n: clean(result['classScores'][n]) for n in evaluated},
        'class_iiou': {n: clean(result['classInstScores'][n]) for n in with_instances},
        'category_iou': {c: clean(result['categoryScores'][c]) for c in categories},
        'category_iiou': {c: clean(v) for c, v in result['categoryInstScores'].items()
                          if not math.isnan(v)},
        'mean_iou': clean(result['averageScoreClasses']),
        'mean_iiou': clean(result['averageScoreInstClasses']),
        'mean_category_iou': clean(result['averageScoreCategories']),
        'mean_category_iiou': clean(result['averageScoreInstCategories']),
    }


# ----------------------------------------------------------------------------- inference

def segment_images(predictor, spec, image_paths, out_dir, names=None, alpha=0.5,
                   progress=True, logger=None, failures=None):
    """Segment images without ground truth; for each name writes ``labels/<name>.png``
    (raw label ids), ``color/<name>.png`` (palette) and ``overlay/<name>.png`` (the
    image blended with the colours, weight ``alpha``).

    names: output names (may contain ``/`` for sub-folders); default the file stems.
    failures: None: an unreadable image raises DataError; a list: the image is skipped
    with a one-line warning and ``(image_path, message)`` is appended to it.
    Returns ``[(image_path, label_png_path), ...]`` of the images written.
    """
    from tqdm import tqdm
    logger = logger or logging.getLogger(__name__)
    image_paths = list(image_paths)
    if not image_paths:
        raise DataError('%s: no images to segment' % out_dir)
    names = [sample_name(p) for p in image_paths] if names is None else list(names)
    if len(set(names)) != len(names):
        raise DataError('%s: several inputs share an output name' % out_dir)
    written = []

    def read_and_predict(device_predictor, path):
        try:
            image = read_image(path)
        except (DataError, cv2.error) as err:
            if failures is None:
                raise
            return None, (str(err).strip().splitlines()[0] if isinstance(err, DataError) else
                          '%s: cannot read image (%s)' % (path, str(err).strip().splitlines()[-1]))
        return image, device_predictor.predict_probs(image).argmax(0).astype(np.uint8)

    predicted = map_over_devices(predictor, read_and_predict, image_paths)
    for path, name in tqdm(list(zip(image_paths, names)), unit='img', disable=not progress,
                           dynamic_ncols=True):
        image, pred = next(predicted)
        if image is None:  # pred is the reason
            logger.warning('skipped: %s', pred)
            failures.append((path, pred))
            continue
        color = spec.palette[pred]
        label_path = os.path.join(out_dir, 'labels', name + '.png')
        write_label_png(label_path, spec.train_to_label[pred])
        write_rgb_png(os.path.join(out_dir, 'color', name + '.png'), color)
        write_rgb_png(os.path.join(out_dir, 'overlay', name + '.png'),
                      overlay(image, color, alpha))
        written.append((path, label_path))
    logger.info('segmented %d images into %s', len(written), out_dir)
    return written


# ----------------------------------------------------------------------------- val phase

def val_output_dir(output, weights, split):
    """The authors' result folder: ``<output>/<weights stem>[_<split> unless val]``."""
    stem = os.path.splitext(os.path.basename(weights))[0]
    return os.path.join(output, stem + ('' if split == 'val' else '_' + split))


def calibration_inputs(predictor, image_paths, scale):
    """int8 calibration batches: each image resized to ``scale`` and normalised as
    :class:`SegPredictor` does, padded (or cropped) to the padded input size of the
    first image, as a list of ``float32 (1, 3, H, W)`` arrays."""
    batches, size = [], None
    for path in image_paths:
        image = read_image(path)
        h, w = scaled_size(image.shape[0], image.shape[1], scale)
        resized = predictor.normalize(resize_image(image, (h, w))).transpose(2, 0, 1)
        if size is None:
            size = predictor.input_size(h, w, scale)
        x = np.zeros((1, 3) + size, np.float32)
        ch, cw = min(h, size[0]), min(w, size[1])
        x[0, :, :ch, :cw] = resized[:, :ch, :cw]
        batches.append(x)
    return batches


def low_precision_net(net, cfg, ctx, spec, pad_mode, logger=None):
    """``net`` run in ``cfg.dtype`` (:func:`rn38.lowprec.lower_precision`); for int8 the
    calibration uses the first ``cfg.calib_images`` images of the ``train`` split of
    ``cfg.data_root`` (every k-th image, spread over the list) at the first test scale."""
    from rn38 import lowprec
    from .datasets import list_samples
    if cfg.dtype != 'int8':
        return lowprec.lower_precision(net, cfg.dtype, ctx, logger=logger)
    if cfg.calib_images < 1:
        raise ValueError('--calib-images must be at least 1 for --dtype int8')
    train = [image for image, _ in list_samples(spec, cfg.data_root, 'train')]
    step = max(1, len(train) // cfg.calib_images)
    chosen = train[::step][:cfg.calib_images]
    scale = cfg.test_scales[0]
    probe = SegPredictor(net, ctx, scales=[scale], pad_mode=pad_mode)
    settings = {'calib_images': [os.path.relpath(p, cfg.data_root) for p in chosen],
                'calib_scale': scale, 'pad_mode': pad_mode, 'model': cfg.model}
    return lowprec.lower_precision(
        net, 'int8', ctx, calib_batches=lambda: calibration_inputs(probe, chosen, scale),
        calib_mode=cfg.calib_mode, weights=cfg.weights, settings=settings, logger=logger)


def _has_instance_files(data_root, split):
    import glob
    return bool(glob.glob(os.path.join(data_root, 'gtFine', split, '*',
                                       '*_gtFine_instanceIds.png')))


def evaluation_key(cfg, predictor, samples):
    """Everything that determines the results of ``--phase val``, JSON-ready: the
    protocol settings (:meth:`SegPredictor.describe`), the model label, the sha256 of the
    weights file's content, the dataset, the split and a digest of its files (paths
    relative to the data root, sizes, modification times)."""
    from rn38.checksums import files_digest, sha256sum
    paths = [p for sample in samples for p in sample]
    return {'protocol': predictor.describe(), 'model': cfg.model,
            'weights_sha256': sha256sum(cfg.weights), 'dataset': cfg.dataset,
            'split': cfg.split, 'files': {'samples': len(samples),
                                          'sha256': files_digest(paths, cfg.data_root)}}


def run_val(cfg, logger=None):
    """The ``--phase val`` of the dataset entries: one config in, results on disk.

    Builds ``cfg.model`` with ``cfg.weights`` (strict), evaluates ``cfg.split`` with the
    authors' protocol at ``cfg.test_scales`` (+ flipping, test steps, sliding windows),
    writes into :func:`val_output_dir`, and for Cityscapes with ground truth and instance
    files also runs the official ``cityscapesscripts`` evaluation on the written label
    PNGs; its scores are added to ``summary.json`` under ``official``.
    Returns the summary dict.
    """
    from rn38 import zoo
    from rn38.params import load_params
    from rn38.parallel import parse_devices
    from rn38.train import save_config
    from .datasets import list_samples, spec_from_config
    logger = logger or logging.getLogger(__name__)
    from .image_norm import make_predictor_class, mean_std
    from .train import model_options
    spec = spec_from_config(cfg)
    model = zoo.parse_label(cfg.model)
    if model.classes != spec.classes:
        raise ValueError('%s: model %s has %d classes, dataset %s has %d'
                         % (cfg.weights, cfg.model, model.classes, spec.name, spec.classes))
    from rn38.lowprec import check_dtype
    ctx = parse_devices(cfg.gpus)
    check_dtype(getattr(cfg, 'dtype', 'float32'), ctx, logger=logger)
    net = zoo.build_model(cfg.model, 'segmentation', **model_options(cfg))
    load_params(net, cfg.weights, ctx)
    net.hybridize(static_alloc=True)
    pad_mode = 'stride' if spec.name == 'cityscapes' else 'scale'
    tile_margin = None
    if getattr(cfg, 'dtype', 'float32') != 'float32':
        tile_margin = receptive_radius(net)  # a converted graph has no layers to walk
        net, cfg.dtype = low_precision_net(net, cfg, ctx, spec, pad_mode, logger)
    image_norm = getattr(cfg, 'image_norm', 'imagenet')
    mean, std = mean_std(image_norm)
    predictor = make_predictor_class(image_norm)(
        net, ctx, mean=mean, std=std, scales=cfg.test_scales, flip=cfg.test_flipping,
        test_steps=cfg.test_steps, pad_mode=pad_mode, max_input_pixels=cfg.max_input_pixels,
        tile_margin=tile_margin)
    samples = list_samples(spec, cfg.data_root, cfg.split)
    out_dir = val_output_dir(cfg.output, cfg.weights, cfg.split)
    if getattr(cfg, 'dtype', 'float32') != 'float32':  # results of another dtype: own folder
        out_dir += '_' + cfg.dtype + ('_%s%d' % (cfg.calib_mode, cfg.calib_images)
                                      if cfg.dtype == 'int8' else '')
    save_config(cfg, os.path.join(out_dir, 'config.yaml'))
    logger.info('evaluating %s on %d images of %s/%s with %s; results in %s', cfg.weights,
                len(samples), cfg.data_root, cfg.split, predictor.describe(), out_dir)
    summary = evaluate(predictor, spec, samples, out_dir, save_results=cfg.save_results,
                       save_predictions=cfg.save_predictions, progress=cfg.progress,
                       logger=logger, title='%s, %s' % (os.path.basename(cfg.weights),
                                                        cfg.split),
                       result_key=evaluation_key(cfg, predictor, samples))
    if (spec.name == 'cityscapes' and cfg.official_eval and cfg.save_results
            and summary.get('images_with_gt') and _has_instance_files(cfg.data_root, cfg.split)):
        official = official_cityscapes_eval(os.path.join(out_dir, 'labels'), cfg.data_root,
                                            cfg.split, os.path.join(out_dir, 'official.json'))
        logger.info('cityscapesscripts: class IoU %.2f%%, iIoU %s, category IoU %.2f%%, '
                    'iIoU %s (ours: mean IoU %.2f%%)', 100 * official['mean_iou'],
                    'n/a' if official['mean_iiou'] is None else '%.2f%%' % (100 * official['mean_iiou']),
                    100 * official['mean_category_iou'],
                    'n/a' if official['mean_category_iiou'] is None
                    else '%.2f%%' % (100 * official['mean_category_iiou']),
                    100 * summary['mean_iou'])
        stored = {k: v for k, v in summary.items() if k not in ('timing', 'resumed', 'computed')}
        stored['official'] = official
        write_json(stored, os.path.join(out_dir, 'summary.json'))
        summary['official'] = official
    return summary
