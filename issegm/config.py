"""The configuration of a segmentation run (train or val): one dataclass, built from the
command line by :func:`issegm.cli.make_config` and saved with the results."""
import dataclasses
from typing import List, Optional, Tuple


@dataclasses.dataclass
class SegConfig:
    """Options of ``issegm/<dataset>.py`` (see ``--help``), with what the user left out
    derived by :func:`issegm.cli.make_config`. Sizes in pixels, rates per update."""
    phase: str = 'train'
    dataset: Optional[str] = None
    data_root: Optional[str] = None
    image_suffix: str = '.jpg'          # own data (folder) only
    label_suffix: str = '.png'          # own data (folder) only
    split: Optional[str] = None
    output: Optional[str] = None
    model: Optional[str] = None
    weights: Optional[str] = None
    gpus: Optional[str] = None
    image_norm: Optional[str] = None
    head: str = '2conv'
    # training
    batch_images: int = 16
    crop_size: int = 500
    origin_size: int = 2048
    scale_rate_range: Tuple[float, float] = (0.7, 1.3)
    lr_type: str = 'fixed'
    base_lr: float = 0.0016
    lr_steps: List[int] = dataclasses.field(default_factory=list)
    lr_factor: float = 0.1
    weight_decay: float = 0.0005
    momentum: float = 0.9
    from_epoch: Optional[int] = None
    stop_epoch: Optional[int] = None
    to_epoch: int = 140
    keep_checkpoints: int = 2
    keep_epochs: List[int] = dataclasses.field(default_factory=list)
    val_every: int = 0
    val_split: str = 'val'
    kvstore: str = 'device'
    prefetch_threads: int = 1
    prefetcher: str = 'thread'
    cache_images: Optional[bool] = None
    backward_do_mirror: bool = False
    bn_stats: str = 'frozen'
    loss: str = 'ohem'
    seed: int = 0
    hybridize: bool = True
    # validation
    test_scales: List[int] = dataclasses.field(default_factory=lambda: [2048])
    test_flipping: bool = True
    test_steps: int = 1
    max_input_pixels: Optional[int] = None
    save_predictions: bool = False
    save_results: bool = True
    official_eval: bool = True
    dtype: str = 'float32'
    calib_images: int = 10
    calib_mode: str = 'entropy'
    # logging
    log_file: Optional[str] = None
    debug: bool = False
    progress: bool = True
