"""rn38.recompute, rn38.devices, rn38.kvstore: segment recomputation, several devices,
kvstore settings.

Tolerances: gradients with recomputation vs without, float32, ``rtol=1e-4, atol=1e-6``
(in practice they are bitwise equal on CPU: the same ops run on the same inputs).
One device with the whole batch vs two CPU contexts: ``rtol=1e-4, atol=1e-6`` on the
gradients and ``rtol=1e-5, atol=1e-6`` on the updated weights (summation order differs).
"""
import itertools
import json
import os
import resource
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import iclass
import issegm
from rn38 import devices, kvstore, recompute

SEG = 'cityscapes_rna-a1-mini_cls19_s8'
CLS = 'ilsvrc-cls_rna-a1-mini_cls1000'
RTOL, ATOL = 1e-4, 1e-6


def seg_loss(scores, label):
    """Summed softmax CE over pixels with label >= 0; count = number of such pixels.

    scores ``(N, C, h, w)``, label ``(N, h, w)`` float (-1 = ignore).
    """
    flat = scores.transpose((0, 2, 3, 1)).reshape((-1, scores.shape[1]))
    lab = label.reshape((-1,))
    valid = lab >= 0
    logp = mx.nd.log_softmax(flat)
    picked = mx.nd.pick(logp, mx.nd.maximum(lab, 0), axis=1)
    return -(picked * valid).sum(), valid.sum()


def cls_loss(scores, label):
    """Summed softmax CE of samples with label >= 0 and their number. ``(N, C)``, ``(N,)``."""
    valid = label >= 0
    picked = mx.nd.pick(mx.nd.log_softmax(scores), mx.nd.maximum(label, 0), axis=1)
    return -(picked * valid).sum(), valid.sum()


def trainable(net):
    return {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}


def running(net):
    return {k: p for k, p in net.collect_params().items() if p.grad_req == 'null'}


def grads(net, ctx=None):
    return {k: p.grad(ctx).asnumpy().copy() for k, p in trainable(net).items()}


def values(params, ctx=None):
    return {k: p.data(ctx).asnumpy().copy() for k, p in params.items()}


def assert_all_close(a, b, rtol=RTOL, atol=ATOL):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def max_rel_diff(a, b):
    return max(np.abs(a[k] - b[k]).max() / (np.abs(b[k]).max() + 1e-12) for k in a)


def _net(get_model, label, seed, hybridize, **kwargs):
    mx.random.seed(seed)
    net = get_model(label, **kwargs)
    if hybridize:
        recompute.hybridize_for_training(net)      # as the trainers do
    return net


def seg_net(hybridize=False):
    return _net(issegm.get_model, SEG, 11, hybridize, freeze_bn=True)


