"""The checks of a training configuration, before anything is read or written (book chapter 8):
every count, size, rate and choice in its range, the model named by --model or --pretrained, the
warm-up against the run's length, and the run's folder by default. A bad setting is one line that
names its flag.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import cnn
from .config import VARIANTS, SegFormerConfig
from .losses import CLASS_WEIGHTINGS
from .schedule import OPTIMIZERS
from .system import choose_precision

if TYPE_CHECKING:  # for the annotations only: train imports this module
    from .train import TrainConfig

DEFAULT_MODEL = "b0"


def check_cnn_config(cfg: TrainConfig) -> None:
    """What the CNN baseline cannot do: start from a checkpoint, drop paths, train on one image
    (BatchNorm on the ASPP's pooled 1x1 map needs a batch of 2)."""
    if cfg.pretrained:
        raise ValueError(f"--pretrained loads SegFormer encoders; {cnn.NAME} trains from scratch: "
                         "drop --pretrained")
    if cfg.drop_path_rate is not None:
        raise ValueError(f"--drop-path-rate is SegFormer's stochastic depth; {cnn.NAME} has none")
    if cfg.fuse_first:
        raise ValueError(f"--fuse-first reorders SegFormer's decoder; {cnn.NAME} has another: "
                         "drop --fuse-first")
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size {cfg.batch_size}: {cnn.NAME}'s BatchNorm after image "
                         "pooling needs at least 2 images per step")


def check_numbers(cfg: TrainConfig) -> None:
    """Counts, sizes, rates and fractions in their ranges; a bad one is one line naming its flag."""
    positive = {"batch_size": cfg.batch_size, "max_iters": cfg.max_iters,
                "val_interval": cfg.val_interval, "log_interval": cfg.log_interval, "lr": cfg.lr,
                "save_minutes": cfg.save_minutes,
                **{f"crop_size ({i})": side for i, side in enumerate(cfg.crop_size)},
                **{f"scale ({i})": side for i, side in enumerate(cfg.scale)},
                **{f"ratio_range ({i})": ratio for i, ratio in enumerate(cfg.ratio_range)},
                **{f"val_scale ({i})": side for i, side in enumerate(cfg.val_scale or ())}}
    optional = {"val_images": cfg.val_images, "stop_at": cfg.stop_at,
                "num_classes": cfg.num_classes}
    positive |= {name: value for name, value in optional.items() if value is not None}
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, not {value}")
    at_least_zero = {"warmup_iters": cfg.warmup_iters, "num_workers": cfg.num_workers,
                     "weight_decay": cfg.weight_decay, "label_smoothing": cfg.label_smoothing}
    for name, value in at_least_zero.items():
        if value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, not {value}")
    fractions = {"drop_path_rate": cfg.drop_path_rate, "ema_decay": cfg.ema_decay,
                 "label_smoothing": cfg.label_smoothing}
    for name, value in fractions.items():
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1), not {value}")
    if cfg.ohem_thresh is not None and not 0 < cfg.ohem_thresh <= 1:
        raise ValueError(f"--ohem-thresh is a probability in (0, 1], not {cfg.ohem_thresh}")
    if cfg.ratio_range[0] > cfg.ratio_range[1]:
        raise ValueError(f"--ratio-range {cfg.ratio_range[0]} {cfg.ratio_range[1]}: the smaller "
                         "one first")
    if not 0 <= cfg.min_lr < cfg.lr:
        raise ValueError(f"--min-lr {cfg.min_lr} must lie in [0, --lr {cfg.lr})")


def check_choices(cfg: TrainConfig, device: torch.device) -> None:
    """The named options: class weighting, resume or overwrite, autocast here, optimiser."""
    if cfg.class_weights is not None and cfg.class_weights not in CLASS_WEIGHTINGS:
        raise ValueError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTINGS)}, "
                         f"not {cfg.class_weights!r}")
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume continues the run in --out-dir, --overwrite replaces it: pass "
                         "one of them")
    choose_precision(device, cfg.amp)  # an amp this device cannot run fails here
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not "
                         f"{cfg.optimizer!r}")


def resolve_model(cfg: TrainConfig) -> tuple[str, int]:
    """(the model's name, its smallest input side), from --model or --pretrained (whose source
    is read now, so that a missing file or an offline hub fails before any work)."""
    if cfg.model is not None and cfg.model not in (*VARIANTS, cnn.NAME):
        raise ValueError(f"--model {cfg.model!r} is not a model: one of {', '.join(VARIANTS)} or "
                         f"{cnn.NAME}")
    model = cfg.model or DEFAULT_MODEL
    if model == cnn.NAME:
        check_cnn_config(cfg)
        min_side = cnn.DeepLabV3PlusConfig().min_side
    else:
        min_side = SegFormerConfig.from_name(model).min_side
    if cfg.pretrained:
        from .checkpoint import source_config

        # a missing file or an offline hub: one line, now
        pretrained = source_config(cfg.pretrained)
        variant = pretrained.variant_name()
        if cfg.model is not None and variant is not None and variant != cfg.model:
            raise ValueError(f"--model {cfg.model} but --pretrained {cfg.pretrained} is a "
                             f"{variant}: drop --model, or pass --model {variant}")
        model, min_side = variant or cfg.model or "custom", pretrained.min_side
    return model, min_side


def check_config(cfg: TrainConfig, device: torch.device, say=print) -> tuple[TrainConfig, int]:
    """Every setting, before anything is read or written: (the config with its defaults resolved,
    the model's smallest input side). A bad one is one line naming its flag."""
    check_numbers(cfg)
    check_choices(cfg, device)
    model, min_side = resolve_model(cfg)
    if min(cfg.crop_size) < min_side:
        raise ValueError(f"--crop-size {cfg.crop_size[0]} {cfg.crop_size[1]} is under the model's "
                         f"smallest side, {min_side} px")
    warmup = cfg.warmup_iters
    if warmup >= cfg.max_iters:
        warmup = cfg.max_iters // 10
        say(f"--warmup-iters {cfg.warmup_iters} would not end before --max-iters {cfg.max_iters}: "
            f"warming up for {warmup} (a tenth of the run; pass --warmup-iters under "
            f"{cfg.max_iters} to choose)")
    if cfg.out_dir is None:
        own = cfg.dataset == "folder" and cfg.data_root
        out_dir = str(Path("runs") / f"{Path(cfg.data_root).name if own else cfg.dataset}_{model}")
    else:
        out_dir = cfg.out_dir
    return replace(cfg, model=model, out_dir=out_dir, warmup_iters=warmup), min_side
