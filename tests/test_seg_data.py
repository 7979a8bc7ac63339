"""Segmentation data: dataset specs, listing, reading, the training transform, the loader."""
import importlib.util
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from issegm.datasets import (DATASET_NAMES, DataError, get_dataset_spec, list_samples,
                             read_label)
from issegm.transforms import (CropParams, SegTrainDataset, SegTrainTransform,
                               crop_window_range, nearest_source_index)
from rn38.image import read_image

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts')


def load_script(name):
    """Imports ``scripts/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- helpers

def write_png(path, array):
    """Writes ``array`` (H, W) uint8/uint16 or (H, W, 3) RGB uint8 as a PNG, making folders."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = array[:, :, ::-1]  # cv2 writes BGR
    assert cv2.imwrite(path, np.ascontiguousarray(array))


def write_jpg(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def write_palette_png(path, indices):
    """A VOC-style palette ('P' mode) PNG: pixel values are class indices."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8), mode='P')
    im.putpalette(get_dataset_spec('voc').palette.ravel().tolist())
    im.save(path)


def make_cityscapes(root, splits=('train', 'val'), cities=('aachen', 'bremen'), per_city=2,
                    shape=(8, 16)):
    for split in splits:
        for city in cities:
            for k in range(per_city):
                stem = '%s_000000_%06d' % (city, k)
                write_png(os.path.join(root, 'leftImg8bit', split, city,
                                       stem + '_leftImg8bit.png'),
                          np.full(shape + (3,), 40 * k, np.uint8))
                if split != 'test':
                    write_png(os.path.join(root, 'gtFine', split, city,
                                           stem + '_gtFine_labelIds.png'),
                              np.full(shape, 7, np.uint8))


# ----------------------------------------------------------------------------- specs

@pytest.mark.parametrize('name,classes', [('cityscapes', 19), ('voc', 21), ('ade20k', 150)])
def test_spec_builds_and_luts_invert(name, classes):
    spec = get_dataset_spec(name)
    assert spec.classes == classes == len(spec.class_names)
    assert spec.ignore_label == 255
    for lut in (spec.label_to_train, spec.train_to_label):
        assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert spec.palette.shape == (256, 3) and spec.palette.dtype == np.uint8
    train_ids = np.arange(classes)
    # train id -> written raw value -> train id is the identity on valid classes
    np.testing.assert_array_equal(spec.label_to_train[spec.train_to_label[train_ids]], train_ids)
    assert set(spec.train_to_label[train_ids].tolist()) <= spec.valid_raw_values
    # every valid raw value maps to a class or to ignore; each class is hit
    mapped = spec.label_to_train[sorted(spec.valid_raw_values)]
    assert set(mapped.tolist()) == set(range(classes)) | {255}
    assert tuple(spec.palette[255]) == (0, 0, 0)
    # distinct colours, but for the benchmark's own ADE20K palette, where road (raw 7) and
    # skyscraper (raw 49) share one grey
    shared = 1 if name == 'ade20k' else 0
    assert len({tuple(c) for c in spec.palette[:classes]}) == classes - shared
    if name == 'ade20k':
        assert tuple(spec.palette[6]) == tuple(spec.palette[48]) == (140, 140, 140)


def test_spec_details():
    voc = get_dataset_spec('voc')
    assert voc.label_to_train[255] == 255 and voc.label_to_train[21] == 255
    assert tuple(voc.palette[1]) == (128, 0, 0) and tuple(voc.palette[15]) == (192, 128, 128)
    ade = get_dataset_spec('ade20k')
    assert ade.label_to_train[0] == 255 and ade.label_to_train[1] == 0
    assert ade.label_to_train[150] == 149 and ade.train_to_label[149] == 150
    assert ade.valid_raw_values == set(range(151))
    assert ade.class_names[0] == 'wall' and ade.class_names[149] == 'flag'


def test_cityscapes_lut_equals_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels, trainId2label
    spec = get_dataset_spec('cityscapes')
    for lab in labels:
        if lab.id < 0:
            continue
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert spec.label_to_train[lab.id] == expected, lab.name
        assert lab.id in spec.valid_raw_values
    for train_id in range(19):
        assert spec.train_to_label[train_id] == trainId2label[train_id].id
        assert tuple(spec.palette[train_id]) == trainId2label[train_id].color
        assert spec.class_names[train_id] == trainId2label[train_id].name
    assert spec.valid_raw_values == set(range(34))
    assert spec.train_to_label[255] == 0


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_dataset_spec('kitti')
    for name in DATASET_NAMES:
        assert name in str(err.value)


def test_label_grammar_names_exactly_the_datasets_with_a_spec(tmp_path):
    """rn38 (the library) cannot import issegm, so the dataset names its labels accept are
    its own tuple; it must list the same datasets, in the same order, as the specs here,
    and every name must build a spec that a label of its class count resolves to."""
    from rn38 import zoo
    assert zoo.SEGMENTATION_DATASETS == DATASET_NAMES
    (tmp_path / 'classes.yaml').write_text('classes:\n  - {name: ground}\n  - {name: tree}\n')
    for name in DATASET_NAMES:
        spec = get_dataset_spec(name, str(tmp_path) if name == 'folder' else None)
        assert spec.name == name and spec.classes > 1
        assert zoo.parse_label('%s_rna-a1_cls%d_s8' % (name, spec.classes)).dataset == name


# ----------------------------------------------------------------------------- listing

def test_list_cityscapes_layout(tmp_path):
    root = str(tmp_path)
    make_cityscapes(root, splits=('train', 'val', 'test'))
    spec = get_dataset_spec('cityscapes')
    train = list_samples(spec, root, 'train')
    assert len(train) == 4
    image, label = train[1]
    assert image == os.path.join(root, 'leftImg8bit', 'train', 'aachen',
                                 'aachen_000000_000001_leftImg8bit.png')
    assert label == os.path.join(root, 'gtFine', 'train', 'aachen',
                                 'aachen_000000_000001_gtFine_labelIds.png')
    assert [os.path.basename(s[0])[:6] for s in train] == ['aachen'] * 2 + ['bremen'] * 2
    trainval = list_samples(spec, root, 'trainval')
    assert trainval == train + list_samples(spec, root, 'val')
    test = list_samples(spec, root, 'test')
    assert len(test) == 4 and all(label is None for _, label in test)


def test_list_voc_layout_and_lst(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, 'ImageSets', 'Segmentation'))
    with open(os.path.join(root, 'ImageSets', 'Segmentation', 'val.txt'), 'w') as f:
        f.write('2007_000033\n2007_000042\n\n')
    for i in ('2007_000033', '2007_000042'):
        write_jpg(os.path.join(root, 'JPEGImages', i + '.jpg'), np.zeros((6, 5, 3), np.uint8))
        write_palette_png(os.path.join(root, 'SegmentationClass', i + '.png'),
                          np.zeros((6, 5), np.uint8))
    spec = get_dataset_spec('voc')
    samples = list_samples(spec, root, 'val')
    assert samples == [(os.path.join(root, 'JPEGImages', i + '.jpg'),
                        os.path.join(root, 'SegmentationClass', i + '.png'))
                       for i in ('2007_000033', '2007_000042')]
    # the authors' list format takes precedence
    with open(os.path.join(root, 'train+.lst'), 'w') as f:
        f.write('JPEGImages/2007_000042.jpg\tSegmentationClass/2007_000042.png\n')
    assert list_samples(spec, root, 'train+') == [samples[1]]


def test_list_ade20k_layout_and_aliases(tmp_path):
    root = str(tmp_path)
    for split in ('training', 'validation'):
        for k in (2, 1):
            stem = 'ADE_%s_%08d' % ('train' if split == 'training' else 'val', k)
            write_jpg(os.path.join(root, 'images', split, stem + '.jpg'),
                      np.zeros((4, 4, 3), np.uint8))
            write_png(os.path.join(root, 'annotations', split, stem + '.png'),
                      np.zeros((4, 4), np.uint8))
    spec = get_dataset_spec('ade20k')
    val = list_samples(spec, root, 'validation')
    assert list_samples(spec, root, 'val') == val
    assert [os.path.basename(i) for i, _ in val] == ['ADE_val_00000001.jpg',
                                                    'ADE_val_00000002.jpg']
    assert val[0][1] == os.path.join(root, 'annotations', 'validation', 'ADE_val_00000001.png')
    assert len(list_samples(spec, root, 'train')) == 2


def test_list_errors_name_the_folder(tmp_path):
    spec = get_dataset_spec('cityscapes')
    missing = str(tmp_path / 'nope')
    with pytest.raises(DataError, match='^' + missing):
        list_samples(spec, missing, 'train')
    root = str(tmp_path)
    os.makedirs(os.path.join(root, 'leftImg8bit', 'val', 'aachen'))
    os.makedirs(os.path.join(root, 'gtFine', 'val'))
    with pytest.raises(DataError, match='^%s: no ' % os.path.join(root, 'leftImg8bit', 'val')):
        list_samples(spec, root, 'val')  # empty split
    with pytest.raises(DataError, match='^%s' % os.path.join(root, 'leftImg8bit', 'train')):
        list_samples(spec, root, 'train')
    # an image whose label file is missing
    make_cityscapes(root, splits=('train',), cities=('ulm',), per_city=1)
    os.remove(os.path.join(root, 'gtFine', 'train', 'ulm', 'ulm_000000_000000_gtFine_labelIds.png'))
    with pytest.raises(DataError, match='ulm_000000_000000_gtFine_labelIds.png: label file'):
        list_samples(spec, root, 'train')
    with pytest.raises(DataError, match='ImageSets'):
        list_samples(get_dataset_spec('voc'), root, 'train')


# ----------------------------------------------------------------------------- reading

def test_read_image_rgb_and_grey(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[1, 2] = (1, 2, 3)
    write_png(str(tmp_path / 'a.png'), rgb)
    out = read_image(str(tmp_path / 'a.png'))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, rgb)
    write_png(str(tmp_path / 'g.png'), np.full((2, 5), 77, np.uint8))
    grey = read_image(str(tmp_path / 'g.png'))
    assert grey.shape == (2, 5, 3) and (grey == 77).all()


def pil_authors_image(path):
    """The authors' image reading: ``np.array(Image.open(path).convert('RGB'))`` (PIL, which
    leaves EXIF orientation alone)."""
    return np.array(Image.open(path).convert('RGB'))


def test_decoding_equals_pil_and_ignores_exif_orientation(tmp_path):
    """One decoder for both tasks (rn38.image), pixels as the authors' PIL reading; a JPEG
    tagged 'rotate 90' (EXIF Orientation 6) keeps its stored 30x40 layout."""
    import iclass.data
    import rn38.image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = str(tmp_path / 'rotated.jpg')
    Image.fromarray(rgb).save(rotated, quality=90, exif=exif.tobytes())
    assert Image.open(rotated).getexif()[0x0112] == 6
    assert cv2.imread(rotated).shape[:2] == (40, 30)       # what plain cv2 decoding does
    files = {'rotated.jpg': None}
    for mode in ('RGB', 'L', 'P', 'RGBA', 'LA'):
        name = 'im_%s.png' % mode
        Image.fromarray(rgb).convert(mode).save(str(tmp_path / name))
        files[name] = None
    for mode in ('RGB', 'L'):
        name = 'im_%s.jpg' % mode
        Image.fromarray(rgb).convert(mode).save(str(tmp_path / name), quality=90)
        files[name] = None
    assert iclass.data.read_image is rn38.image.read_image is read_image
    for name in files:
        path = str(tmp_path / name)
        out = read_image(path)
        assert out.shape == (30, 40, 3) and out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, pil_authors_image(path), err_msg=name)


def test_empty_and_corrupt_images_are_data_errors(tmp_path):
    import iclass.data
    empty = str(tmp_path / 'empty.jpg')
    open(empty, 'wb').close()
    with pytest.raises(DataError) as err:
        read_image(empty)
    assert str(err.value) == '%s: cannot read image (empty file)' % empty
    truncated = str(tmp_path / 'truncated.jpg')
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, 'JPEG')
    with open(truncated, 'wb') as f:
        f.write(buf.getvalue()[:20])
    garbage = str(tmp_path / 'garbage.png')
    with open(garbage, 'wb') as f:
        f.write(b'\x00' * 100)
    for path in (truncated, garbage):
        with pytest.raises(DataError, match='^%s: cannot read image' % path):
            read_image(path)
    # the classification dataset raises the same error type, naming the file and list line
    with open(str(tmp_path / 's.lst'), 'w') as f:
        f.write('0\t0\tempty.jpg\n')
    split = iclass.data.load_split(str(tmp_path), 's', classes=1)
    with pytest.raises(DataError, match=r'empty\.jpg: cannot read image \(empty file\).*line 1'):
        iclass.data.ImageListDataset(split, iclass.data.EvalTransform(8))[0]
    # and so does the segmentation training dataset
    spec = get_dataset_spec('cityscapes')
    label = str(tmp_path / 'l.png')
    write_png(label, np.full((16, 16), 7, np.uint8))
    ds = SegTrainDataset(spec, [(empty, label)], SegTrainTransform(16, 8, 16))
    with pytest.raises(DataError, match='^%s: cannot read image' % empty):
        ds[0]


def test_read_label_maps_to_train_ids(tmp_path):
    spec = get_dataset_spec('cityscapes')
    raw = np.array([[7, 8, 26], [0, 33, 1]], np.uint8)  # road sidewalk car / unlabeled bicycle ego
    path = str(tmp_path / 'l.png')
    write_png(path, raw)
    np.testing.assert_array_equal(read_label(spec, path, image_shape=(2, 3, 3)),
                                  [[0, 1, 13], [255, 18, 255]])
    voc = get_dataset_spec('voc')
    write_palette_png(str(tmp_path / 'v.png'), np.array([[0, 15], [255, 20]]))
    np.testing.assert_array_equal(read_label(voc, str(tmp_path / 'v.png')), [[0, 15], [255, 20]])
    ade = get_dataset_spec('ade20k')
    write_png(str(tmp_path / 'ade.png'), np.array([[0, 1, 150]], np.uint8))
    np.testing.assert_array_equal(read_label(ade, str(tmp_path / 'ade.png')), [[255, 0, 149]])


def test_read_errors_start_with_the_path(tmp_path):
    spec = get_dataset_spec('cityscapes')
    missing = str(tmp_path / 'missing.png')
    with pytest.raises(DataError, match='^%s: image not found$' % missing):
        read_image(missing)
    with pytest.raises(DataError, match='^%s: cannot read label' % missing):
        read_label(spec, missing)
    broken = str(tmp_path / 'broken.png')
    with open(broken, 'wb') as f:
        f.write(b'\x89PNG not really')
    with pytest.raises(DataError, match='^%s: cannot read image' % broken):
        read_image(broken)
    with pytest.raises(DataError, match='^%s: cannot read label' % broken):
        read_label(spec, broken)
    label = str(tmp_path / 'big.png')
    write_png(label, np.full((4, 8), 7, np.uint8))
    with pytest.raises(DataError) as err:
        read_label(spec, label, image_shape=(4, 6, 3))
    assert str(err.value) == '%s: label is 4x8 but image is 4x6' % label
    unknown = str(tmp_path / 'unknown.png')
    write_png(unknown, np.array([[7, 77], [7, 7]], np.uint8))
    with pytest.raises(DataError) as err:
        read_label(spec, unknown)
    assert str(err.value) == '%s: unknown label id 77' % unknown
    voc = get_dataset_spec('voc')
    write_png(unknown, np.array([[0, 21]], np.uint8))
    with pytest.raises(DataError, match='^%s: unknown label id 21$' % unknown):
        read_label(voc, unknown)
    colour = str(tmp_path / 'colour.png')
    write_png(colour, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match='^%s: label must be single-channel' % colour):
        read_label(spec, colour)
    for message in (str(err.value),):
        assert '\n' not in message


# ----------------------------------------------------------------------------- transform


MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def normalized(rgb_uint8):
    """(H, W, 3) uint8 -> (3, H, W) float32 the way the transform normalises."""
    return ((rgb_uint8 / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)


def test_crop_window_range_numbers():
    # Cityscapes at scale 1: window = crop, border d0 = stride/2 = 4
    assert crop_window_range((1024, 2048), 2048, 504, 8) == (504, (-4, 521), (-4, 1545))
    # shrink by 0.7: rate = 1433/2048, window int(504/rate) = 720, d0 = int(11.43 // 2) = 5;
    # the last top row keeps the window inside the image: 1024 - 720 = 304
    assert crop_window_range((1024, 2048), 1433, 504, 8) == (720, (-5, 305), (-5, 1329))
    # a small image inside a large window only moves within one stride cell (16 px here)
    assert crop_window_range((100, 200), 100, 504, 8) == (1008, (-8, 8), (-8, 8))


def test_nearest_index_matches_pillow():
    for window, crop in ((720, 504), (389, 504), (57, 24)):
        row = (np.arange(window) % 256).astype(np.uint8)[None]
        pil = np.asarray(Image.fromarray(row).resize((crop, 1), Image.NEAREST))[0]
        np.testing.assert_array_equal(nearest_source_index(window, crop) % 256, pil)


def test_transform_shapes_and_crop_divisible_by_stride():
    t = SegTrainTransform(30, 8, 64, (0.5, 1.5), rng=np.random.default_rng(0))
    assert t.crop_size == 32 and t.label_size == 4
    data, label = t(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint8))
    assert data.shape == (3, 32, 32) and data.dtype == np.float32 and data.flags.c_contiguous
    assert label.shape == (16,) and label.dtype == np.float32


def test_transform_labels_at_cell_centres_and_pixels_unscaled():
    # scale 1 (target = longer side): no resampling, so every output value is predictable
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:40, :64]
    label = ((yy // 4) * 16 + xx // 4).astype(np.uint8)  # a distinct id per 4x4 block
    t = SegTrainTransform(32, 8, 64, (1.0, 1.0))
    data, out = t.apply(image, label, CropParams(64, 32, 3, 20, False))
    np.testing.assert_array_equal(data, normalized(image[3:35, 20:52]))
    rows, cols = 3 + 4 + 8 * np.arange(4), 20 + 4 + 8 * np.arange(4)
    np.testing.assert_array_equal(out.reshape(4, 4), label[np.ix_(rows, cols)])
    # window starting above/left of the image: mean-coloured padding, labels 255
    data, out = t.apply(image, label, CropParams(64, 32, -4, -4, False))
    pad = normalized(np.floor(MEAN * 255).astype(np.uint8)[None, None])[:, 0, 0]
    np.testing.assert_array_equal(data[:, :4, :4], np.broadcast_to(pad[:, None, None], (3, 4, 4)))
    np.testing.assert_array_equal(data[:, 4:, 4:], normalized(image[:28, :28]))
    np.testing.assert_array_equal(out.reshape(4, 4), label[np.ix_(8 * np.arange(4),
                                                                  8 * np.arange(4))])


def test_transform_pads_small_images_like_the_original():
    # image 20x40 rescaled to longer side 64 (rate 1.6): window int(64/1.6) = 40 > 20 rows
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (20, 40), dtype=np.uint8)
    t = SegTrainTransform(64, 8, 64, (1.0, 1.0))
    window, (top_lo, top_hi), _ = crop_window_range((20, 40), 64, 64, 8)
    assert window == 40 and (top_lo, top_hi) == (-2, 3)
    data, out = t.apply(image, label, CropParams(64, 40, 0, 0, False))
    out = out.reshape(8, 8)
    assert (out[4:] == 255).all()  # rows 20..39 of the window are padding
    assert (out[:3] != 255).all()
    pad = normalized(np.floor(MEAN * 255).astype(np.uint8)[None, None])[:, 0, 0]
    np.testing.assert_allclose(data[:, -8:, :], np.broadcast_to(pad[:, None, None], (3, 8, 64)),
                               atol=1e-6)


def authors_interp(imh_src, imw_src, imh_dst, imw_dst):
    """The authors' ``util.util.get_interp_method`` with ``choose_interpolation_method`` set
    (their training entries set it): ANTIALIAS (= LANCZOS) when both sides shrink, CUBIC
    when both grow, LINEAR otherwise."""
    if imh_dst < imh_src and imw_dst < imw_src:
        return Image.LANCZOS
    elif imh_dst > imh_src and imw_dst > imw_src:
        return Image.BICUBIC
    return Image.BILINEAR


def authors_read(im, label, target_size, sy, sx, do_flipping, crop, stride, origin_size,
                 scale_rate_range, max_shape, rgb_mean=MEAN * 255):
    """One image of the authors' ``issegm/data.py`` ``FileIter._read`` (PIL; crops_per_image
    = label_steps = 1), transcribed, given its random draws (``target_size``; canvas origin
    ``sy, sx``; ``do_flipping``). Returns the resized uint8 ``(crop, crop, 3)`` crop before
    their ``transformer_image`` and the float32 labels ``((crop/stride)^2,)``.
    ``rgb_mean``: the canvas colour; their training call, not in their published tree, is
    assumed to pass the ImageNet mean x 255 (the network's input mean)."""
    max_h, max_w = max_shape
    target_size_range = [int(_ * origin_size) for _ in scale_rate_range]
    min_rate = 1. * target_size_range[0] / max(max_h, max_w)
    max_crop_size = int(crop / min_rate)
    h, w = im.shape[:2]
    rate = 1. * target_size / max(h, w)
    crop_size = int(crop / rate)
    label_stride = stride / rate
    d0 = max(1, int(label_stride // 2))
    d1 = max(0, int(label_stride - d0))
    nim_size = max(max_crop_size, max_h, max_w) + d1 + d0
    nim = np.zeros((nim_size, nim_size, 3), np.single)
    nim += rgb_mean.reshape((1, 1, 3))
    nim[d0:d0 + h, d0:d0 + w, :] = im
    nlabel = 255 * np.ones((nim_size, nim_size), np.uint8)
    nlabel[d0:d0 + h, d0:d0 + w] = label
    tim = nim[sy:sy + crop_size, sx:sx + crop_size, :].astype(np.uint8)
    assert tim.shape[0] == tim.shape[1] == crop_size
    method = authors_interp(crop_size, crop_size, crop, crop)
    rim = np.array(Image.fromarray(tim).resize((crop, crop), method))
    tlabel = nlabel[sy:sy + crop_size, sx:sx + crop_size]
    rlabel = Image.fromarray(tlabel).resize((crop, crop), Image.NEAREST)
    lsy = lsx = stride // 2
    rlabel = np.array(rlabel)[lsy:crop:stride, lsx:crop:stride]
    if do_flipping:
        rim = rim[:, ::-1, :]
        rlabel = rlabel[:, ::-1]
    return rim, rlabel.flatten().astype(np.single), method


def authors_draws(params, image_hw, stride):
    """Our :class:`CropParams` as the authors' draws: canvas origin = window origin + d0."""
    rate = 1. * params.target_long_side / max(image_hw)
    d0 = max(1, int((stride / rate) // 2))
    return params.target_long_side, params.top + d0, params.left + d0, params.flip


@pytest.mark.parametrize('shape', [(96, 192), (30, 50), (200, 120)])
def test_transform_equals_authors_file_iterator(shape):
    """Same draws -> the same labels and the same resized pixels as the transcription of
    the authors' code, for shrinking (LANCZOS), enlarging (BICUBIC) and unchanged (BILINEAR)
    windows. The pixels are compared after the normalisation ``(v / 255 - mean) / std``
    (float64, rounded to float32): the authors' ``util/transformer.py`` (ColorScale,
    ColorNormalize) is not in their published tree, so its float arithmetic is assumed."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    label = rng.integers(0, 19, shape, dtype=np.uint8)
    t = SegTrainTransform(48, 8, 192, (0.7, 1.3), rng=rng)
    draws = [t.sample_params(shape) for _ in range(16)]
    # the window equal to the crop (rate 1): BILINEAR
    draws.append(CropParams(max(shape), 48, 0, 0, False))
    methods = set()
    for params in draws:
        data, out = t.apply(image, label, params)
        rim, ref_out, method = authors_read(image, label, *authors_draws(params, shape, 8),
                                            crop=48, stride=8, origin_size=192,
                                            scale_rate_range=(0.7, 1.3), max_shape=(200, 200))
        methods.add(method)
        ref_data = ((rim / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)
        np.testing.assert_array_equal(data, ref_data)
        np.testing.assert_array_equal(out, ref_out)
    shrinks = max(shape) > int(0.7 * 192)     # some drawn targets are below the image size
    assert methods == {Image.BICUBIC, Image.BILINEAR} | ({Image.LANCZOS} if shrinks else set())


def test_transform_is_not_always_bicubic():
    """A shrinking window is resized with LANCZOS: a plain BICUBIC resize differs."""
    rng = np.random.default_rng(30)
    image = rng.integers(0, 256, (96, 192, 3), dtype=np.uint8)
    label = np.zeros((96, 192), np.uint8)
    t = SegTrainTransform(48, 8, 192, (0.7, 1.3))
    params = CropParams(134, 68, 10, 20, False)   # window 68 > crop 48: shrinking
    data, _ = t.apply(image, label, params)
    window = image[10:78, 20:88]
    lanczos = np.asarray(Image.fromarray(window).resize((48, 48), Image.LANCZOS))
    bicubic = np.asarray(Image.fromarray(window).resize((48, 48), Image.BICUBIC))
    np.testing.assert_array_equal(data, normalized(lanczos))
    assert not np.array_equal(lanczos, bicubic)


def test_flip_consistency():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (64, 96), dtype=np.uint8)
    t = SegTrainTransform(32, 8, 96, (0.8, 1.2))
    params = CropParams(80, 38, 5, 17, False)
    data, out = t.apply(image, label, params)
    fdata, fout = t.apply(image, label, params._replace(flip=True))
    np.testing.assert_array_equal(fdata, data[:, :, ::-1])
    np.testing.assert_array_equal(fout.reshape(4, 4), out.reshape(4, 4)[:, ::-1])
    assert not np.array_equal(fdata, data)


def test_scale_range_and_window_respected():
    t = SegTrainTransform(64, 8, 100, (0.5, 1.5))
    rng = np.random.default_rng(5)
    draws = [t.sample_params((60, 100), rng) for _ in range(2000)]
    targets = np.array([d.target_long_side for d in draws])
    assert targets.min() == 50 and targets.max() == 150  # inclusive integer range
    assert abs(targets.mean() - 100) < 2.0 and abs(targets.std() - 101 / np.sqrt(12)) < 1.5
    for d in draws[:200]:
        window, (t0, t1), (l0, l1) = crop_window_range((60, 100), d.target_long_side, 64, 8)
        assert d.window == window == int(64 / (d.target_long_side / 100.0))
        assert t0 <= d.top < t1 and l0 <= d.left < l1
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6


def test_transform_deterministic_given_rng():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (50, 80), dtype=np.uint8)
    t = SegTrainTransform(32, 8, 80, (0.7, 1.3))
    a = t(image, label, np.random.default_rng(7))
    b = t(image, label, np.random.default_rng(7))
    c = t(image, label, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_crop_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match='crop 512 .* larger than the largest rescaled image '
                                         'side 260'):
        SegTrainTransform(510, 8, 200, (0.7, 1.3))


# ----------------------------------------------------------------------------- dataset

def demo_samples(root, **kwargs):
    options = dict(seed=0, train=4, val=0, height=48, width=96)
    options.update(kwargs)
    load_script('make_demo_data').make_demo_dataset(root, **options)
    return list_samples(get_dataset_spec('cityscapes'), root, 'train')


def test_seg_train_dataset_reads_and_transforms(tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = demo_samples(str(tmp_path))
    t = SegTrainTransform(32, 8, 96, (0.7, 1.3))
    for cache in (False, True):
        ds = SegTrainDataset(spec, samples, t, cache_images=cache)
        assert len(ds) == 4
        data, label = ds.__getitem__(1, np.random.default_rng(0))
        assert data.shape == (3, 32, 32) and label.shape == (16,)
        assert set(np.unique(label)) <= set(range(19)) | {255}
        image, train_ids = ds.read(1)
        raw = np.asarray(Image.open(samples[1][1]))
        np.testing.assert_array_equal(train_ids, spec.label_to_train[raw])
        np.testing.assert_array_equal(image, read_image(samples[1][0]))
    assert len(ds._cache) == 2  # image + label of sample 1


def test_seg_train_dataset_errors(tmp_path):
    spec = get_dataset_spec('cityscapes')
    samples = demo_samples(str(tmp_path))
    t = SegTrainTransform(32, 8, 96)
    missing = samples[2][1] + '.gone'
    with pytest.raises(DataError, match='^%s: label file not found' % missing):
        SegTrainDataset(spec, samples[:2] + [(samples[2][0], missing)], t)
    with pytest.raises(DataError, match='^%s: training sample has no label' % samples[0][0]):
        SegTrainDataset(spec, [(samples[0][0], None)], t)
    write_png(samples[3][1], np.full((40, 96), 7, np.uint8))  # wrong size
    ds = SegTrainDataset(spec, samples, t)
    with pytest.raises(DataError) as err:
        ds.__getitem__(3, np.random.default_rng(0))
    assert str(err.value) == '%s: label is 40x96 but image is 48x96' % samples[3][1]


# ----------------------------------------------------------------------------- loader

from rn38.loader import BatchLoader, epoch_order, sample_rng  # noqa: E402


class ToyDataset:
    """data = (index, a draw of the sample rng), label = index; optional failures/delay."""

    def __init__(self, size, fail_at=None, delay=0.0):
        self.size, self.fail_at, self.delay = size, fail_at, delay

    def __len__(self):
        return self.size

    def __getitem__(self, index, rng):
        import time
        if self.delay:
            time.sleep(self.delay)
        if index == self.fail_at:
            raise DataError('/data/img_%03d.png: cannot read image (broken)' % index)
        return (np.array([index, rng.random()], np.float32),
                np.array([index], np.float32))


def collect(loader, epochs=(0, 1)):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out.append([(d.copy(), l.copy()) for d, l in loader])
    return out


def test_loader_same_batches_for_any_workers_and_mode():
    ds = ToyDataset(11)
    reference = collect(BatchLoader(ds, 3, shuffle=True, seed=5, workers=0))
    assert [len(epoch) for epoch in reference] == [3, 3]  # drop_last: 11 // 3
    first = reference[0][0]
    assert first[0].shape == (3, 2) and first[1].shape == (3, 1)
    # sample draws come from (seed, epoch, index)
    order0 = epoch_order(11, True, 5, 0)
    np.testing.assert_array_equal(first[1][:, 0], order0[:3])
    assert first[0][1, 1] == np.float32(sample_rng(5, 0, order0[1]).random())
    # epochs differ in order and draws
    assert not np.array_equal(reference[0][0][1], reference[1][0][1])
    for workers, mode in ((1, 'thread'), (2, 'thread'), (2, 'process')):
        with BatchLoader(ds, 3, shuffle=True, seed=5, workers=workers, mode=mode) as loader:
            got = collect(loader)
        for epoch_ref, epoch_got in zip(reference, got):
            for (d0, l0), (d1, l1) in zip(epoch_ref, epoch_got):
                np.testing.assert_array_equal(d0, d1)
                np.testing.assert_array_equal(l0, l1)
    other_seed = collect(BatchLoader(ds, 3, shuffle=True, seed=6, workers=0), epochs=(0,))
    assert not np.array_equal(other_seed[0][0][0], reference[0][0][0])


def test_loader_no_shuffle_keep_last():
    loader = BatchLoader(ToyDataset(5), 2, shuffle=False, workers=1, drop_last=False)
    labels = [l[:, 0].tolist() for _, l in loader]
    assert labels == [[0, 1], [2, 3], [4]] and len(loader) == 3
    loader.close()


@pytest.mark.parametrize('workers,mode', [(0, 'thread'), (2, 'thread'), (2, 'process')])
def test_loader_propagates_worker_errors(workers, mode):
    loader = BatchLoader(ToyDataset(8, fail_at=5), 2, shuffle=False, workers=workers, mode=mode)
    seen = []
    with pytest.raises(DataError) as err:
        for _, label in loader:
            seen.append(label[:, 0].tolist())
    assert str(err.value) == '/data/img_005.png: cannot read image (broken)'
    assert seen == [[0, 1], [2, 3]]  # batches before the failing one were delivered
    loader.close()


def test_loader_records_wait_time_and_restarts_after_break():
    loader = BatchLoader(ToyDataset(4, delay=0.05), 2, shuffle=False, workers=1)
    for _ in loader:
        pass
    # 4 samples x 50 ms are produced by one worker; the consumer does nothing, so it waits
    assert 0.12 < loader.wait_seconds < 5.0
    assert loader.wait_history == {0: loader.wait_seconds}
    loader.set_epoch(1)
    for _ in loader:
        break  # abandon mid-epoch: the next epoch must not see stale batches
    loader.set_epoch(2)
    labels = [l[:, 0].tolist() for _, l in loader]
    assert labels == [[0, 1], [2, 3]] and set(loader.wait_history) == {0, 1, 2}
    loader.close()


def test_loader_process_mode_exits_cleanly(tmp_path):
    import subprocess
    import sys
    script = tmp_path / 'run.py'
    script.write_text(
        'import sys\nsys.path.insert(0, %r)\n' % os.path.dirname(os.path.abspath(__file__)) +
        'from test_seg_data import ToyDataset\nfrom rn38.loader import BatchLoader\n'
        'loader = BatchLoader(ToyDataset(40), 2, workers=2, mode="process", prefetch=4)\n'
        'it = iter(loader)\nnext(it)\nprint("ok")\n')  # exits with batches still in flight
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=15)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'ok'


def test_loader_shards_are_disjoint_and_even():
    ds = ToyDataset(21)
    whole = BatchLoader(ds, 2, shuffle=True, seed=3, workers=0)
    shards = []
    for index in range(2):
        loader = BatchLoader(ds, 2, shuffle=True, seed=3, workers=0)
        loader.set_shard(index, 2)
        loader.set_epoch(1)
        shards.append(np.concatenate(loader.batch_indices()))
        assert len(loader) == 5  # 21 samples -> 10 per shard -> 5 batches of 2
    assert not set(shards[0]) & set(shards[1])
    order = epoch_order(21, True, 3, 1)
    np.testing.assert_array_equal(shards[0], order[0:20:2])
    np.testing.assert_array_equal(shards[1], order[1:20:2])
    assert len(whole) == 10
    with pytest.raises(ValueError, match='shard 2 of 2'):
        whole.set_shard(2, 2)