def seg_batch(n=2, size=48):
    rs = np.random.RandomState(3)
    x = mx.nd.array(rs.standard_normal((n, 3, size, size)))
    out = -(-size // 8)
    y = mx.nd.array(rs.randint(-1, 19, (n, out, out)))
    return x, y


def cls_net(hybridize=False, freeze_bn=False):
    return _net(iclass.get_model, CLS, 12, hybridize, freeze_bn=freeze_bn)


def cls_batch(n=4, size=32):
    rs = np.random.RandomState(4)
    x = mx.nd.array(rs.standard_normal((n, 3, size, size)))
    y = mx.nd.array(rs.randint(0, 1000, (n,)))
    return x, y


def run(net, x, y, loss_fn, seed, **kw):
    mx.random.seed(seed)
    loss, count, outs = recompute.forward_backward(net, [x], [y], loss_fn, **kw)
    return loss, count, outs, grads(net)


# --------------------------------------------------------------------------- segments


@pytest.mark.parametrize('task', ['seg', 'cls'])
def test_units_compose_to_the_network_and_partition_its_parameters(task):
    net = seg_net() if task == 'seg' else cls_net()
    x = seg_batch()[0] if task == 'seg' else cls_batch()[0]
    units = recompute.stage_segments(net)
    y = x
    for u in units:
        y = u(y)
    np.testing.assert_array_equal(y.asnumpy(), net(x).asnumpy())
    owners = {}
    for i, u in enumerate(units):
        for name in u.collect_params():
            assert name not in owners, '%s in two units' % name
            owners[name] = i
    assert set(owners) == set(net.collect_params())
    # a plain block exposes no segments: forward_backward falls back to plain backward
    dense = gluon.nn.Dense(3, in_units=4)
    dense.initialize()
    assert recompute.stage_segments(dense) is None
    loss, count, _ = recompute.forward_backward(
        dense, [mx.nd.ones((2, 4))], [mx.nd.array([0, 1])], cls_loss, mirror=True)
    assert count == 2 and dense.weight.grad().abs().sum().asscalar() > 0


def test_plan_is_optimal_for_its_memory_model():
    net = seg_net()
    units = recompute.stage_segments(net)
    shape = (1, 3, 64, 64)
    costs = recompute.unit_costs(units, shape)
    plan = recompute.plan_segments(units, shape)
    starts = np.cumsum([0] + [len(s) for s in plan])[:-1].tolist()
    assert [u for s in plan for u in s] == units
    peak = recompute.plan_peak(costs, starts)
    best = min(recompute.plan_peak(costs, [0] + list(c))
               for r in range(len(units))
               for c in itertools.combinations(range(1, len(units)), r))
    assert peak == pytest.approx(best)
    plain = 2.0 * sum(c[1] for c in costs)
    assert peak < 0.5 * plain
    assert 1 < len(plan) < len(units)


# ------------------------------------------------------------------------ recomputation


@pytest.mark.parametrize('hybridize', [False, True])
def test_mirror_gradients_equal_plain_fcn_with_dropout(hybridize):
    """Segmentation net: dropout active (levels 6, 7), BatchNorm frozen."""
    net = seg_net(hybridize)
    assert any(recompute._has_dropout(u) for u in recompute.stage_segments(net))
    x, y = seg_batch()
    loss0, count0, out0, g0 = run(net, x, y, seg_loss, 5, mirror=False)
    for segments in (None, 2, len(recompute.stage_segments(net))):
        loss, count, out, g = run(net, x, y, seg_loss, 5, mirror=True, segments=segments)
        assert count == count0 and loss == pytest.approx(loss0, rel=1e-6)
        np.testing.assert_allclose(out[0].asnumpy(), out0[0].asnumpy(), rtol=RTOL, atol=ATOL)
        assert_all_close(g, g0)
    # the masks matter: another draw gives gradients far outside the tolerance, so a
    # recomputation with other masks than the first forward would fail the checks above
    _, _, _, g_other = run(net, x, y, seg_loss, 6, mirror=True)
    assert max_rel_diff(g_other, g0) > 1e-2


@pytest.mark.parametrize('hybridize', [False, True])
def test_mirror_gradients_and_running_stats_equal_plain_classifier_bn_training(hybridize):
    """Classifier: BatchNorm in training mode; running statistics updated exactly once."""
    x, y = cls_batch()
    results = []
    for mirror, segments in ((False, None), (True, None), (True, 3)):
        net = cls_net(hybridize)
        before = values(running(net))
        loss, count, out, g = run(net, x, y, cls_loss, 5, mirror=mirror, segments=segments)
        results.append((loss, count, g, values(running(net)), before))
    loss0, count0, g0, stats0, before = results[0]
    assert count0 == 4
    assert max(np.abs(stats0[k] - before[k]).max() for k in stats0) > 1e-3
    for loss, count, g, stats, _ in results[1:]:
        assert count == count0 and loss == pytest.approx(loss0, rel=1e-6)
        assert_all_close(g, g0)
        assert_all_close(stats, stats0)



@pytest.mark.parametrize('kernel,dilation,pad', [(3, 12, 12), (3, 2, 1), (3, 1, 2), (1, 1, 0)])
def test_conv_input_grad_equals_autograd(kernel, dilation, pad):
    """The head's input gradient (a forward convolution with flipped, transposed weights)
    equals MXNet's convolution backward, also with a padding other than 'same'."""
    conv = gluon.nn.Conv2D(7, kernel, padding=pad, dilation=dilation, in_channels=5)
    conv.initialize(mx.init.Normal(0.3))
    rs = np.random.RandomState(5)
    x = mx.nd.array(rs.standard_normal((2, 5, 17, 13)))
    x.attach_grad()
    with autograd.record():
        y = conv(x)
    dy = mx.nd.array(rs.standard_normal(y.shape))
    y.backward(dy)
    np.testing.assert_allclose(recompute._conv_input_grad(conv, dy).asnumpy(), x.grad.asnumpy(),
                               rtol=RTOL, atol=1e-5)


def test_mirror_fcn_head_outside_autograd_then_trainer_step():
    """The FCN head (conv, ReLU, conv) takes the head path of the recomputation; its
    parameter gradients count as fresh for ``Trainer.step``; a second step gives the
    gradients of the plain pass again (nothing stale is left from the first)."""
    net = seg_net(hybridize=True)
    units = recompute.stage_segments(net)
    assert recompute._head_layers(units[-1]) is not None
    assert recompute._head_layers(units[-2]) is None
    trainer = gluon.Trainer(trainable(net), 'sgd', {'learning_rate': 0.0}, kvstore=None)
    x, y = seg_batch()
    for _ in range(2):
        _, _, _, g = run(net, x, y, seg_loss, 5, mirror=True)
        trainer.step(1)
    _, _, _, g0 = run(net, x, y, seg_loss, 5, mirror=False)
    assert_all_close(g, g0)


# --------------------------------------------------------------------------- devices


def test_parse_devices():
    assert devices.parse_devices('') == [mx.cpu()]
    assert devices.parse_devices('cpu') == [mx.cpu()]
    assert devices.parse_devices('0,1') == [mx.gpu(0), mx.gpu(1)]
    assert devices.parse_devices('cpu:2') == [mx.cpu(0), mx.cpu(1)]
    assert devices.parse_devices('cpu0,cpu1') == [mx.cpu(0), mx.cpu(1)]
    assert devices.parse_devices('gpu:2') == [mx.gpu(0), mx.gpu(1)]
    for bad in ('x', 'cpu:0', '0,0', 'gpu-1'):
        with pytest.raises(ValueError):
            devices.parse_devices(bad)


def test_split_batch():
    ctx = [mx.cpu(0), mx.cpu(1), mx.cpu(2)]
    data = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    label = np.arange(7, dtype=np.float32)
    xs, ys = devices.split_batch(data, label, ctx)
    assert [x.shape[0] for x in xs] == [3, 2, 2]
    assert [x.context for x in xs] == ctx and [y.context for y in ys] == ctx
    np.testing.assert_array_equal(np.concatenate([x.asnumpy() for x in xs]), data)
    np.testing.assert_array_equal(np.concatenate([y.asnumpy() for y in ys]), label)
    xs, ys = devices.split_batch(mx.nd.array(data[:4]), None, ctx[:2])
    assert [x.shape[0] for x in xs] == [2, 2] and ys == [None, None]
    with pytest.raises(ValueError, match='smaller than'):
        devices.split_batch(data[:2], label[:2], ctx)


@pytest.mark.parametrize('kind', ['local', 'device'])
@pytest.mark.parametrize('mirror', [False, True])
def test_two_cpu_devices_give_the_update_of_one_device(kind, mirror):
    """Frozen-BN classifier; one ignored label so the slices have different counts (1 and
    2): a per-device mean instead of the global normalisation would fail."""
    x, y = cls_batch(4)
    y[1] = -1
    results = []
    for ctx in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        net = cls_net(freeze_bn=True)
        net.collect_params().reset_ctx(ctx)
        store, update_on_kvstore = kvstore.make_kvstore(kind, len(ctx))
        assert (store is None) == (len(ctx) == 1)
        trainer = gluon.Trainer(trainable(net), 'sgd',
                                {'learning_rate': 0.5, 'momentum': 0.9, 'wd': 1e-4},
                                kvstore=store, update_on_kvstore=update_on_kvstore)
        xs, ys = devices.split_batch(x, y, ctx)
        loss, count, outs = recompute.forward_backward(net, xs, ys, cls_loss, mirror=mirror)
        assert count == 3 and len(outs) == len(ctx)
        g = {k: sum(p.grad(c).asnumpy() for c in ctx) for k, p in trainable(net).items()}
        trainer.step(1)
        results.append((loss, g, [values(trainable(net), c) for c in ctx], values(
            trainable(net), ctx[0])))
    (loss1, g1, _, w1), (loss2, g2, w2_all, _) = results
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    assert_all_close(g2, g1)
    before = values(trainable(cls_net(freeze_bn=True)))
    assert max(np.abs(w1[k] - before[k]).max() for k in w1) > 1e-3   # the step did move
    for w in w2_all:
        assert_all_close(w, w1, rtol=1e-5, atol=1e-6)


def test_make_kvstore():
    assert tuple(kvstore.make_kvstore('device', 1)) == (None, None)
    store, update_on_kvstore = kvstore.make_kvstore('local', 2)
    assert store.type == 'local' and update_on_kvstore is False
    with pytest.raises(ValueError, match='unknown kvstore'):
        kvstore.make_kvstore('nccl2', 2)
    assert kvstore.step_scale(None) == 1 and kvstore.worker_info(store) == (0, 1)


class ForwardUpdatingBN(gluon.nn.BatchNorm):
    """BatchNorm that updates its running statistics in the forward pass (as cuDNN does),
    not in the backward (as MXNet 1.9 on CPU does). Not hybridizable; for the test below."""

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        if autograd.is_training():
            with autograd.pause():
                m = self._kwargs['momentum']
                mean = x.mean(axis=(0, 2, 3))
                var = (x * x).mean(axis=(0, 2, 3)) - mean * mean
                running_mean[:] = m * running_mean + (1 - m) * mean
                running_var[:] = m * running_var + (1 - m) * var
        # the op's own (backward-time) update goes to throw-away copies
        return F.BatchNorm(x, gamma, beta, running_mean.copy(), running_var.copy(),
                           name='fwd', **self._kwargs)


class TinyNet(gluon.HybridBlock):
    """``features.stages`` + ``head`` like ResNet38FCN: (N, 3, H, W) -> (N, 4, H, W)."""

    def __init__(self, bn_class):
        super().__init__(prefix='tiny_')
        with self.name_scope():
            self.features = gluon.nn.HybridSequential()
            with self.features.name_scope():
                self.features.stages = gluon.nn.HybridSequential()
            for c_in, c in ((3, 8), (8, 8), (8, 8)):
                self.features.stages.add(gluon.nn.Conv2D(c, 3, padding=1, in_channels=c_in),
                                         bn_class(in_channels=c))
            self.head = gluon.nn.Conv2D(4, 1, in_channels=8)

    def hybrid_forward(self, F, x):
        return self.head(self.features.stages(x))


@pytest.mark.parametrize('bn_class', [gluon.nn.BatchNorm, ForwardUpdatingBN])
def test_running_stats_updated_once_whether_forward_or_backward_updates_them(bn_class):
    x = seg_batch(2, 8)[0]
    y = mx.nd.array(np.random.RandomState(0).randint(0, 4, (2, 8, 8)))
    stats, grads_ = [], []
    for mirror in (False, True):
        mx.random.seed(3)
        net = TinyNet(bn_class)
        net.initialize(mx.init.Xavier())
        before = values(running(net))
        recompute.forward_backward(net, [x], [y], seg_loss, mirror=mirror, segments=3)
        stats.append(values(running(net)))
        grads_.append(grads(net))
    assert max(np.abs(stats[0][k] - before[k]).max() for k in before) > 1e-3
    assert_all_close(stats[1], stats[0])
    assert_all_close(grads_[1], grads_[0])


# ------------------------------------------------------------ OHEM over several devices


def authors_ohem_mask(prob_true, label, thresh, min_kept, ignore_label=255):
    """The selection of the authors' ``OhemSoftmax.backward`` (ademxapp
    ``util/symbol/layer.py``) on one device, transcribed: all valid pixels if ``min_kept >=
    num_valid``; else those whose true-class probability is <= the threshold, the threshold
    raised to the ``min_kept``-th smallest probability when that one is above ``thresh``.
    ``prob_true``, ``label``: flat numpy arrays. Returns a float mask."""
    valid_flag = label != ignore_label
    valid_inds = np.where(valid_flag)[0]
    num_valid = valid_flag.sum()
    if min_kept < num_valid and num_valid > 0:
        pred = prob_true[valid_flag]
        threshold = thresh
        if min_kept > 0:
            index = pred.argsort()
            threshold_index = index[min(len(index), min_kept) - 1]
            if pred[threshold_index] > thresh:
                threshold = pred[threshold_index]
        valid_inds = valid_inds[pred <= threshold]
    mask = np.zeros(label.shape, np.float32)
    mask[valid_inds] = 1
    return mask


def authors_seg_gradients(net, x_slices, y_slices, thresh, min_kept, global_count=False):
    """The authors' multi-device segmentation gradient, computed on one context: per device
    d, ``-sum(log p_kept) / max(1, kept_d)`` (their OHEM layer's ``y *= 1. / max(1,
    len(label))``); the kvstore sums the devices and ``rescale_grad = 1 / num_devices``
    averages them. Returns ({name: grad}, [kept_d]).
    ``global_count``: divide by the kept count summed over devices instead (not theirs)."""
    kept_counts, num_devices = [], len(x_slices)
    losses = []
    with autograd.record():
        for x, y in zip(x_slices, y_slices):
            scores = net(x)
            n, c = scores.shape[:2]
            logp = mx.nd.log_softmax(scores.reshape((n, c, -1)), axis=1)
            lab = y.reshape((n, -1))
            picked = mx.nd.pick(logp, mx.nd.where(lab == 255, mx.nd.zeros_like(lab), lab),
                                axis=1)
            mask = authors_ohem_mask(np.exp(picked.asnumpy()).ravel(), lab.asnumpy().ravel(),
                                     thresh, min_kept).reshape(lab.shape)
            kept_counts.append(int(mask.sum()))
            losses.append(-(picked * mx.nd.array(mask)).sum())
        if global_count:
            total = sum(losses) / sum(kept_counts)
        else:
            total = sum(l / max(1, k) / num_devices for l, k in zip(losses, kept_counts))
    total.backward()
    return grads(net), kept_counts


def no_dropout(net):
    def off(block):
        if isinstance(block, gluon.nn.Dropout):
            block._rate = 0.0
    net.apply(off)
    return net


@pytest.mark.parametrize('mirror', [False, True])
def test_two_devices_ohem_equals_the_authors_per_device_normalisation(mirror):
    """min_kept binds on device 1 only (its labels are the most probable classes, so no
    pixel is under the threshold there), so the kept counts differ (21 and 12 here): the
    update must be the mean over devices of each device's own normalised gradient, which
    differs from the global normalisation (checked, so the test can fail)."""
    from issegm.train import BootstrappedSoftmaxLoss
    ctx = [mx.cpu(0), mx.cpu(1)]
    x, _ = seg_batch(2)
    ref_net = no_dropout(seg_net())
    scores = mx.nd.softmax(ref_net(x), axis=1).asnumpy().reshape((2, 19, -1))
    rs = np.random.RandomState(8)
    y = np.stack([rs.randint(0, 19, scores.shape[2]), scores[1].argmax(0)]).astype(np.float32)
    y[0, :3] = 255
    p_true = np.take_along_axis(scores, y.astype(np.int64).clip(0, 18)[:, None], 1)[:, 0]
    thresh = float(np.percentile(p_true[0][y[0] != 255], 60))
    min_kept = 12
    assert (p_true[1] <= thresh).sum() < min_kept <= (p_true[0][y[0] != 255] <= thresh).sum()
    y = mx.nd.array(y)
    xs, ys = [x[:1], x[1:]], [y[:1], y[1:]]
    want, kept = authors_seg_gradients(ref_net, xs, ys, thresh, min_kept)
    assert kept[1] == min_kept and kept[0] > min_kept

    net = no_dropout(seg_net())
    net.collect_params().reset_ctx(ctx)
    store, update_on_kvstore = kvstore.make_kvstore('device', len(ctx))
    trainer = gluon.Trainer(trainable(net), 'sgd', {'learning_rate': 0.1, 'wd': 0.0},
                            kvstore=store, update_on_kvstore=update_on_kvstore)
    criterion = BootstrappedSoftmaxLoss(thresh=thresh, min_kept=min_kept)
    xs, ys = devices.split_batch(x, y, ctx)
    _, count, _ = recompute.forward_backward(net, xs, ys, criterion, mirror=mirror)
    assert count == sum(kept)
    got = {k: sum(p.grad(c).asnumpy() for c in ctx) for k, p in trainable(net).items()}
    assert_all_close(got, want)
    # the global normalisation (summed kept count) is a different update here
    other, _ = authors_seg_gradients(no_dropout(seg_net()), [x[:1], x[1:]], [y[:1], y[1:]],
                                     thresh, min_kept, global_count=True)
    assert max_rel_diff(other, want) > 1e-2
    before = values(trainable(net), ctx[0])
    trainer.step(1)
    for c in ctx:
        after = values(trainable(net), c)
        assert_all_close(after, {k: before[k] - 0.1 * want[k] for k in want},
                         rtol=1e-5, atol=1e-6)


def test_two_devices_resumed_run_equals_uninterrupted(tmp_path):
    """issegm/cityscapes.py on two CPU contexts (per-device OHEM normalisation; with 36
    label cells per crop min_kept=256 binds on every device and the devices keep different
    counts of valid pixels): stopping after epoch 1 and resuming gives the weights of the
    uninterrupted run."""
    from issegm import cli
    from rn38.params import read_params
    from conftest import make_demo_dataset
    root = str(tmp_path / 'data')
    make_demo_dataset(root, seed=1, train=8, val=0, height=64, width=128)
    label = 'cityscapes_rna-a1-mini_cls19_s8'

    def argv(out, *extra):
        return ['--phase', 'train', '--data-root', root, '--model', label,
                '--output', str(out), '--batch-images', '4', '--crop-size', '48',
                '--origin-size', '128', '--base-lr', '0.02', '--to-epoch', '2',
                '--no-progress', '--gpus', 'cpu:2', '--kvstore', 'local',
                '--prefetch-threads', '1'] + list(extra)

    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert cli.main('cityscapes', argv(straight)) == 0
    assert cli.main('cityscapes', argv(split, '--stop-epoch', '1')) == 0
    first = str(split / ('%s_ep-0001.params' % label))
    assert cli.main('cityscapes', argv(split, '--weights', first)) == 0
    a = read_params(str(straight / ('%s_ep-0002.params' % label)))
    b = read_params(str(split / ('%s_ep-0002.params' % label)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)

# --------------------------------------------------------------- memory settings of the trainers


def _spy_on_units(monkeypatch):
    """Record, at every training step, each recomputation unit's hybridization state."""
    seen = []
    real = recompute.forward_backward

    def spy(net, data_list, label_list, loss_fn, mirror=False, segments=None):
        result = real(net, data_list, label_list, loss_fn, mirror=mirror, segments=segments)
        seen.append((mirror, [(u.name, u._active, dict(u._flags))
                              for u in recompute.stage_segments(net)]))
        return result

    monkeypatch.setattr(recompute, 'forward_backward', spy)  # rn38.train.fit looks it up per call
    return seen


def _assert_hybridized_without_static_buffers(seen):
    """Every unit run by the trainer is a hybridized CachedOp that does not keep its
    buffers: with ``static_alloc`` each unit's CachedOp holds its forward and backward
    memory for the life of the process, so recomputing a segment would free nothing."""
    assert seen and all(mirror for mirror, _ in seen)
    for _, units in seen:
        for name, active, flags in units:
            assert active, '%s runs imperatively' % name
            assert not flags.get('static_alloc') and not flags.get('static_shape'), (name, flags)


def test_segmentation_entry_trains_hybridized_mirror_without_static_buffers(tmp_path,
                                                                           monkeypatch):
    from conftest import make_demo_dataset
    from issegm import cli
    root, out = str(tmp_path / 'data'), tmp_path / 'out'
    make_demo_dataset(root, seed=1, train=2, val=1, height=64, width=128)
    seen = _spy_on_units(monkeypatch)
    for key in ('MXNET_CPU_TEMP_COPY', 'MXNET_ENGINE_TYPE'):
        monkeypatch.delenv(key, raising=False)          # the entry sets them; undone after
    argv = ['--phase', 'train', '--data-root', root, '--model', SEG, '--output', str(out),
            '--batch-images', '1', '--crop-size', '48', '--origin-size', '128', '--to-epoch', '1',
            '--no-progress', '--gpus', 'cpu', '--backward-do-mirror']
    assert cli.main('cityscapes', argv) == 0
    _assert_hybridized_without_static_buffers(seen)
    assert len(seen) == 2
    # the memory record of the epoch: this process's peak RSS, in history.json and the log
    record = json.load(open(out / 'history.json'))['epochs'][0]
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    assert 50 < record['peak_rss_mib'] <= own_peak
    assert 'gpu_memory_mib' not in record
    log = open(out / (SEG + '.log')).read()
    assert 'peak RSS %.0f MiB' % record['peak_rss_mib'] in log


def test_classification_trainer_hybridized_mirror_without_static_buffers(tmp_path,
                                                                        monkeypatch):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_imagenet import make_imagenet
    from iclass import train as T
    root = str(tmp_path / 'data')
    make_imagenet(root, classes=5, per_class=1)
    seen = _spy_on_units(monkeypatch)
    monkeypatch.delenv('MXNET_CPU_TEMP_COPY', raising=False)
    cfg = T.Config(phase='train', data_root=root, split='train', output=str(tmp_path / 'out'),
                   model='demo-cls_rna-a1-mini_cls5', crop_size=32, batch_images=2,
                   to_epoch=1, progress=False, backward_do_mirror=True)
    history = T.train(cfg)
    _assert_hybridized_without_static_buffers(seen)
    assert history['epochs'][0]['peak_rss_mib'] > 50


def test_configure_mxnet_keeps_user_values():
    from rn38.runtime import configure_mxnet
    env = {'MXNET_CPU_TEMP_COPY': '3'}
    assert configure_mxnet(debug=True, mirror=True, environ=env) == \
        {'MXNET_ENGINE_TYPE': 'NaiveEngine'}
    assert env == {'MXNET_CPU_TEMP_COPY': '3', 'MXNET_ENGINE_TYPE': 'NaiveEngine'}
    assert configure_mxnet(environ={}) == {}


def test_import_sets_nothing_and_settings_apply_after_import():
    """Importing the packages with the entries' flags on the command line changes no
    MXNet setting; configure_mxnet after ``import mxnet`` (before any operation) does take
    effect: MXNet logs that it starts the NaiveEngine (read at first use, not at import)."""
    code = ("import os, sys; sys.argv[1:] = ['--debug', '--backward-do-mirror']\n"
            "import mxnet as mx, rn38, issegm, iclass, issegm.cli, iclass.train\n"
            "print(os.environ.get('MXNET_ENGINE_TYPE'), os.environ.get('MXNET_CPU_TEMP_COPY'))\n"
            "from rn38.runtime import configure_mxnet\n"
            "configure_mxnet(debug=True)\n"
            "print(mx.nd.ones((2,)).sum().asscalar())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith('MXNET_')}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = repo
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, cwd=repo, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['None', 'None', '2.0']
    assert 'start using engine: NaiveEngine' in proc.stderr


def test_epoch_memory_record_on_gpus_reads_mxnets_device_figure(monkeypatch):
    """The GPU branch (not runnable here): per device, total - free of MXNet's own query."""
    from rn38.train import peak_memory_mib
    info = {0: (3 * 2 ** 30, 12 * 2 ** 30), 1: (10 * 2 ** 30, 12 * 2 ** 30)}
    monkeypatch.setattr(mx.context, 'gpu_memory_info', lambda device_id=0: info[device_id])
    record = peak_memory_mib([mx.gpu(0), mx.gpu(1)])
    assert record['gpu_memory_mib'] == [9 * 1024.0, 2 * 1024.0]
    assert 0 < record['peak_rss_mib'] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def test_entry_sets_mxnet_from_its_options(tmp_path):
    """`issegm/cityscapes.py --debug` reaches MXNet (synchronous engine) through the options,
    with no MXNet variable in the environment."""
    from conftest import make_demo_dataset, REPO
    root = str(tmp_path / 'data')
    make_demo_dataset(root, seed=1, train=1, val=1, height=64, width=128)
    env = {k: v for k, v in os.environ.items() if not k.startswith('MXNET_')}
    cmd = [sys.executable, os.path.join(REPO, 'issegm', 'cityscapes.py'), '--phase', 'train',
           '--data-root', root, '--model', SEG, '--output', str(tmp_path / 'out'),
           '--batch-images', '1', '--crop-size', '48', '--origin-size', '128', '--to-epoch', '1',
           '--no-progress', '--gpus', 'cpu', '--debug']
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'start using engine: NaiveEngine' in proc.stderr
    assert 'peak RSS' in proc.stdout + proc.stderr
