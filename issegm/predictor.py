"""The segmentation predictor: the authors' test protocol and a few extensions.

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

:class:`SegPredictor` runs the protocol on one image; :func:`map_over_devices` spreads
images over its devices.
"""
import copy
import math
import threading
import time
import warnings

import mxnet as mx
import numpy as np
from PIL import Image

from rn38.gluon_internals import children, operator_settings
from rn38.image import BICUBIC, IMAGENET_MEAN, IMAGENET_STD, interp_method, read_image

from .transforms import make_divisible


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
    kw = operator_settings(layer)
    if 'kernel' not in kw:
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

    The network's own value ``net.receptive_radius`` if it states one (the ResNet-38 FCNs
    do, from their stage table), else :func:`walked_receptive_radius`. Returns an int, or
    None if the network has no convolution.
    """
    if hasattr(net, 'receptive_radius') and not callable(net.receptive_radius):
        return int(net.receptive_radius)
    return walked_receptive_radius(net)


def walked_receptive_radius(net):
    """Receptive-field radius of ``net`` found by walking its layers (int, or None).

    Walks the blocks in order and sums ``dilation * (kernel - 1) / 2 * input stride`` over
    the convolutions and poolings. In a residual block only the main branch (``.convs``)
    is followed: the 1x1 shortcut reaches no further.
    """
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
        for child in children(block):
            walk(child)

    walk(net)
    return int(math.ceil(state['radius'])) if state['found'] else None


class SegPredictor:
    """Class probabilities of a segmentation network for images of any size.

    net: a Gluon block, ``(1, 3, H, W)`` float32 -> pre-softmax scores
        ``(1, C, H/s, W/s)`` for H, W multiples of s (``net.feat_stride``,
        ``net.classes`` give s and C unless passed).
    ctx: a context or list. :meth:`predict_probs` runs on the first one;
        :meth:`on_device` gives a predictor for another (the net's parameters must be
        on all of them), as :func:`map_over_devices` does to spread images over them.
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
