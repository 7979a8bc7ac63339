"""Set-up facts: the models/ checksums command, the CUDA library preload, the pins, the
declared dependencies and constraints, the entry files and console commands, the layering
of the packages."""
import glob
import hashlib
import importlib
import os
import re
import subprocess
import sys
import warnings

import pytest

from conftest import REPO, load_script
from rn38.checksums import read_checksums, verify_models
from rn38.cuda import SONAMES, find_cuda_libs


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


def setup_keywords():
    """The keywords setup.py gives ``setuptools.setup`` (setup.py run, nothing installed)."""
    import runpy
    from unittest import mock

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "Setuptools is replacing distutils"
        import setuptools
    given = {}
    with mock.patch.object(setuptools, 'setup', lambda **kw: given.update(kw)):
        runpy.run_path(os.path.join(REPO, 'setup.py'))
    return given


def imported_top_modules(folders):
    """``{top-level module: [files]}`` imported (absolutely) by the .py files in ``folders``."""
    import ast
    found = {}
    for folder in folders:
        for name in sorted(os.listdir(os.path.join(REPO, folder))):
            if not name.endswith('.py'):
                continue
            path = os.path.join(REPO, folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for module in names:
                    found.setdefault(module.split('.')[0], []).append(folder + '/' + name)
    return found


def test_every_imported_distribution_is_declared():
    """Third-party imports of the packages are install_requires, of the scripts also the
    export extra, of the tests also the test extra; which distribution provides a module comes from the
    installed metadata (importlib.metadata), not from this project."""
    from importlib.metadata import packages_distributions
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    dist = setup_keywords()
    declared = {canonicalize_name(Requirement(r).name) for r in dist['install_requires']}
    test_extra, export_extra = ({canonicalize_name(Requirement(r).name)
                                 for r in dist['extras_require'][extra]}
                                for extra in ('test', 'export'))
    providers = packages_distributions()
    local = {'rn38', 'issegm', 'iclass'} | {
        n[:-3] for d in ('scripts', 'tests') for n in os.listdir(os.path.join(REPO, d))}
    tools = {'pip', 'setuptools'}  # what `python -m venv` installs (Python 3.8-3.11)
    # the export extra (onnx, onnxruntime) serves the export and benchmark scripts only
    for folders, allowed in ((('rn38', 'issegm', 'iclass'), declared | tools),
                             (('scripts',), declared | export_extra | tools),
                             (('tests',), declared | test_extra | export_extra | tools)):
        for module, files in imported_top_modules(folders).items():
            if module in sys.stdlib_module_names or module in local:
                continue
            assert module in providers, '%s (imported by %s) is not installed' % (module, files)
            dists = {canonicalize_name(d) for d in providers[module]}
            assert dists & allowed, '%s (imported by %s) comes from %s, not declared in ' \
                'setup.py' % (module, files[0], ', '.join(sorted(dists)))
    assert 'pillow' in declared  # PIL: used directly, not only through matplotlib


def test_constraints_pin_what_the_tests_run_with():
    """constraints.txt (`make constraints`) pins every distribution setup.py pulls in with the
    test extra, at exactly the version installed here."""
    from importlib.metadata import version
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    pins = {}
    for line in open(os.path.join(REPO, 'constraints.txt')):
        if line.strip() and not line.startswith('#'):
            req = Requirement(line.strip())
            if req.marker is None or req.marker.evaluate():
                pins[canonicalize_name(req.name)] = (req.name, str(req.specifier))
    if not pins:
        pytest.skip('constraints.txt pins nothing for this Python version')
    freeze = load_script('freeze_constraints')
    needed = freeze.pinned_closure(freeze.PROJECT, ('test',))
    assert sorted(set(needed) - set(pins)) == [], 'unpinned: run `make constraints`'
    for key, (name, spec) in pins.items():
        assert spec == '==' + version(name), \
            '%s %s installed, constraints.txt has %s: run `make venv` or `make constraints`' \
            % (name, version(name), spec)


ENTRY_FILES = ('issegm/cityscapes.py', 'issegm/voc.py', 'issegm/ade20k.py', 'issegm/predict.py',
               'iclass/ilsvrc.py')


def run_all(commands, cwd):
    """Runs the commands side by side; ``[(returncode, stdout, stderr)]``."""
    procs = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    return [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=120)]]


def option_helps(help_text):
    """``{option: its help text}`` of an argparse ``--help`` output."""
    helps, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r'  (-[-\w]+)', line)
        if match:
            current = match.group(1)
            helps[current] = line
        elif current and line.startswith('   '):
            helps[current] += ' ' + line.strip()
        else:
            current = None
    return helps


