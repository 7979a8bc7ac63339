"""Segmentation data: dataset specs, listing, reading, the training transform, the loader."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from issegm.datasets import (DATASET_NAMES, DataError, get_dataset_spec, list_samples,
                             read_image, read_label)


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
    assert len({tuple(c) for c in spec.palette[:classes]}) == classes  # distinct colours


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
    with pytest.raises(DataError, match='^%s: cannot read image' % missing):
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
