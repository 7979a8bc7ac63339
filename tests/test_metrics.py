import math

import numpy as np
import pytest

from issegm.metrics import ConfusionMatrix


def loop_confusion(pred, gt, num_classes, ignore):
    m = np.zeros((num_classes, num_classes), np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g == ignore:
            continue
        m[g, p] += 1
    return m


def random_pair(rs, shape, num_classes, ignore=255, ignore_frac=0.2):
    gt = rs.randint(0, num_classes, shape)
    gt[rs.rand(*shape) < ignore_frac] = ignore
    pred = rs.randint(0, num_classes, shape)
    return pred.astype(np.uint8), gt.astype(np.uint8)


def test_matches_direct_loop_and_accumulates():
    rs = np.random.RandomState(0)
    cm = ConfusionMatrix(5)
    expected = np.zeros((5, 5), np.int64)
    for shape in [(7, 9), (13, 4), (1, 1), (30, 31)]:
        pred, gt = random_pair(rs, shape, 5)
        counts = cm.update(pred, gt)
        direct = loop_confusion(pred, gt, 5, 255)
        np.testing.assert_array_equal(counts, direct)
        expected += direct
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.total == expected.sum()


def test_ignore_label_pixels_are_not_counted_whatever_the_prediction():
    gt = np.array([[0, 255, 1], [255, 255, 2]], np.uint8)
    pred = np.array([[0, 1, 1], [2, 0, 0]], np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.total == 3
    assert cm.pixel_accuracy() == pytest.approx(2 / 3)
    # a custom ignore value
    cm2 = ConfusionMatrix(3, ignore_label=0)
    cm2.update(pred, np.where(gt == 255, 0, gt))
    assert cm2.total == 2  # the two non-zero gt pixels (1 and 2)


def test_scores_by_hand():
    # gt:   0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    gt = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    acc = cm.class_accuracy()
    np.testing.assert_allclose(acc[:3], [2 / 3, 1 / 2, 1.0])
    assert math.isnan(acc[3])  # class 3 never in gt
    iou = cm.class_iou()
    # class 0: tp 2, gt 3, pred 2 -> 2/3; class 1: tp 1, gt 2, pred 2 -> 1/3;
    # class 2: tp 1, gt 1, pred 2 -> 1/2; class 3: absent from both -> NaN
    np.testing.assert_allclose(iou[:3], [2 / 3, 1 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    # the authors' ScoreUpdater convention: absent classes count as 0 in the mean
    assert cm.mean_iou(absent='zero') == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 4)
    assert cm.mean_class_accuracy() == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    with pytest.raises(ValueError):
        cm.mean_iou(absent='skip')


def test_class_predicted_but_absent_from_gt_has_zero_iou_not_nan():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2]), np.array([0, 0]))
    iou = cm.class_iou()
    assert iou[0] == pytest.approx(0.5)
    assert iou[2] == 0.0
    assert math.isnan(iou[1])
    assert math.isnan(cm.class_accuracy()[2])


def test_merge_equals_single_pass():
    rs = np.random.RandomState(1)
    pairs = [random_pair(rs, (11, 17), 6) for _ in range(4)]
    whole = ConfusionMatrix(6)
    a, b = ConfusionMatrix(6), ConfusionMatrix(6)
    for i, (p, g) in enumerate(pairs):
        whole.update(p, g)
        (a if i % 2 else b).update(p, g)
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(5))


def test_bad_values_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match='ground truth value 7'):
        cm.update(np.zeros(3, np.uint8), np.array([0, 7, 1]))
    with pytest.raises(ValueError, match='predicted value 3'):
        cm.update(np.array([0, 3, 1]), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match='shape'):
        cm.update(np.zeros((2, 3)), np.zeros((3, 2)))
    # a bad prediction on an ignored pixel does not matter
    cm.update(np.array([0, 200]), np.array([0, 255]))
    assert cm.total == 1


def test_empty_matrix_scores_are_nan():
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.pixel_accuracy())
    assert math.isnan(cm.mean_iou())
    d = cm.to_dict()
    assert d['mean_iou'] is None and d['pixels'] == 0


def test_to_dict_and_table():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    d = cm.to_dict(['road', 'car', 'sky'])
    assert d['class_iou'] == {'road': 1.0, 'car': 0.5, 'sky': 0.5}
    assert d['pixel_accuracy'] == pytest.approx(0.75)
    assert d['mean_iou'] == pytest.approx(2 / 3)
    assert d['gt_pixels'] == {'road': 1, 'car': 1, 'sky': 2}
    text = cm.table(['road', 'car', 'sky'])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ['class', 'IoU%', 'acc%']
    assert lines[2].split()[:3] == ['car', '50.00', '100.00']
    assert 'mean' in lines[4] and '66.67' in lines[4]
    with pytest.raises(ValueError):
        cm.to_dict(['a', 'b'])


def test_state_round_trip(tmp_path):
    rs = np.random.RandomState(2)
    cm = ConfusionMatrix(4, ignore_label=250)
    cm.update(*random_pair(rs, (9, 9), 4, ignore=250))
    path = str(tmp_path / 'cm.npz')
    cm.save(path)
    back = ConfusionMatrix.load(path)
    assert back.num_classes == 4 and back.ignore_label == 250
    np.testing.assert_array_equal(back.matrix, cm.matrix)
    other = ConfusionMatrix(4, ignore_label=250)
    other.load_state_dict(cm.state_dict())
    np.testing.assert_array_equal(other.matrix, cm.matrix)
    with pytest.raises(ValueError):
        ConfusionMatrix(3).load_state_dict(cm.state_dict())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp left
