"""Segmentation dataset specs and file reading, shared by training and evaluation.

A :class:`DatasetSpec` holds everything that depends on the dataset's label encoding.
Ground-truth files store *raw* label values (Cityscapes ``labelIds``, VOC class indices,
ADE20K ``1..150`` with ``0`` = other, COCO category ids, PASCAL-Context ``0..59``); the networks use *train ids* ``0..classes-1`` with
``255`` = ignore. The mapping happens exactly once, in :func:`read_label`, through the
``label_to_train`` lookup table; predictions go back through ``train_to_label``.

Every problem with a file is a :class:`DataError` (:mod:`rn38.image`, shared with the
classification tools, which also decode the images) whose one-line message starts with
the offending path.
"""
import glob
import io
import os

import numpy as np
from PIL import Image

from rn38.image import DataError, decode_image, read_file_bytes

IGNORE_LABEL = 255

# The datasets with a spec; model labels may name exactly these (the library's label
# grammar, rn38.zoo.SEGMENTATION_DATASETS, is kept equal by tests/test_seg_data.py).
DATASET_NAMES = ('cityscapes', 'voc', 'ade20k', 'coco', 'pascal-context', 'folder')

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm')


class DatasetSpec:
    """Label encoding, names and colours of one segmentation dataset.

    Attributes:
        name: dataset name, e.g. ``'cityscapes'``.
        classes: number of train ids (network outputs), e.g. 19.
        ignore_label: train id of ignored pixels (255).
        class_names: ``classes`` names, index = train id.
        label_to_train: ``np.uint8[256]``, raw label value -> train id (255 = ignore).
        train_to_label: ``np.uint8[256]``, train id -> raw value written in result PNGs.
        palette: ``np.uint8[256, 3]`` RGB colour per train id (255 -> black).
        valid_raw_values: raw values allowed in ground truth; anything else is a DataError.
        eval_pad_mode: how ``--phase val`` pads the network input
            (:class:`issegm.predictor.SegPredictor`'s ``pad_mode``): ``'stride'`` (the
            authors' Cityscapes setting) or ``'scale'`` (their VOC/ADE20K setting).
        official_scoring: the official scoring ``--phase val`` adds to ours:
            ``'cityscapesscripts'`` (:mod:`issegm.official`) or None.
    """

    def __init__(self, name, class_names, label_to_train, train_to_label, palette,
                 valid_raw_values, ignore_label=IGNORE_LABEL, label_colors=None,
                 eval_pad_mode='scale', official_scoring=None):
        self.name = name
        self.eval_pad_mode = eval_pad_mode
        self.official_scoring = official_scoring
        # Own data with RGB label images: ``np.uint8[K, 3]``, colour k is raw value k.
        self.label_colors = None if label_colors is None else \
            np.asarray(label_colors, np.uint8).reshape(-1, 3)
        self.class_names = list(class_names)
        self.classes = len(self.class_names)
        self.ignore_label = ignore_label
        self.label_to_train = np.asarray(label_to_train, np.uint8).reshape(256)
        self.train_to_label = np.asarray(train_to_label, np.uint8).reshape(256)
        self.palette = np.asarray(palette, np.uint8).reshape(256, 3)
        self.valid_raw_values = frozenset(int(v) for v in valid_raw_values)
        valid = np.zeros(256, bool)
        valid[sorted(self.valid_raw_values)] = True
        self.raw_value_is_valid = valid  # np.bool_[256], same set as valid_raw_values

    def __repr__(self):
        return 'DatasetSpec(%r, classes=%d)' % (self.name, self.classes)

    def colorize(self, train_ids):
        """``(H, W)`` train ids -> ``(H, W, 3)`` uint8 RGB with :attr:`palette`."""
        return self.palette[np.asarray(train_ids, np.uint8)]


def _gluoncv_palette(flat, count):
    """GluonCV's flat ``[r, g, b, r, g, b, ...]`` colour list as ``np.uint8[count, 3]``."""
    colors = np.asarray(flat[:3 * count], np.uint8).reshape(-1, 3)
    palette = np.zeros((count, 3), np.uint8)
    palette[:len(colors)] = colors
    return palette


