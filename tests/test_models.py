"""Networks and released weights: parity with the authors' networks, strict loading, names."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import iclass
import issegm
from rn38 import zoo
from rn38.families.padding import PaddedInput
from rn38.net import BN_EPS, stage_table, table_feat_stride
from rn38.params import (ParamsError, load_params, read_params, released_key, released_keys,
                         save_params)
from rn38.synthetic import manifest_entries, net_entries
from conftest import REF_DIR, reference_arrays

PARITY = [('ilsvrc-cls_rna-a_cls1000', iclass), ('ilsvrc-cls_rna-a1_cls1000', iclass),
          ('cityscapes_rna-a1_cls19_s8', issegm)]


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _task(label):
    return 'classification' if label.startswith('ilsvrc') else 'segmentation'


def _symbolic_output_shape(net, shape):
    """The network's output shape for an input ``shape``, inferred from its graph: nothing
    is allocated or computed (a full-size net needs ~0.5 GB and seconds to initialise)."""
    out = net(mx.sym.var('data'))
    return tuple(out.infer_shape(data=shape)[1][0])


@pytest.fixture(scope='module')
def loaded():
    nets = {}
    for label, _ in PARITY:
        # no random initialisation to overwrite; the released Model A's "caffe" pools
        net = zoo.build_model(label, _task(label), pool_style=zoo.default_pool_style(label))
        load_params(net, reference_arrays(label))
        nets[label] = net
    return nets


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybridized'])
@pytest.mark.parametrize('label', [p[0] for p in PARITY])
def test_parity_with_authors_network(loaded, label, hybridize):
    ref = np.load(os.path.join(REF_DIR, 'fwd_%s.npz' % label))
    net = loaded[label]
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    scores = net(mx.nd.array(ref['input'])).asnumpy()
    net.hybridize(False)
    assert scores.shape == ref['scores'].shape
    np.testing.assert_allclose(scores, ref['scores'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_softmax(scores, 1), ref['output'], rtol=1e-4, atol=1e-6)


def test_export_and_symbolblock_imports(loaded, tmp_path):
    label = 'ilsvrc-cls_rna-a1_cls1000'
    ref = np.load(os.path.join(REF_DIR, 'fwd_%s.npz' % label))
    net = loaded[label]
    net.hybridize()
    net(mx.nd.array(ref['input']))
    prefix = str(tmp_path / 'a1')
    net.export(prefix, epoch=1)
    net.hybridize(False)
    block = mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'],
                                         prefix + '-0001.params')
    scores = block(mx.nd.array(ref['input'])).asnumpy()
    np.testing.assert_allclose(scores, ref['scores'], rtol=1e-4, atol=1e-4)


def test_batchnorm_eps_is_the_released_one():
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    bns = []
    net.apply(lambda b: bns.append(b) if isinstance(b, mx.gluon.nn.BatchNorm) else None)
    assert len(bns) > 10
    assert {b._kwargs['eps'] for b in bns} == {1.001e-5} == {BN_EPS}


def test_synthetic_rule_matches_reference_checks():
    checks = json.load(open(os.path.join(REF_DIR, 'param_checks_salt0.json')))
    label = 'cityscapes_rna-a1_cls19_s8'
    per_key = checks['models'][label]['per_key']
    arrays = reference_arrays(label)
    assert sorted(per_key) == sorted(arrays)
    for key in per_key:
        total, first = per_key[key]
        value = arrays[key].asnumpy()
        assert abs(value.astype(np.float64).sum() - total) <= 1e-6 * max(1, abs(total)) + 1e-3
        assert value.ravel()[0] == np.float32(first)


@pytest.mark.parametrize('label', ['ilsvrc-cls_rna-a_cls1000', 'ilsvrc-cls_rna-a1_cls1000',
                                   'cityscapes_rna-a1_cls19_s8', 'voc_rna-a1_cls21_s8',
                                   'ade20k_rna-a1_cls150_s8'])
def test_names_and_shapes_equal_the_released_manifest(label):
    net = zoo.build_model(label, _task(label))
    net.infer_shape(mx.nd.zeros((1, 3, 64, 64)))  # shapes from the graph, nothing allocated
    assert not [name for name, p in net.collect_params().items() if p._data is not None]
    assert net_entries(net) == manifest_entries(
        os.path.join(REF_DIR, 'manifests', label + '.json'))


def test_released_key_mapping_is_one_to_one():
    assert released_key('bn7_running_mean') == 'aux:bn7_moving_mean'
    assert released_key('bn7_running_var') == 'aux:bn7_moving_var'
    assert released_key('bn7_gamma') == 'arg:bn7_gamma'
    assert released_key('conv6a_bias') == 'arg:conv6a_bias'
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')
    keys = released_keys(net)
    assert len(keys) == len(list(net.collect_params().keys()))


def _mini_arrays(tmp_path, label='cityscapes_rna-a1-mini_cls19_s8'):
    net = issegm.get_model(label)
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / ('%s_ep-0003.params' % label))
    save_params(net, path)
    return net, path


def test_save_load_roundtrip_and_format(tmp_path):
    net, path = _mini_arrays(tmp_path)
    raw = mx.nd.load(path)
    assert list(raw) == sorted(raw)
    assert all(k.startswith(('arg:', 'aux:')) for k in raw)
    assert 'aux:bn7_moving_var' in raw and 'arg:bn7_gamma' in raw
    other = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', pretrained=path)
    x = mx.nd.random.uniform(shape=(1, 3, 40, 56))
    np.testing.assert_array_equal(net(x).asnumpy(), other(x).asnumpy())
    assert not [f for f in os.listdir(tmp_path) if 'tmp' in f]


def _recording_nd_save(monkeypatch):
    """Replace ``mx.nd.save`` by one that records its ``(path, data)`` and then saves."""
    calls, real_save = [], mx.nd.save

    def recording(fname, data):
        calls.append((fname, data))
        real_save(fname, data)
    monkeypatch.setattr(mx.nd, 'save', recording)
    return calls


def test_checkpoint_passes_the_parameters_and_momenta_themselves_to_nd_save(tmp_path,
                                                                            monkeypatch):
    """On CPU the weights and momentum buffers are written without copying the model:
    ``mx.nd.save`` receives the parameters' and the optimizer's own NDArray objects."""
    from rn38.train import make_trainer, save_checkpoint
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', freeze_bn=True)
    trainer = make_trainer(net, 'sgd', {'learning_rate': 1e-3, 'momentum': 0.9})
    with autograd.record():
        loss = net(mx.nd.random.uniform(shape=(1, 3, 32, 32))).sum()
    loss.backward()
    trainer.step(1)
    calls = _recording_nd_save(monkeypatch)
    path = save_checkpoint(net, trainer, str(tmp_path), 'mini', 1)
    (_, states), (_, weights) = calls   # the optimizer state first, then the weights
    params = released_keys(net)
    assert sorted(weights) == sorted(params)
    assert all(weights[k] is p.data() for k, p in params.items())
    momenta = {p.name: trainer._updaters[0].states[i] for i, p in enumerate(trainer._params)
               if trainer._updaters[0].states.get(i) is not None}
    assert momenta and sorted(states) == sorted(momenta)
    assert all(states[n] is m for n, m in momenta.items())
    assert sorted(mx.nd.load(path)) == sorted(params)


def test_params_on_another_device_are_written_one_at_a_time_as_nd_save_would(tmp_path,
                                                                             monkeypatch):
    """Parameters not on cpu(0) (here cpu(1); on a machine with GPUs, the GPUs): no
    ``mx.nd.save`` of a whole-model copy; the file written array by array is
    byte-identical to ``mx.nd.save`` of the cpu(0) copies (MXNet's own writer)."""
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', ctx=mx.cpu(1))
    net(mx.nd.zeros((1, 3, 32, 32), ctx=mx.cpu(1)))
    params = released_keys(net)
    assert params['arg:conv1a_weight'].list_ctx() == [mx.cpu(1)]
    expected = str(tmp_path / 'expected.params')
    mx.nd.save(expected, {k: params[k].data().copyto(mx.cpu(0)) for k in sorted(params)})
    calls = _recording_nd_save(monkeypatch)
    path = str(tmp_path / 'mini_ep-0001.params')
    save_params(net, path)
    assert calls == []
    with open(path, 'rb') as ours, open(expected, 'rb') as theirs:
        assert ours.read() == theirs.read()
    assert not [f for f in os.listdir(tmp_path) if 'tmp' in f]


def test_params_on_another_device_have_one_host_copy_at_a_time(tmp_path, monkeypatch):
    """Writing from another device makes each array's host copy after the previous one
    was released: never a copy of the whole model."""
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', ctx=mx.cpu(1))
    net(mx.nd.zeros((1, 3, 32, 32), ctx=mx.cpu(1)))
    alive, most = set(), [0]
    real_copy, real_del = mx.nd.NDArray.as_in_context, mx.nd.NDArray.__del__

    def tracked_copy(self, context):
        out = real_copy(self, context)
        if out is not self:
            alive.add(id(out))
            most[0] = max(most[0], len(alive))
        return out

    def tracked_del(self):
        alive.discard(id(self))
        real_del(self)
    monkeypatch.setattr(mx.nd.NDArray, 'as_in_context', tracked_copy)
    monkeypatch.setattr(mx.nd.NDArray, '__del__', tracked_del)
    save_params(net, str(tmp_path / 'mini_ep-0001.params'))
    assert most[0] == 1 and not alive


def test_strict_loading_errors_name_file_and_key(tmp_path):
    net, path = _mini_arrays(tmp_path)
    arrays = read_params(path)

    def fresh():
        return issegm.get_model('cityscapes_rna-a1-mini_cls19_s8')

    missing = dict(arrays)
    del missing['arg:res3a_branch1_weight']
    p = str(tmp_path / 'missing.params')
    mx.nd.save(p, missing)
    with pytest.raises(ParamsError, match=r'missing\.params: missing key arg:res3a_branch1_weight'):
        load_params(fresh(), p)

    extra = dict(arrays, **{'arg:linear1000_weight': mx.nd.zeros((3, 3))})
    p = str(tmp_path / 'extra.params')
    mx.nd.save(p, extra)
    with pytest.raises(ParamsError, match=r'extra\.params: unexpected key arg:linear1000_weight'):
        load_params(fresh(), p)

    wrong = dict(arrays, **{'arg:conv1a_weight': mx.nd.zeros((16, 3, 5, 5))})
    p = str(tmp_path / 'wrong.params')
    mx.nd.save(p, wrong)
    with pytest.raises(ParamsError, match=r'wrong\.params: shape mismatch for arg:conv1a_weight: '
                                          r'file has \(16, 3, 5, 5\), model expects \(16, 3, 3, 3\)'):
        load_params(fresh(), p)

    with pytest.raises(ParamsError, match=r'nothere\.params: no such params file$'):
        load_params(fresh(), str(tmp_path / 'nothere.params'))
    released = str(tmp_path / 'cityscapes_rna-a1_cls19_s8_ep-0001.params')
    with pytest.raises(ParamsError, match=r"ep-0001\.params: no such params file; put the "
                                          r"authors' released cityscapes_rna-a1_cls19_s8_ep-0001"):
        read_params(released)
    junk = tmp_path / 'junk.params'
    junk.write_bytes(b'not a params file at all')
    with pytest.raises(ParamsError, match=r'junk\.params: not an MXNet params file'):
        load_params(fresh(), str(junk))
    empty = tmp_path / 'empty.params'
    empty.write_bytes(b'')
    with pytest.raises(ParamsError, match=r'empty\.params: not an MXNet params file \(.*'
                                          r'Invalid NDArray file format\)$') as err:
        load_params(fresh(), str(empty))
    assert 'Traceback' not in str(err.value)
    # a file of another label (19 vs 21 classes) is refused
    with pytest.raises(ParamsError, match=r'_ep-0003\.params: missing key arg:linear21_bias'):
        issegm.get_model('cityscapes_rna-a1-mini_cls21_s8', pretrained=path)


def test_imagenet_weights_into_segmentation_is_reported_partial_load(tmp_path):
    cls = iclass.get_model('ilsvrc-cls_rna-a1-mini_cls1000')
    cls(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / 'ilsvrc-cls_rna-a1-mini_cls1000_ep-0001.params')
    save_params(cls, path)
    seg = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', pretrained=path)
    report = seg.load_report
    assert report['ignored'] == ['arg:linear1000_bias', 'arg:linear1000_weight']
    assert report['skipped'] == ['arg:conv6a_bias', 'arg:conv6a_weight',
                                 'arg:linear19_bias', 'arg:linear19_weight']
    assert len(report['loaded']) == len(released_keys(seg)) - 4
    np.testing.assert_array_equal(seg.collect_params()['res4b1_branch2b1_weight'].data().asnumpy(),
                                  cls.collect_params()['res4b1_branch2b1_weight'].data().asnumpy())
    x = mx.nd.random.uniform(shape=(1, 3, 32, 32))
    assert np.isfinite(seg(x).asnumpy()).all()
    # the head is Xavier-initialised (not zero), its biases zero
    assert seg.collect_params()['linear19_weight'].data().abs().sum().asscalar() > 0
    assert seg.collect_params()['linear19_bias'].data().abs().sum().asscalar() == 0


@pytest.mark.parametrize('label', zoo.REGISTERED['segmentation'])
def test_every_registered_segmentation_label_builds(label):
    spec = zoo.parse_label(label)
    s = spec.feat_stride
    expected = (1, spec.classes, -(-45 // s), -(-70 // s))
    if 'mini' in label:
        net = issegm.get_model(label)
        assert net(mx.nd.zeros((1, 3, 45, 70))).shape == expected
    else:  # released size: the graph's shapes only
        net = zoo.build_model(label, 'segmentation')
        if isinstance(net, PaddedInput):  # imperative padding around a graph; the crop
            # back to ceil(H/s) is tested in test_families
            out = _symbolic_output_shape(net.inner, (1, 3, net.padded_size(45),
                                                     net.padded_size(70)))
            assert out[:2] == expected[:2] and out[2] >= expected[2] and out[3] >= expected[3]
        else:
            assert _symbolic_output_shape(net, (1, 3, 45, 70)) == expected
    assert net.feat_stride == spec.feat_stride


@pytest.mark.parametrize('label', zoo.REGISTERED['classification'])
def test_every_registered_classification_label_builds(label):
    spec = zoo.parse_label(label)
    if 'mini' in label:
        net = iclass.get_model(label)
        assert net(mx.nd.zeros((2, 3, 64, 64))).shape == (2, spec.classes)
    else:  # released size: the graph's shapes only
        net = zoo.build_model(label, 'classification')
        assert _symbolic_output_shape(net, (2, 3, 64, 64)) == (2, spec.classes)


def test_unknown_labels_list_the_valid_ones():
    with pytest.raises(ValueError, match='cityscapes_rna-a1_cls19_s8'):
        issegm.get_model('cityscapes_rna-b7_cls19_s8')
    with pytest.raises(ValueError, match='no feature stride 8'):
        issegm.get_model('cityscapes_rna-a_cls19_s8')
    with pytest.raises(ValueError, match='cannot parse'):
        issegm.get_model('resnet50')


def test_stage_tables_differ_in_rows_only():
    a, a1 = stage_table('a'), stage_table('a1')
    assert [r.down for r in a][:5] == ['pool'] * 5 and [r.down for r in a1][:5] == ['conv'] * 5
    assert [r._replace(down=None) for r in a] == [r._replace(down=None) for r in a1]
    s8 = stage_table('a1', 8, segmentation=True)
    assert [r.dilate for r in s8] == [False, False, False, True, True, False, False]
    assert (s8[5].dropout, s8[6].dropout) == (0.3, 0.5)
    assert [table_feat_stride(stage_table('a1', s)) for s in (8, 16, 32)] == [8, 16, 32]


def test_model_a_caffe_pooling_sizes():
    net = iclass.get_model('ilsvrc-cls_rna-a-mini_cls1000', pool_style='caffe')
    feat = net.features(mx.nd.zeros((1, 3, 96, 96)))
    assert feat.shape[2:] == (2, 2)  # 96 -> 47 -> 23 -> 11 -> 5 -> 2
    same = iclass.get_model('ilsvrc-cls_rna-a-mini_cls1000')      # a new Model A: pad 1
    assert same.features(mx.nd.zeros((1, 3, 96, 96))).shape[2:] == (3, 3)


def test_dilation_pattern_of_a1_s8():
    net = zoo.build_model('cityscapes_rna-a1_cls19_s8', 'segmentation')  # structure only
    convs = {}
    net.apply(lambda b: convs.__setitem__(b.prefix.rstrip('_'), b)
              if isinstance(b, mx.gluon.nn.Conv2D) else None)
    dil = {k: c._kwargs['dilate'][0] for k, c in convs.items()}
    stride = {k: c._kwargs['stride'][0] for k, c in convs.items()}
    assert dil['res5a_branch2a'] == 1 and dil['res5a_branch2b1'] == 2
    assert dil['res5b1_branch2a'] == 2 and dil['res5b2_branch2b1'] == 2
    assert dil['res6a_branch2b1'] == 4 and dil['res7a_branch2b1'] == 4
    assert dil['conv6a'] == 12 and dil['linear19'] == 12
    assert [k for k, s in stride.items() if s == 2] == ['res2a_branch2a', 'res2a_branch1',
                                                        'res3a_branch2a', 'res3a_branch1',
                                                        'res4a_branch2a', 'res4a_branch1']


@pytest.mark.parametrize('label,task', [('cityscapes_rna-a1-mini_cls19_s8', 'segmentation'),
                                        ('ilsvrc-cls_rna-a1-mini_cls1000', 'classification')])
def test_gradients_reach_every_parameter(label, task):
    net = zoo.get_model(label, task)
    x = mx.nd.random.uniform(shape=(2, 3, 48, 48))
    with autograd.record():
        loss = (net(x) ** 2).sum()
    loss.backward()
    for name, p in net.collect_params().items():
        if p.grad_req == 'null':
            assert 'running' in name
            continue
        assert p.grad().abs().sum().asscalar() > 0, name


def test_frozen_batchnorm_keeps_statistics():
    net = issegm.get_model('cityscapes_rna-a1-mini_cls19_s8', freeze_bn=True)
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    net(x)
    before = net.collect_params()['bn3a_branch2a_running_mean'].data().asnumpy().copy()
    with autograd.record():
        net(x).sum().backward()
    after = net.collect_params()['bn3a_branch2a_running_mean'].data().asnumpy()
    np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_saved_file_is_byte_identical_to_the_reference_rule(tmp_path):
    checks = json.load(open(os.path.join(REF_DIR, 'param_checks_salt0.json')))
    label = 'ilsvrc-cls_rna-a1_cls1000'
    net = zoo.build_model(label, 'classification')  # no random initialisation to overwrite
    load_params(net, reference_arrays(label))
    path = str(tmp_path / (label + '_ep-0001.params'))
    save_params(net, path)
    from rn38.checksums import md5sum
    entry = checks['models'][label]
    assert os.path.getsize(path) == entry['params_file_bytes']
    assert md5sum(path) == entry['params_file_md5']


# ----------------------------------------------------------------------------- Model A, s16

def _authors_model_a_fcn_s16(classes, widths, blocks, pool_pad):
    """The authors' Model A FCN at stride 16, transcribed from ademxapp
    ``util/symbol/resnet_v2.py`` (``rna_feat_a(16)``: levels 1-4 left by 3x3/2 max pools
    (pad 0 in their "caffe" style, else 1), level 5 by a 3x3 pool of stride 1 and pad 1
    after which the dilation doubles; no dropout) and ``fcn_top`` with their segmentation
    classifier (``conv6a`` 3x3 dilation 12 + relu, ``linear<C>`` 3x3 dilation 12, both
    with bias). ``widths``/``blocks``: per level 1..7 the conv widths and block counts."""
    S = mx.sym

    def conv(x, name, filters, kernel=3, stride=1, dilate=1, no_bias=True):
        dilate = 1 if kernel == 1 else dilate
        pad = ((kernel - 1) * dilate + 1) // 2
        extra = {} if no_bias else {'bias': S.Variable(name + '_bias')}
        return S.Convolution(x, weight=S.Variable(name + '_weight'), name=name,
                             kernel=(kernel, kernel), stride=(stride, stride),
                             dilate=(dilate, dilate), pad=(pad, pad), num_filter=filters,
                             no_bias=no_bias, **extra)

    def bn_relu(x, name):
        return S.Activation(S.BatchNorm(x, name=name, eps=1.001e-5, fix_gamma=False,
                                        use_global_stats=True), act_type='relu')

    def res_block(x, name, filters, kernels, dilate, identity):
        pre = bn_relu(x, 'bn%s_branch2a' % name)
        branch = conv(pre, 'res%s_branch2a' % name, filters[0], kernels[0], dilate=dilate)
        for i in range(1, len(filters)):
            sub = '%s_branch2b%d' % (name, i)
            branch = conv(bn_relu(branch, 'bn' + sub), 'res' + sub, filters[i], kernels[i],
                          dilate=dilate)
        if identity:
            return x + branch
        return conv(pre, 'res%s_branch1' % name, filters[-1], 1) + branch

    def pool(x, stride, pad):
        return S.Pooling(x, kernel=(3, 3), stride=(stride, stride), pad=(pad, pad),
                         pool_type='max')

    top = conv(S.Variable('data'), 'conv1a', widths[0][0])
    top = pool(top, 2, pool_pad)
    dilate = 1
    for level in range(2, 8):
        kernels = [1, 3, 1] if len(widths[level - 1]) == 3 else [3, 3]
        for i in range(blocks[level - 1]):
            name = '%da' % level if i == 0 else '%db%d' % (level, i)
            top = res_block(top, name, list(widths[level - 1]), kernels, dilate, i > 0)
        if level <= 4:
            top = pool(top, 2, pool_pad)
        elif level == 5:
            top = pool(top, 1, dilate)
            dilate *= 2
    top = bn_relu(top, 'bn7')
    top = S.Activation(conv(top, 'conv6a', 512, 3, dilate=12, no_bias=False),
                       act_type='relu')
    return conv(top, 'linear%d' % classes, classes, 3, dilate=12, no_bias=False)


_A_WIDTHS = [(64,), (128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048),
             (1024, 2048, 4096)]
_A_BLOCKS = [0, 3, 3, 6, 3, 1, 1]


def _our_symbol(net):
    net.hybridize()
    return net(mx.sym.var('data'))


def _pool_pad(net):
    """Padding of the stride-2 max pools of a Model A network (its pool convention)."""
    pads = set()
    net.apply(lambda b: pads.add(b._kwargs['pad'][0]) if isinstance(b, mx.gluon.nn.MaxPool2D)
              and b._kwargs['stride'][0] == 2 else None)
    assert len(pads) == 1 and pads <= {0, 1}
    return pads.pop()


def _named_shapes(sym, shape):
    args, _, auxs = sym.infer_shape(data=shape)
    named = dict(zip(sym.list_arguments(), args))
    named.update(zip(sym.list_auxiliary_states(), auxs))
    named.pop('data')
    return {k.replace('running_', 'moving_'): tuple(v) for k, v in named.items()}


def test_model_a_s16_fcn_names_shapes_and_stride_equal_the_authors_graph():
    shape = (1, 3, 512, 1024)
    net = zoo.build_model('cityscapes_rna-a_cls19_s16', 'segmentation')  # not initialised
    assert net.feat_stride == 16
    pad = _pool_pad(net)
    theirs = _authors_model_a_fcn_s16(19, _A_WIDTHS, _A_BLOCKS, pad)
    ours = _our_symbol(net)
    assert _named_shapes(ours, shape) == _named_shapes(theirs, shape)
    out = ours.infer_shape(data=shape)[1][0]
    assert out == theirs.infer_shape(data=shape)[1][0]
    size = [512, 1024]
    for _ in range(4):  # four 3x3/2 pools (floor), then only stride 1
        size = [(n + 2 * pad - 3) // 2 + 1 for n in size]
    assert out == (1, 19) + tuple(size)
    assert size == ([31, 63] if pad == 0 else [32, 64])
    # the backbone's names are the released Model A's, the head the released FCNs'
    released = {e['key'].split(':', 1)[1] for e in
                json.load(open(os.path.join(REF_DIR, 'manifests',
                                            'ilsvrc-cls_rna-a_cls1000.json')))}
    names = set(_named_shapes(ours, shape))
    assert names - released == {'conv6a_weight', 'conv6a_bias', 'linear19_weight',
                                'linear19_bias'}
    assert released - names == {'linear1000_weight', 'linear1000_bias'}


def test_model_a_s16_mini_computes_the_authors_graph():
    net = issegm.get_model('cityscapes_rna-a-mini_cls19_s16')
    table = stage_table('a-mini', 16, segmentation=True)
    assert all(r.dropout == 0 for r in table)  # their rna_feat_a has no dropout
    pad = _pool_pad(net)
    theirs = _authors_model_a_fcn_s16(19, [r.channels for r in table],
                                      [r.blocks for r in table], pad)
    x = mx.nd.random.uniform(shape=(1, 3, 130, 200))
    params = {k.replace('running_', 'moving_'): v.data()
              for k, v in net.collect_params().items()}
    for k, v in params.items():  # non-trivial BN statistics
        if k.endswith('moving_var'):
            v[:] = mx.nd.random.uniform(0.5, 2, shape=v.shape)
        elif k.endswith('moving_mean'):
            v[:] = mx.nd.random.normal(0, 0.1, shape=v.shape)
    exe = theirs.simple_bind(mx.cpu(), data=x.shape, grad_req='null')
    for k, arr in list(exe.arg_dict.items()) + list(exe.aux_dict.items()):
        arr[:] = x if k == 'data' else params[k]
    expected = exe.forward(is_train=False)[0].asnumpy()
    got = net(x).asnumpy()
    size = [130, 200]
    for _ in range(4):
        size = [(n + 2 * pad - 3) // 2 + 1 for n in size]
    assert got.shape == expected.shape == (1, 19) + tuple(size)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_model_a_s16_with_same_pools_has_stride_16_and_evaluates():
    from issegm.predictor import SegPredictor
    net = issegm.get_model('cityscapes_rna-a-mini_cls19_s16', pool_style='same')
    assert _pool_pad(net) == 1
    assert net(mx.nd.zeros((1, 3, 96, 160))).shape == (1, 19, 6, 10)
    image = np.random.RandomState(0).randint(0, 256, (50, 90, 3)).astype(np.uint8)
    probs = SegPredictor(net, scales=[90], flip=True, test_steps=2).predict_probs(image)
    assert probs.shape == (19, 50, 90)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-2)
