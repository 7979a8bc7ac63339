"""The configuration of a segmentation run (train or val): one dataclass, built from the
command line by :func:`issegm.cli.make_config` and saved with the results."""
import dataclasses
from typing import Optional, Tuple

from rn38.config import RunConfig


@dataclasses.dataclass
class SegConfig(RunConfig):
    """Options of ``issegm/<dataset>.py`` (see ``--help``), with what the user left out
    derived by :func:`issegm.cli.make_config`; the shared ones in
    :class:`rn38.config.RunConfig`. Sizes in pixels."""
    batch_images: int = 16
    crop_size: int = 500
    base_lr: float = 0.0016
    weight_decay: float = 0.0005
    to_epoch: int = 140
    image_suffix: str = '.jpg'          # own data (folder) only
    label_suffix: str = '.png'          # own data (folder) only
    image_norm: Optional[str] = None
    head: str = '2conv'
    # training
    origin_size: int = 2048
    scale_rate_range: Tuple[float, float] = (0.7, 1.3)
    cache_images: Optional[bool] = None
    bn_stats: str = 'frozen'
    loss: str = 'ohem'
    # validation
    test_scales: tuple = (2048,)
    test_flipping: bool = True
    test_steps: int = 1
    max_input_pixels: Optional[int] = None
    save_predictions: bool = False
    save_results: bool = True
    official_eval: bool = True


@dataclasses.dataclass
class PredictConfig:
    """Options of ``issegm/predict.py`` (see ``--help``), with what the user left out
    derived by :func:`issegm.predict.make_config`. ``dataset`` follows from ``model``;
    ``test_scales`` are longer-side lengths in pixels (``None``: the image size); tile
    sizes in pixels."""
    weights: str
    input: str
    output: str
    model: Optional[str] = None
    dataset: Optional[str] = None
    test_scales: list = dataclasses.field(default_factory=lambda: [None])
    test_flipping: bool = False
    test_steps: int = 1
    pad_mode: str = 'stride'
    max_input_pixels: Optional[int] = None
    tile_size: int = 512
    tile_margin: Optional[int] = None
    alpha: float = 0.5
    gpus: Optional[str] = None
    dtype: str = 'float32'
    calib_images: int = 10
    calib_input: Optional[str] = None
    calib_mode: str = 'entropy'
    progress: bool = True