def _cityscapes_spec():
    from cityscapesscripts.helpers.labels import labels as cs_labels
    label_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    train_to_label = np.zeros(256, np.uint8)  # unlabeled (id 0) for non-class train ids
    palette = np.zeros((256, 3), np.uint8)
    names = {}
    valid = set()
    for lab in cs_labels:
        if lab.id < 0:  # 'license plate' is not stored in labelIds files
            continue
        valid.add(lab.id)
        if 0 <= lab.trainId < IGNORE_LABEL:
            label_to_train[lab.id] = lab.trainId
            train_to_label[lab.trainId] = lab.id
            palette[lab.trainId] = lab.color
            names[lab.trainId] = lab.name
    classes = max(names) + 1
    return DatasetSpec('cityscapes', [names[k] for k in range(classes)], label_to_train,
                       train_to_label, palette, valid, eval_pad_mode='stride',
                       official_scoring='cityscapesscripts')


def _voc_spec():
    # Class names and colours of the VOC and ADE20K benchmarks, as GluonCV ships them.
    from gluoncv.data.pascal_voc.segmentation import VOCSegmentation
    from gluoncv.utils.viz.segmentation import vocpallete
    names = list(VOCSegmentation.CLASSES)
    classes = len(names)
    label_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    label_to_train[:classes] = np.arange(classes)
    train_to_label = np.full(256, IGNORE_LABEL, np.uint8)  # VOC marks void with 255
    train_to_label[:classes] = np.arange(classes)
    palette = _gluoncv_palette(vocpallete, 256)
    palette[classes:] = 0
    return DatasetSpec('voc', names, label_to_train, train_to_label, palette,
                       set(range(classes)) | {IGNORE_LABEL})


def _ade20k_spec():
    from gluoncv.data.ade20k.segmentation import ADE20KSegmentation
    from gluoncv.utils.viz.segmentation import adepallete
    names = list(ADE20KSegmentation.CLASSES)
    classes = len(names)
    label_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    label_to_train[1:classes + 1] = np.arange(classes)  # raw 0 ("other") is ignored
    train_to_label = np.zeros(256, np.uint8)
    train_to_label[:classes] = np.arange(1, classes + 1)
    # The scene-parsing benchmark's colours, listed by raw id (0 = "other").
    palette = np.zeros((256, 3), np.uint8)
    palette[:classes] = _gluoncv_palette(adepallete, classes + 1)[1:]
    return DatasetSpec('ade20k', names, label_to_train, train_to_label,
                       palette, range(classes + 1))


# COCO's 80 object category ids (1..90 with gaps), in the order of their names in
# GluonCV's ``COCODetection.CLASSES``; label PNGs hold one of them per pixel, 0 elsewhere
# (the authors list the valid values as ``[0] + sorted(category ids)``).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91)
                          if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))


def _coco_spec():
    """COCO labelled with VOC's 21 classes (the pre-training of ``voc_rna-a1_cls21_s8_coco``).

    Raw values are COCO category ids; the 20 categories that are VOC classes map to their
    VOC train ids (GluonCV's ``COCOSegmentation.CAT_LIST``), the other 60 categories and 0
    to background, as VOC labels objects of other classes.
    """
    from gluoncv.data.mscoco.segmentation import COCOSegmentation
    voc = _voc_spec()
    label_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    label_to_train[[0] + list(COCO_CATEGORY_IDS)] = 0
    for train_id, cat_id in enumerate(COCOSegmentation.CAT_LIST):
        label_to_train[cat_id] = train_id
    train_to_label = np.zeros(256, np.uint8)  # results are written as COCO category ids
    train_to_label[:voc.classes] = COCOSegmentation.CAT_LIST
    return DatasetSpec('coco', voc.class_names, label_to_train, train_to_label, voc.palette,
                       (0,) + COCO_CATEGORY_IDS)


# PASCAL-Context's 59 most frequent classes (Mottaghi et al. 2014), alphabetical; raw 0 is
# the background, a class of its own, as in the authors' code (60 classes, labels 0..59;
# 255, if present, is ignored).
PASCAL_CONTEXT_CLASSES = (
    'background', 'aeroplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird',
    'boat', 'book', 'bottle', 'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair',
    'cloth', 'computer', 'cow', 'cup', 'curtain', 'dog', 'door', 'fence', 'floor', 'flower',
    'food', 'grass', 'ground', 'horse', 'keyboard', 'light', 'motorbike', 'mountain', 'mouse',
    'person', 'plate', 'platform', 'pottedplant', 'road', 'rock', 'sheep', 'shelves',
    'sidewalk', 'sign', 'sky', 'snow', 'sofa', 'table', 'track', 'train', 'tree', 'truck',
    'tvmonitor', 'wall', 'water', 'window', 'wood')


def _pascal_context_spec():
    from gluoncv.utils.viz.segmentation import vocpallete
    classes = len(PASCAL_CONTEXT_CLASSES)
    identity = np.full(256, IGNORE_LABEL, np.uint8)
    identity[:classes] = np.arange(classes)
    palette = _gluoncv_palette(vocpallete, 256)
    palette[classes:] = 0
    return DatasetSpec('pascal-context', PASCAL_CONTEXT_CLASSES, identity, identity, palette,
                       set(range(classes)) | {IGNORE_LABEL})


