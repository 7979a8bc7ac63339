"""Installs the ResNet-38 ("Wider or Deeper") Gluon port: packages rn38, issegm, iclass."""
import os

from setuptools import setup, find_packages

# Which MXNet wheel: the CPU build by default. For GPUs install with
# RN38_MXNET=mxnet-cu112 pip install -e '.[gpu]' so the CPU wheel is not installed beside
# it (both provide the same `mxnet` module and would overwrite each other's files).
MXNET_DIST = os.environ.get('RN38_MXNET', 'mxnet')

# The CUDA 11 runtime that mxnet-cu112's libmxnet.so links against, from pip.
# cuDNN must stay on 8.x: nvidia-cudnn-cu11 9.x has other sonames.
GPU_REQUIRES = [
    'mxnet-cu112==1.9.1',
    'nvidia-cuda-runtime-cu11',
    'nvidia-cublas-cu11',
    'nvidia-cudnn-cu11>=8.1,<9',
    'nvidia-nccl-cu11',
    'nvidia-cufft-cu11',
    'nvidia-curand-cu11',
    'nvidia-cusolver-cu11',
    'nvidia-cuda-nvrtc-cu11',
    'nvidia-nvtx-cu11',
]

setup(
    name='rn38-gluon',
    version='0.1.0',
    description='ResNet-38 Model A / A1 (Wu, Shen, van den Hengel 2019) for MXNet Gluon: '
                'loads the released .params, segmentation and ImageNet tools',
    packages=find_packages(include=['rn38', 'rn38.*', 'issegm', 'issegm.*', 'iclass', 'iclass.*']),
    python_requires='>=3.8,<3.12',
    install_requires=[
        MXNET_DIST + '==1.9.1',
        'numpy>=1.17,<1.24',
        'opencv-python<4.12',
        'Pillow',
        'gluoncv==0.10.5.post0',
        'pyyaml',
        'cityscapesscripts',
        'scipy',
        'tqdm',
        'matplotlib',
    ],
    # The same commands as `python issegm/cityscapes.py` etc., on the PATH of the venv.
    entry_points={'console_scripts': [
        'rn38-cityscapes = issegm.cityscapes:main',
        'rn38-voc = issegm.voc:main',
        'rn38-ade20k = issegm.ade20k:main',
        'rn38-folder = issegm.folder:main',
        'rn38-predict = issegm.predict:main',
        'rn38-ilsvrc = iclass.ilsvrc:main',
        'rn38-verify-models = rn38.checksums:main',
    ]},
    extras_require={
        'test': ['pytest', 'pytest-timeout', 'pytest-xdist'],
        # ONNX export (scripts/export_onnx.py). onnxruntime 1.18.1 is the oldest release
        # for Python 3.11 whose metadata accepts numpy < 1.24 (1.15-1.18.0 ask numpy >=
        # 1.24.2); onnx 1.14.1 with protobuf 3 is what MXNet 1.9.1's exporter was used with.
        'export': ['onnx==1.14.1', 'onnxruntime==1.18.1', 'protobuf>=3.20.2,<4'],
        'gpu': GPU_REQUIRES,
    },
)
