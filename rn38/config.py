"""The options every run of either task has: the fields :func:`rn38.train.run` and the
entries read. Each task's config dataclass (:class:`issegm.config.SegConfig`,
:class:`iclass.train.Config`) extends :class:`RunConfig` with its own fields and defaults,
so the same thing has the same name (and command-line flag) in both."""
import dataclasses
from typing import Optional


@dataclasses.dataclass
class RunConfig:
    """Sizes in pixels; rates per update; epochs counted from 1; ``gpus`` as
    :func:`rn38.devices.parse_devices` reads it."""
    phase: str = 'train'
    dataset: Optional[str] = None
    data_root: Optional[str] = None
    split: Optional[str] = None
    output: Optional[str] = None
    model: Optional[str] = None
    weights: Optional[str] = None
    gpus: Optional[str] = None
    # training
    batch_images: Optional[int] = None
    crop_size: Optional[int] = None
    lr_type: str = 'fixed'
    base_lr: float = 0.1
    lr_steps: tuple = ()
    lr_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0001
    from_epoch: Optional[int] = None
    stop_epoch: Optional[int] = None
    to_epoch: Optional[int] = None
    keep_checkpoints: int = 2
    keep_epochs: tuple = ()
    val_every: int = 0
    val_split: str = 'val'
    kvstore: str = 'device'
    backward_do_mirror: bool = False
    hybridize: bool = True
    seed: int = 0
    prefetch_threads: int = 1
    prefetcher: str = 'thread'
    # inference precision
    dtype: str = 'float32'
    calib_images: int = 10
    calib_mode: str = 'entropy'
    # logging
    log_file: Optional[str] = None
    debug: bool = False
    progress: bool = True