def test_entry_files_run_from_anywhere_and_state_each_default_once(tmp_path):
    """`python issegm/cityscapes.py --help` (and the other entry files) from another folder:
    the installed packages are found without any path edit in the code, and each option's
    help states its default at most once, never as None."""
    results = run_all([[sys.executable, os.path.join(REPO, f), '--help'] for f in ENTRY_FILES],
                      str(tmp_path))
    for path, (code, out, err) in zip(ENTRY_FILES, results):
        assert code == 0 and out.startswith('usage: %s' % os.path.basename(path)), (path, err)
        for option, text in option_helps(out).items():
            assert text.count('default') <= 1 and '(default: None)' not in text, (path, text)
    helps = option_helps(results[0][1])
    assert helps['--to-epoch'].endswith('epochs the schedule spans (default: 140)')
    assert helps['--batch-images'].endswith('(default: 16)')
    assert helps['--split'].endswith('(default: train for --phase train, val for --phase val)')
    assert helps['--test-flipping'].endswith('(alone: 1; default: 1, the published protocol)')
    assert 'default' not in helps['--weights']
    # the same flag names for the same things (iclass keeps its old --wd as an alias)
    assert option_helps(results[4][1])['--weight-decay'].endswith('(default: 0.0001)')
    assert '--wd WEIGHT_DECAY' in option_helps(results[4][1])['--weight-decay']
    assert helps['--weight-decay'].endswith('(default: 0.0005)')
    edits = re.compile(r'sys\.path(\.insert|\.append|\[[^\]]*\]\s*=)')
    for folder in ('rn38', 'issegm', 'iclass', 'scripts'):
        for name in os.listdir(os.path.join(REPO, folder)):
            if name.endswith('.py'):
                assert not edits.search(open(os.path.join(REPO, folder, name)).read()), name


def test_entry_folders_shadow_no_module():
    """Run as files, the entries put issegm/ (or iclass/) first on sys.path, where
    datasets.py, train.py, data.py... could hide a library's module of the same name: after
    importing everything a run uses, no top-level module comes from those folders."""
    folders = [os.path.join(REPO, 'issegm'), os.path.join(REPO, 'iclass')]
    code = '\n'.join([
        'import importlib, os, sys',
        'sys.path[:0] = %r' % folders,
        'for m in ("issegm.cli", "issegm.train", "issegm.evaluate", "issegm.predict",',
        '          "iclass.train", "iclass.ilsvrc", "matplotlib.pyplot", "rn38.train",',
        '          "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"):',
        '    importlib.import_module(m)',
        'from issegm.datasets import get_dataset_spec',
        'for name in ("cityscapes", "voc", "ade20k"):',
        '    get_dataset_spec(name)',
        'for name, module in list(sys.modules.items()):',
        '    path = os.path.abspath(getattr(module, "__file__", None) or "/")',
        '    if any(path == os.path.join(f, name + ".py") for f in sys.path[:2]):',
        '        print(name)'])
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_console_commands_are_the_entries():
    """setup.py's console scripts name the entries' main functions, and the installed
    commands (`rn38-cityscapes --help`, ...) run them."""
    scripts = setup_keywords()['entry_points']['console_scripts']
    targets = dict(re.match(r'([\w-]+) = ([\w.]+):main$', s).groups() for s in scripts)
    assert targets == {'rn38-cityscapes': 'issegm.cityscapes', 'rn38-voc': 'issegm.voc',
                       'rn38-ade20k': 'issegm.ade20k', 'rn38-folder': 'issegm.folder',
                       'rn38-predict': 'issegm.predict',
                       'rn38-ilsvrc': 'iclass.ilsvrc', 'rn38-verify-models': 'rn38.checksums'}
    bindir = os.path.dirname(sys.executable)
    missing = [c for c in targets if not os.path.isfile(os.path.join(bindir, c))]
    assert not missing, '%s not installed in %s: run `make venv`' % (missing, bindir)
    for module in targets.values():
        assert callable(importlib.import_module(module).main)
    run = ['rn38-cityscapes', 'rn38-verify-models']  # a segmentation entry, the checksums
    results = run_all([[os.path.join(bindir, c), '--help'] for c in run], REPO)
    for command, (code, out, err) in zip(run, results):
        assert code == 0 and out.startswith('usage: %s' % command), (command, err)



def test_the_library_imports_no_application():
    """rn38/ is the library both tasks build on: no file in it (sub-packages included)
    imports issegm or iclass, not even inside a function."""
    folders = sorted({os.path.relpath(os.path.dirname(f), REPO) for f in glob.glob(
        os.path.join(REPO, 'rn38', '**', '*.py'), recursive=True)})
    assert 'rn38' in folders and os.path.join('rn38', 'families') in folders
    found = imported_top_modules(folders)
    assert 'mxnet' in found  # the scan sees the imports
    assert {m: files for m, files in found.items() if m in ('issegm', 'iclass')} == {}
