"""Units of the segmentation trainer: the bootstrapped loss, lr schedules, lr/wd multipliers."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import issegm
from issegm.train import BootstrappedSoftmaxLoss, pixel_accuracy
from rn38.train import LRSchedule, set_lr_wd_mults


def _direct_loss(scores, label, thresh, min_kept):
    n, c = scores.shape[:2]
    s = scores.reshape(n, c, -1).astype(np.float64)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lab = label.reshape(n, -1)
    items = [(p[i, int(lab[i, j]), j], i, j) for i in range(n) for j in range(lab.shape[1])
             if lab[i, j] != 255]
    kept = [t for t in items if t[0] <= thresh]
    if len(kept) < min_kept:
        kept = sorted(items)[:min_kept]
    return -sum(np.log(t[0]) for t in kept), len(kept)


@pytest.mark.parametrize('min_kept', [4, 30, 1000])
def test_bootstrapped_loss_matches_direct_computation(min_kept):
    rs = np.random.RandomState(0)
    scores = rs.randn(2, 5, 4, 6).astype(np.float32) * 2
    label = rs.randint(0, 5, size=(2, 24)).astype(np.float32)
    label[0, :5] = 255
    crit = BootstrappedSoftmaxLoss(thresh=0.3, min_kept=min_kept)
    loss, kept = crit(mx.nd.array(scores), mx.nd.array(label))
    want_loss, want_kept = _direct_loss(scores, label, 0.3, min_kept)
    assert kept.asscalar() == want_kept
    np.testing.assert_allclose(loss.asscalar(), want_loss, rtol=1e-5)


def test_bootstrapped_loss_gradient_only_on_kept_pixels():
    scores = mx.nd.zeros((1, 3, 1, 4))
    scores[0, 0, 0, 0] = 10  # pixel 0: confidently right (p ~ 1) -> not kept
    label = mx.nd.array([[0, 1, 2, 255]])
    scores.attach_grad()
    with autograd.record():
        loss, kept = BootstrappedSoftmaxLoss(thresh=0.6, min_kept=1)(scores, label)
    loss.backward()
    assert kept.asscalar() == 2
    g = scores.grad.asnumpy()[0, :, 0]
    assert np.abs(g[:, 0]).sum() == 0 and np.abs(g[:, 3]).sum() == 0
    assert np.abs(g[:, 1]).sum() > 0 and np.abs(g[:, 2]).sum() > 0


def test_pixel_accuracy_ignores_255():
    scores = mx.nd.zeros((1, 2, 1, 3))
    scores[0, 1, 0, 2] = 1
    correct, total = pixel_accuracy(scores, mx.nd.array([[0, 1, 255]]))
    assert (correct, total) == (1, 2)


def test_lr_schedules_follow_the_authors_semantics():
    assert LRSchedule('fixed', 0.0016)(12345) == 0.0016
    step = LRSchedule('step', 0.1, step_updates=[10, 20])
    assert [step(n) for n in (1, 10, 11, 20, 21)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    lin = LRSchedule('linear', 0.0008, total_updates=100)
    assert lin(1) == pytest.approx(0.0008 * 0.99)
    assert lin(50) == pytest.approx(0.0004)
    assert lin(100) == pytest.approx(min(0.0008 / 100, 1e-6))  # floored, never zero
    assert lin(150) == lin(100)
    with pytest.raises(ValueError, match='unknown lr type'):
        LRSchedule('cosine', 0.1)


def test_biases_and_betas_get_double_lr_and_no_weight_decay():
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    set_lr_wd_mults(net, double_bias_lr=True)
    params = net.collect_params()
    for name in ('conv6a_bias', 'linear19_bias', 'bn3a_branch2a_beta', 'bn7_beta'):
        assert (params[name].lr_mult, params[name].wd_mult) == (2.0, 0.0)
    for name in ('conv6a_weight', 'bn7_gamma', 'res4a_branch1_weight'):
        assert (params[name].lr_mult, params[name].wd_mult) == (1.0, 1.0)
