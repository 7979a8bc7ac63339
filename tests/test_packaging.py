"""Set-up facts: the models/ checksums command, the CUDA library preload, the pins."""
import hashlib
import os
import re
import subprocess
import sys

from rn38.checksums import read_checksums, verify_models
from rn38.cuda import SONAMES, find_cuda_libs
from conftest import REPO


def test_checksums_of_the_six_released_files():
    sums = read_checksums(os.path.join(REPO, 'models', 'checksum.md5'))
    assert sums == {
        'ade20k_rna-a1_cls150_s8_ep-0001.params': '1faf29850bfa194678f0b8e1cbbffa98',
        'cityscapes_rna-a1_cls19_s8_ep-0001.params': '226b3e861a6be7d0dc84e537f4eab154',
        'ilsvrc-cls_rna-a1_cls1000_ep-0001.params': 'ff21f45d6bf03284100dcbec571edfad',
        'ilsvrc-cls_rna-a_cls1000_ep-0001.params': '2421c1945b6797cecd3f89db14ca73f6',
        'voc_rna-a1_cls21_s8_coco_ep-0001.params': '328c0eca0c45b6345ada2f95edce68d4',
        'voc_rna-a1_cls21_s8_ep-0001.params': 'a34628a63d5f62dcb98c29c4e281f332'}


def test_verify_models_reports_ok_missing_and_corrupt(tmp_path):
    good, bad = b'released weights', b'truncated'
    (tmp_path / 'checksum.md5').write_text(
        '%s  a_ep-0001.params\n%s  b_ep-0001.params\n%s  c_ep-0001.params\n'
        % (hashlib.md5(good).hexdigest(), hashlib.md5(good).hexdigest(), '0' * 32))
    (tmp_path / 'a_ep-0001.params').write_bytes(good)
    (tmp_path / 'c_ep-0001.params').write_bytes(bad)
    status = {name: s for name, s, _ in verify_models(str(tmp_path))}
    assert status == {'a_ep-0001.params': 'ok', 'b_ep-0001.params': 'missing',
                      'c_ep-0001.params': 'corrupt'}
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'verify_models.py'),
                           '--models-dir', str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'missing: put the released file b_ep-0001.params at %s' % (tmp_path / 'b_ep-0001.params') \
        in proc.stdout
    assert re.search(r'c_ep-0001\.params: md5 [0-9a-f]{32}, expected 0{32}', proc.stdout)


def test_cuda_libraries_are_found_in_pip_layout(tmp_path):
    for component, soname in (('cuda_runtime', 'libcudart.so.11.0'), ('cudnn', 'libcudnn.so.8'),
                              ('cublas', 'libcublas.so.11')):
        d = tmp_path / 'nvidia' / component / 'lib'
        d.mkdir(parents=True)
        (d / soname).write_bytes(b'')
    (tmp_path / 'nvidia' / 'cudnn' / 'lib' / 'libcudnn.so.9').write_bytes(b'')
    found = find_cuda_libs([str(tmp_path)])
    assert set(found) == {'libcudart.so.11.0', 'libcudnn.so.8', 'libcublas.so.11'}
    assert found['libcudnn.so.8'].endswith(os.path.join('nvidia', 'cudnn', 'lib', 'libcudnn.so.8'))
    assert SONAMES.index('libcudart.so.11.0') < SONAMES.index('libcudnn.so.8')


def test_dependency_pins():
    text = open(os.path.join(REPO, 'setup.py')).read()
    assert "os.environ.get('RN38_MXNET', 'mxnet')" in text and "MXNET_DIST + '==1.9.1'" in text
    for pin in ("'numpy>=1.17,<1.24'", "'opencv-python<4.12'",
                "'gluoncv==0.10.5.post0'", "'mxnet-cu112==1.9.1'", "'nvidia-cudnn-cu11>=8.1,<9'"):
        assert pin in text
    import numpy
    import mxnet
    assert mxnet.__version__ == '1.9.1'
    assert tuple(int(p) for p in numpy.__version__.split('.')[:2]) < (1, 24)
