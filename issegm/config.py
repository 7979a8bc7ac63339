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