def folder_spec(data_root, image_suffix='.jpg', label_suffix='.png'):
    """:class:`DatasetSpec` of own data described by ``<data_root>/classes.yaml``.

    The file lists the label values in order, e.g.::

        classes:
          - {name: urban, color: [0, 255, 255]}
          - {name: water, color: [0, 0, 255]}
          - {name: unknown, color: [0, 0, 0], ignore: true}

    Entry k is raw label value k (index labels: single-channel PNGs holding k) or, when
    the entries have colours, the RGB colour of entry k in colour label images. Entries
    with ``ignore: true`` are not classes (train id 255); the others are the classes, in
    order. In index labels the value 255 is always accepted as ignore.
    """
    import yaml
    path = os.path.join(data_root, 'classes.yaml')
    if not os.path.isfile(path):
        raise DataError('%s: classes file not found (own data needs classes.yaml listing '
                        'the classes)' % path)
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise DataError('%s: not valid YAML (%s)' % (path, str(err).splitlines()[0])) from None
    entries = doc.get('classes') if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries or len(entries) > 255:
        raise DataError('%s: expected "classes:" with a list of 1..255 entries {name, color, '
                        'ignore}' % path)
    with_color = ['color' in e or 'colour' in e for e in entries if isinstance(e, dict)]
    if len(with_color) != len(entries) or (any(with_color) and not all(with_color)):
        raise DataError('%s: every class entry must be a mapping, all with a color or none'
                        % path)
    label_to_train = np.full(256, IGNORE_LABEL, np.uint8)
    train_to_label = np.zeros(256, np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    names, colors = [], []
    for raw, entry in enumerate(entries):
        color = entry.get('color', entry.get('colour'))
        if color is not None:
            if not (isinstance(color, (list, tuple)) and len(color) == 3 and
                    all(isinstance(v, int) and 0 <= v <= 255 for v in color)):
                raise DataError('%s: class %d color must be [r, g, b] in 0..255, got %r'
                                % (path, raw, color))
            colors.append(color)
        if entry.get('ignore'):
            continue
        train_id = len(names)
        names.append(str(entry.get('name', 'class%d' % raw)))
        label_to_train[raw] = train_id
        train_to_label[train_id] = raw
        palette[train_id] = color if color is not None else \
            _gluoncv_palette(_voc_palette_list(), 256)[train_id]
    if not names:
        raise DataError('%s: every entry is ignored; no classes' % path)
    if colors and len({tuple(c) for c in colors}) != len(colors):
        raise DataError('%s: two entries have the same color' % path)
    train_to_label[IGNORE_LABEL] = IGNORE_LABEL
    valid = set(range(len(entries))) | (set() if colors else {IGNORE_LABEL})
    spec = DatasetSpec('folder', names, label_to_train, train_to_label, palette, valid,
                       label_colors=colors or None)
    spec.image_suffix, spec.label_suffix = image_suffix, label_suffix
    return spec


def _voc_palette_list():
    from gluoncv.utils.viz.segmentation import vocpallete
    return vocpallete


def get_dataset_spec(name, data_root=None, **folder_options):
    """:class:`DatasetSpec` of a name in :data:`DATASET_NAMES` (``'folder'``: own data,
    ``data_root`` holds ``classes.yaml``, see :func:`folder_spec`)."""
    if name == 'folder':
        return folder_spec(data_root, **folder_options)
    builders = {'cityscapes': _cityscapes_spec, 'voc': _voc_spec, 'ade20k': _ade20k_spec,
                'coco': _coco_spec, 'pascal-context': _pascal_context_spec}
    if name not in builders:
        raise ValueError('unknown dataset %r; valid: %s' % (name, ', '.join(DATASET_NAMES)))
    return builders[name]()


def spec_from_config(cfg):
    """The dataset spec of an entry's config (``dataset``, ``data_root``, suffixes)."""
    options = {}
    if cfg.dataset == 'folder':
        options = {'image_suffix': cfg.image_suffix, 'label_suffix': cfg.label_suffix}
    return get_dataset_spec(cfg.dataset, cfg.data_root, **options)


# ----------------------------------------------------------------------------- listing

def _require_dir(path, what):
    if not os.path.isdir(path):
        raise DataError('%s: %s folder not found' % (path, what))


def _read_list_file(list_path, data_root):
    """Lines ``image_path[<TAB>label_path]`` relative to data_root (the authors' ``.lst``)."""
    samples = []
    with open(list_path) as f:
        for line_no, line in enumerate(f, 1):
            fields = [x for x in line.rstrip('\r\n').split('\t') if x.strip()]
            if not fields:
                continue
            if len(fields) > 2:
                raise DataError('%s: line %d has %d tab-separated fields, expected '
                                'image_path[<TAB>label_path]' % (list_path, line_no, len(fields)))
            image = os.path.join(data_root, fields[0].strip())
            label = os.path.join(data_root, fields[1].strip()) if len(fields) == 2 else None
            samples.append((image, label))
    if not samples:
        raise DataError('%s: list file has no samples' % list_path)
    return samples


def _check_labels_exist(samples):
    for image, label in samples:
        if label is not None and not os.path.isfile(label):
            raise DataError('%s: label file not found (for image %s)' % (label, image))


def _cityscapes_samples(data_root, split):
    parts = ('train', 'val') if split == 'trainval' else (split,)
    samples = []
    for part in parts:
        image_dir = os.path.join(data_root, 'leftImg8bit', part)
        _require_dir(image_dir, 'Cityscapes image')
        has_labels = part != 'test'  # the released test labels are placeholders
        if has_labels:
            _require_dir(os.path.join(data_root, 'gtFine', part), 'Cityscapes gtFine')
        images = sorted(glob.glob(os.path.join(image_dir, '*', '*_leftImg8bit.png')))
        if not images:
            raise DataError('%s: no <city>/*_leftImg8bit.png images in split %r'
                            % (image_dir, part))
        for image in images:
            label = None
            if has_labels:
                city = os.path.basename(os.path.dirname(image))
                stem = os.path.basename(image)[:-len('_leftImg8bit.png')]
                label = os.path.join(data_root, 'gtFine', part, city,
                                     stem + '_gtFine_labelIds.png')
            samples.append((image, label))
    return samples


def _voc_samples(data_root, split):
    ids_path = os.path.join(data_root, 'ImageSets', 'Segmentation', split + '.txt')
    if not os.path.isfile(ids_path):
        raise DataError('%s: split file not found (nor %s)'
                        % (ids_path, os.path.join(data_root, split + '.lst')))
    with open(ids_path) as f:
        ids = [line.strip().split()[0] for line in f if line.strip()]
    if not ids:
        raise DataError('%s: split file lists no images' % ids_path)
    has_labels = split != 'test'
    return [(os.path.join(data_root, 'JPEGImages', i + '.jpg'),
             os.path.join(data_root, 'SegmentationClass', i + '.png') if has_labels else None)
            for i in ids]


def _ade20k_samples(data_root, split):
    split = {'train': 'training', 'val': 'validation', 'test': 'testing'}.get(split, split)
    image_dir = os.path.join(data_root, 'images', split)
    _require_dir(image_dir, 'ADE20K image')
    label_dir = os.path.join(data_root, 'annotations', split)
    has_labels = split != 'testing'
    if has_labels:
        _require_dir(label_dir, 'ADE20K annotation')
    images = sorted(glob.glob(os.path.join(image_dir, '*.jpg')))
    if not images:
        raise DataError('%s: no *.jpg images in split %r' % (image_dir, split))
    return [(image, os.path.join(label_dir, os.path.splitext(os.path.basename(image))[0]
                                 + '.png') if has_labels else None)
            for image in images]


def _folder_samples(spec, data_root, split):
    folder = os.path.join(data_root, split)
    _require_dir(folder, 'split')
    images = sorted(glob.glob(os.path.join(glob.escape(folder), '*' + spec.image_suffix)))
    if not images:
        raise DataError('%s: no images named *%s (see --image-suffix)'
                        % (folder, spec.image_suffix))
    samples = []
    for image in images:
        label = image[:-len(spec.image_suffix)] + spec.label_suffix
        samples.append((image, label if os.path.isfile(label) or split != 'test' else None))
    return samples


def list_samples(spec, data_root, split):
    """``[(image_path, label_path or None), ...]`` of a split, in a fixed (sorted) order.

    If ``<data_root>/<split>.lst`` exists (the authors' ``image<TAB>label`` list, paths
    relative to data_root) it is used for any dataset. Otherwise the standard layouts:

    - cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
      ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; ``trainval`` = train + val;
      ``test`` has no labels (None).
    - voc: ``ImageSets/Segmentation/<split>.txt`` naming ``JPEGImages/<id>.jpg`` and
      ``SegmentationClass/<id>.png``.
    - ade20k (ADEChallengeData2016): ``images/<split>/*.jpg`` with
      ``annotations/<split>/*.png``; ``train``/``val`` mean ``training``/``validation``.
    - folder (own data): ``<split>/<name><image_suffix>`` with
      ``<split>/<name><label_suffix>``, e.g. ``train/0000_sat.jpg``, ``train/0000_mask.png``.

    Missing folders, empty splits and missing label files raise :class:`DataError`.
    """
    if not os.path.isdir(data_root):
        raise DataError('%s: data root folder not found' % data_root)
    list_path = os.path.join(data_root, split + '.lst')
    if os.path.isfile(list_path):
        samples = _read_list_file(list_path, data_root)
    elif spec.name == 'cityscapes':
        samples = _cityscapes_samples(data_root, split)
    elif spec.name == 'voc':
        samples = _voc_samples(data_root, split)
    elif spec.name == 'ade20k':
        samples = _ade20k_samples(data_root, split)
    elif spec.name == 'folder':
        samples = _folder_samples(spec, data_root, split)
    else:
        raise ValueError('no folder layout known for dataset %r; put a %s.lst in %s'
                         % (spec.name, split, data_root))
    _check_labels_exist(samples)
    return samples


# ----------------------------------------------------------------------------- reading

def decode_label(spec, buf, path, image_shape=None):
    """Encoded label PNG bytes -> ``np.uint8 (H, W)`` train ids; see :func:`read_label`."""
    if spec.label_colors is not None:
        return spec.label_to_train[_decode_color_label(spec, buf, path, image_shape)]
    try:
        with Image.open(io.BytesIO(buf)) as pil:
            if pil.mode not in ('L', 'P', 'I', 'I;16', 'I;16B', 'I;16L'):
                raise DataError('%s: label must be single-channel (mode L or P), got mode %s'
                                % (path, pil.mode))
            raw = np.asarray(pil)
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError('%s: cannot read label (%s)' % (path, str(err).splitlines()[0]
                                                         if str(err) else type(err).__name__)
                        ) from None
    if raw.ndim != 2:
        raise DataError('%s: label must be single-channel, got shape %s' % (path, raw.shape))
    if image_shape is not None and tuple(raw.shape) != tuple(image_shape[:2]):
        raise DataError('%s: label is %dx%d but image is %dx%d'
                        % ((path,) + tuple(raw.shape) + tuple(image_shape[:2])))
    if raw.dtype != np.uint8:
        too_big = raw.max() if raw.size else 0
        if too_big > 255 or (raw.size and raw.min() < 0):
            raise DataError('%s: unknown label id %d' % (path, too_big))
        raw = raw.astype(np.uint8)
    counts = np.bincount(raw.ravel(), minlength=256)
    unknown = np.flatnonzero((counts > 0) & ~spec.raw_value_is_valid)
    if unknown.size:
        raise DataError('%s: unknown label id %d%s' % (
            path, unknown[0], '' if unknown.size == 1 else
            ' (and %d other unknown ids: %s)' % (unknown.size - 1,
                                                 ', '.join(map(str, unknown[1:6].tolist())))))
    return spec.label_to_train[raw]


def _decode_color_label(spec, buf, path, image_shape):
    """RGB label image -> ``np.uint8 (H, W)`` raw values (index of the colour in the spec);
    a colour not in the spec is a DataError naming it."""
    rgb = decode_image(buf, path)
    if image_shape is not None and rgb.shape[:2] != tuple(image_shape[:2]):
        raise DataError('%s: label is %dx%d but image is %dx%d'
                        % ((path,) + rgb.shape[:2] + tuple(image_shape[:2])))
    codes = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) \
        | rgb[:, :, 2]
    table = spec.label_colors.astype(np.int32)
    known = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    order = np.argsort(known)
    pos = np.clip(np.searchsorted(known[order], codes), 0, len(known) - 1)
    found = known[order][pos] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise DataError('%s: unknown label colour (%d, %d, %d) at row %d, column %d (not in '
                        'classes.yaml)' % ((path,) + tuple(int(v) for v in rgb[y, x]) + (y, x)))
    return order[pos].astype(np.uint8)


def read_label(spec, path, image_shape=None):
    """Ground truth of ``path`` as ``np.uint8 (H, W)`` train ids (255 = ignore).

    ``image_shape``: ``(H, W[, C])`` of the matching image; a different label size is a
    DataError. Raw values outside ``spec.valid_raw_values`` are a DataError too.
    """
    if not os.path.isfile(path):
        raise DataError('%s: cannot read label (no such file)' % path)
    return decode_label(spec, read_file_bytes(path), path, image_shape)
