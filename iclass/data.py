"""ImageNet-style data for the classification tools: split lists, image reading, the
authors' test-time and training-time preprocessing, and datasets for :mod:`rn38.loader`.

Split lists are in the authors' format, one image a line, tab separated::

    <image id>\t<class index>\t<path relative to the data root>

(the two-field form ``<path>\t<class index>`` is accepted too). A list is looked for at
``<data root>/<split>.lst`` and then where the authors keep theirs,
``iclass/data/<dataset>/<split>.lst`` in this package.

Images are read by :func:`rn38.image.read_image` (the decoder of both tasks) as RGB
``uint8`` arrays ``(H, W, 3)``; every resize goes through PIL with the filter the authors
pick (:func:`interp_method`). All randomness of the training
transform comes from the random generator handed to it, so a sample depends
only on ``(seed, epoch, index)`` (see :class:`rn38.loader.BatchLoader`); both
``numpy.random.Generator`` and the legacy ``RandomState`` are accepted.
"""
import os

import numpy as np
from PIL import Image

from rn38.image import DataError, interp_method, normalize, read_image  # noqa: F401

# AlexNet-style PCA lighting noise: eigenvalues and eigenvectors (columns) of the RGB
# covariance of ImageNet pixels in [0, 1], the values the authors train with.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], np.float32)

# Luma weights for the grey image used by the contrast and saturation jitter.
GREY = np.array([0.299, 0.587, 0.114], np.float32)

_HERE = os.path.dirname(os.path.abspath(__file__))


def randint(rng, high):
    """An integer in ``[0, high)`` from a ``Generator`` or a ``RandomState``."""
    return int(rng.integers(high) if hasattr(rng, 'integers') else rng.randint(high))


# ----------------------------------------------------------------------------- lists

class SplitList:
    """The images and class indices of one split list.

    ``images``: absolute or data-root-joined paths; ``labels``: int class indices;
    ``lines``: the 1-based line of each entry in ``path`` (for error messages).
    """

    def __init__(self, path, images, labels, lines):
        self.path, self.images, self.labels, self.lines = path, images, labels, lines

    def __len__(self):
        return len(self.images)

    def where(self, index):
        return '%s line %d' % (self.path, self.lines[index])


def locate_split(data_root, split, dataset='ilsvrc-cls'):
    """Path of the list of ``split``: ``<data_root>/<split>.lst``, else the package's
    ``iclass/data/<dataset>/<split>.lst`` (the authors' place). DataError if neither."""
    candidates = [os.path.join(data_root, split + '.lst'),
                  os.path.join(_HERE, 'data', dataset, split + '.lst')]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError('no list for split %r: looked for %s' % (split, ' and '.join(candidates)))


def parse_split_file(path, data_root, classes=None):
    """Read a split list (see the module docstring) into a :class:`SplitList`.

    Raises DataError naming the list file and line for a line without a class index, a
    non-integer or negative index, or an index ``>= classes`` (when ``classes`` is given).
    Blank lines and lines starting with ``#`` are skipped.
    """
    if not os.path.isfile(path):
        raise DataError('%s: no such split list' % path)
    images, labels, lines = [], [], []
    three_fields = None      # the format of the first entry fixes the format of the list

    def no_label(number, line):
        return DataError('%s line %d: no class index (expected "<id>\\t<class>\\t<path>" or '
                         '"<path>\\t<class>"): %r' % (path, number, line))

    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            fields = [x.strip() for x in (line.split('\t') if '\t' in line else line.split())]
            if three_fields is None:
                three_fields = len(fields) >= 3
            if len(fields) >= 3:
                label_text, rel = fields[1], fields[2]
            elif len(fields) == 2 and not three_fields:
                rel, label_text = fields
                if rel.isdigit() and not label_text.lstrip('-').isdigit():
                    raise no_label(number, line)        # "<id>\t<path>"
            else:
                raise no_label(number, line)
            try:
                label = int(label_text)
            except ValueError:
                raise DataError('%s line %d: class index %r is not an integer'
                                % (path, number, label_text)) from None
            if label < 0 or (classes is not None and label >= classes):
                raise DataError('%s line %d: class index %d outside 0..%s for %s'
                                % (path, number, label,
                                   '?' if classes is None else classes - 1, rel))
            images.append(os.path.join(data_root, rel))
            labels.append(label)
            lines.append(number)
    if not images:
        raise DataError('%s: the split list is empty' % path)
    return SplitList(path, images, labels, lines)


def check_images(split_list):
    """DataError naming the first listed image that is not a file."""
    for i, image in enumerate(split_list.images):
        if not os.path.isfile(image):
            raise DataError('%s: image not found (listed in %s)' % (image, split_list.where(i)))


# ----------------------------------------------------------------------- geometry

def resize(image, height, width, choose=True):
    """PIL resize of a ``uint8`` ``(H, W, 3)`` array with :func:`interp_method`."""
    h, w = image.shape[:2]
    method = interp_method((h, w), (height, width), choose)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height),
                                                                          method))


def shorter_side_size(h, w, size):
    """``(new_h, new_w)`` with the shorter side ``size`` and the aspect ratio kept (rounded)."""
    if h <= w:
        return size, int(np.round(float(size) * w / h))
    return int(np.round(float(size) * h / w)), size


def resize_shorter(image, size, choose=True):
    """Resize so the shorter side is ``size``; an image already that size is returned as is."""
    h, w = image.shape[:2]
    if min(h, w) == size:
        return image
    nh, nw = shorter_side_size(h, w, size)
    return resize(image, nh, nw, choose)


def crop_offsets(h, w, size, three=False):
    """Top-left corners of the test crops of ``size``: the centre one (offsets rounded up),
    or with ``three`` the start, centre and end along the longer side."""
    if h < size or w < size:
        raise ValueError('image %dx%d smaller than the crop %d' % (h, w, size))
    y0, x0 = -(-(h - size) // 2), -(-(w - size) // 2)
    if not three:
        return [(y0, x0)]
    if h > w:
        return [(0, x0), (y0, x0), (h - size, x0)]
    return [(y0, 0), (y0, x0), (y0, w - size)]


# ----------------------------------------------------------------------- transforms

class EvalTransform:
    """Test-time preprocessing: shorter side to ``scale``, the centre crop (or three crops
    along the longer side) of ``scale x scale``, /255, mean/std.

    ``__call__(image, rng=None)`` -> float32 ``(crops, 3, scale, scale)``.
    """

    def __init__(self, scale, three_crops=False, choose_interp=True):
        self.scale, self.three_crops, self.choose_interp = int(scale), three_crops, choose_interp
        self.crops = 3 if three_crops else 1

    def __call__(self, image, rng=None):
        image = resize_shorter(image, self.scale, self.choose_interp)
        h, w = image.shape[:2]
        s = self.scale
        return np.stack([normalize(image[y:y + s, x:x + s].astype(np.float32) / 255.0)
                         for y, x in crop_offsets(h, w, s, self.three_crops)])


def random_sized_crop(image, size, rng, area_range=(0.08, 1.0), aspect_range=(3. / 4, 4. / 3),
                      attempts=10, choose=True):
    """Inception-style crop: a region of 8%-100% of the image area with aspect ratio in
    [3/4, 4/3] (height and width swapped half of the time), resized to ``size x size``.
    After ``attempts`` regions that do not fit, the test-time centre crop is used instead.
    """
    h, w = image.shape[:2]
    area = h * w
    for _ in range(attempts):
        target = rng.uniform(*area_range) * area
        ratio = rng.uniform(*aspect_range)
        ch = int(np.round(np.sqrt(target / ratio)))
        cw = int(np.round(np.sqrt(target * ratio)))
        if randint(rng, 2) == 0:
            ch, cw = cw, ch
        if ch <= h and cw <= w:
            y0 = randint(rng, h - ch + 1)
            x0 = randint(rng, w - cw + 1)
            return resize(image[y0:y0 + ch, x0:x0 + cw], size, size, choose)
    image = resize_shorter(image, size, choose)
    (y0, x0), = crop_offsets(image.shape[0], image.shape[1], size)
    return image[y0:y0 + size, x0:x0 + size]


def grey(image):
    """``(H, W, 1)`` luma of a float RGB image."""
    return (image * GREY).sum(axis=2, keepdims=True)


def color_jitter(image, rng, brightness=0.4, contrast=0.4, saturation=0.4):
    """Brightness, contrast and saturation jitter (each factor uniform in 1 +- its value),
    applied in a random order, on float RGB in [0, 1]. Returns a new array.

    brightness: blend with black; contrast: blend with the mean grey level; saturation:
    blend with the grey image. ``out = a * image + (1 - a) * other``.
    """
    ops = []
    if brightness > 0:
        ops.append(('brightness', brightness))
    if contrast > 0:
        ops.append(('contrast', contrast))
    if saturation > 0:
        ops.append(('saturation', saturation))
    out = np.array(image, np.float32)
    for i in rng.permutation(len(ops)):
        kind, var = ops[i]
        a = np.float32(1.0 + rng.uniform(-var, var))
        if kind == 'brightness':
            out = out * a
        elif kind == 'contrast':
            out = out * a + (1 - a) * grey(out).mean()
        else:
            out = out * a + (1 - a) * grey(out)
    return out.astype(np.float32, copy=False)


def lighting(image, rng, alpha_std=0.1, eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC):
    """PCA lighting noise: add ``eigvec @ (alpha * eigval)``, alpha ~ N(0, alpha_std) per
    component, then divide by ``1 + alpha_std`` (as the authors' implementation does)."""
    if alpha_std == 0:
        return image
    alpha = rng.normal(0, alpha_std, 3)
    shift = (eigvec * (alpha * eigval)[None, :]).sum(axis=1).astype(np.float32)
    return ((image + shift) / np.float32(1.0 + alpha_std)).astype(np.float32, copy=False)


class TrainTransform:
    """Training augmentation, in the authors' order: random-sized crop to ``crop_size``,
    /255, colour jitter (0.4/0.4/0.4), PCA lighting (0.1), clip to [0, 1], horizontal flip
    with probability 1/2, mean/std.

    ``__call__(image, rng)`` -> float32 ``(3, crop_size, crop_size)``.
    """

    def __init__(self, crop_size=224, jitter=(0.4, 0.4, 0.4), lighting_std=0.1,
                 choose_interp=True, area_range=(0.08, 1.0), aspect_range=(3. / 4, 4. / 3)):
        self.crop_size, self.jitter, self.lighting_std = int(crop_size), tuple(jitter), lighting_std
        self.choose_interp, self.area_range, self.aspect_range = \
            choose_interp, area_range, aspect_range

    def __call__(self, image, rng):
        crop = random_sized_crop(image, self.crop_size, rng, self.area_range,
                                 self.aspect_range, choose=self.choose_interp)
        x = crop.astype(np.float32) * np.float32(1.0 / 255)
        x = color_jitter(x, rng, *self.jitter)
        x = lighting(x, rng, self.lighting_std)
        np.clip(x, 0.0, 1.0, out=x)
        if randint(rng, 2) == 0:
            x = x[:, ::-1]
        return normalize(x)


# ----------------------------------------------------------------------- datasets

class ImageListDataset:
    """A split list and a transform, in the :class:`rn38.loader.BatchLoader` protocol.

    ``__getitem__(index, rng)`` -> ``(transform(image, rng), label)``; a missing or
    unreadable image is a DataError naming the image and its list line.
    """

    def __init__(self, split_list, transform):
        self.split_list, self.transform = split_list, transform

    def __len__(self):
        return len(self.split_list)

    def __getitem__(self, index, rng=None):
        path = self.split_list.images[index]
        try:
            image = read_image(path)
        except DataError as err:
            raise DataError('%s (listed in %s)' % (err, self.split_list.where(index))) from None
        if rng is None:
            rng = np.random.default_rng(index)
        return self.transform(image, rng), np.int32(self.split_list.labels[index])


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.tif', '.tiff', '.webp')


def folder_split(folder, classes=None):
    """An image-folder split (``<folder>/<class name>/<image>``, one sub-folder per class,
    classes numbered in sorted name order) as a :class:`SplitList`; ``lines`` are 1-based
    positions in that order. DataError if the number of classes is not ``classes``."""
    names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not names:
        raise DataError('%s: no class sub-folders (image-folder layout: <split>/<class>/<image>)'
                        % folder)
    if classes is not None and len(names) != classes:
        raise DataError('%s: %d class sub-folders, the model has %d classes'
                        % (folder, len(names), classes))
    images, labels = [], []
    for index, name in enumerate(names):
        files = sorted(f for f in os.listdir(os.path.join(folder, name))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError('%s: class folder has no images' % os.path.join(folder, name))
        images += [os.path.join(folder, name, f) for f in files]
        labels += [index] * len(files)
    split_list = SplitList(folder, images, labels, list(range(1, len(images) + 1)))
    split_list.class_names = names
    return split_list


def load_split(data_root, split, dataset='ilsvrc-cls', classes=None, check=True):
    """Locate, parse and (with ``check``) verify the images of a split: a SplitList.

    Without a list file, ``<data_root>/<split>/`` in the image-folder layout (one
    sub-folder per class) is used: :func:`folder_split`.
    """
    folder = os.path.join(data_root, split)
    if not os.path.isfile(os.path.join(data_root, split + '.lst')) and os.path.isdir(folder):
        return folder_split(folder, classes)
    split_list = parse_split_file(locate_split(data_root, split, dataset), data_root, classes)
    if check:
        check_images(split_list)
    return split_list
