"""Training SegFormer with the paper's recipe: one function for the CLI, the notebook and torchrun
(book chapter 8).

    python -m segformer_edu.train --dataset camvid --model b0 --max-iters 20000
    torchrun --nproc_per_node=2 -m segformer_edu.train ...  # DDP, one process per GPU

``train(cfg)`` reads as its steps: check the configuration, claim the run's folder, prepare and
check the data, build the model and optimizer, resume, then the loop of training steps, validations
and saves, and finish.

Everything a run produces lands in ``out_dir`` (default ``runs/<dataset>_<model>``): ``latest.pt`` /
``best.pt`` (model, optimizer, scaler, scheduler, iteration, RNG states, config),
``train_log.jsonl`` (loss, lr, images/s every ``log_interval`` iterations), ``metrics.jsonl`` (mIoU,
per-class IoU, pixel accuracy at each validation), ``summary.json``, ``curves.png`` and
``predictions.png``. A folder that holds anything is refused unless the run continues it
(``--resume``) or replaces its run (``--overwrite``): no run destroys another.
"""

import argparse
import json
import math
import os
import random
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import get_args, get_origin

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from . import cli, cnn
from .checkpoint import evaluated_weights
from .datasets import (InfiniteSampler, build_split, check_image_sizes, data_report, palette_of,
                       preload_if_it_fits)
from .distributed import any_rank, broadcast_bn_buffers, setup_distributed
from .evaluation import evaluate
from .losses import class_weights, segmentation_loss
from .model import SegFormer
from .plots import plot_curves, save_prediction_grid
from .runs import (SCHEDULE_SETTINGS, Placement, RunData, RunProgress, TrainingParts,
                   claim_run_folder, clear_old_run, continue_command, flag_of, load_summary,
                   resume_changes, rng_state, save_atomic, set_rng_state, truncate_log)
from .schedule import build_optimizer, continue_schedule
from .system import StopRequest, available_cpus, choose_precision
from .train_checks import DEFAULT_MODEL, check_config


def arg(default, help: str):
    """A config field with the help text its command-line flag shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper's recipe; sizes are per process (per GPU), like
    mmseg's."""

    dataset: str = arg("camvid", "camvid, ade20k, or folder (your own: "
                                 "DATA_ROOT/{train,val[,test]}/{images,masks})")
    data_root: str | None = arg(None, "dataset folder (default: $SEGFORMER_DATA, ../shared/data, "
                                      "~/.cache)")
    num_classes: int | None = arg(None, "folder dataset: number of classes, if "
                                        "DATA_ROOT/classes.json is absent")
    class_names: tuple[str, ...] | None = arg(None, "folder dataset: class names, in mask-value "
                                                    "order")
    reduce_zero_label: bool = arg(False, "folder dataset: mask value 0 is 'other' (ignored), class "
                                         "k is value k+1")
    ignore_index: int = arg(255, "folder dataset: the mask value left out of loss and metrics")
    model: str | None = arg(None, "variant b0..b5 (default: the variant of --pretrained, else b0), "
                                  "or deeplabv3plus-mobilenetv2, the CNN baseline of chapter 11")
    pretrained: str | None = arg(None, "encoder weights: a hub id such as nvidia/mit-b0, or a "
                                       "local folder or file")
    out_dir: str | None = arg(None, "where checkpoints, logs and figures go (default: "
                                    "runs/<dataset>_<model>); it must be new or empty, unless "
                                    "--resume or --overwrite")
    crop_size: tuple[int, int] = arg((512, 512), "training crop (height, width); smaller images "
                                                 "are padded")
    scale: tuple[int, int] = arg((2048, 512), "resize target (long, short side) before the random "
                                              "ratio")
    ratio_range: tuple[float, float] = arg((0.5, 2.0), "random resize ratio range")
    photometric: bool = arg(True, "random brightness, contrast, saturation and hue of each "
                                  "training crop (mmseg's PhotoMetricDistortion)")
    batch_size: int = arg(8, "images per process per iteration")
    max_iters: int = arg(160_000, "optimizer steps in the whole run")
    lr: float = arg(6e-5, "AdamW base lr (encoder); the decoder gets head_lr_mult times it")
    optimizer: str = arg("adamw", "adamw (the paper's) or sgd (with --momentum; mmseg's for CNNs)")
    momentum: float = arg(0.9, "SGD momentum")
    weight_decay: float = arg(0.01, "weight decay (SegFormer: not applied to its LayerNorms)")
    head_lr_mult: float = arg(10.0, "lr multiplier of the decoder")
    warmup_iters: int = arg(1500, "linear warm-up iterations (a tenth of the run where they would "
                                  "not end before it)")
    warmup_ratio: float = arg(1e-6, "lr factor at iteration 0 of the warm-up")
    power: float = arg(1.0, "poly decay power")
    min_lr: float = arg(0.0, "the lr the poly decay ends at (mmseg's CNN schedules: 1e-4)")
    class_weights: str | None = arg(None, "weight the loss per class, from the training labels: "
                                          "enet (1 / ln(1.02 + share), ENet's) or median "
                                          "(median-frequency balancing)")
    ohem_thresh: float | None = arg(None, "online hard example mining (mmseg's OHEMPixelSampler): "
                                          "train on the pixels whose true class has a probability "
                                          "under this, e.g. 0.7")
    ohem_min_kept: int = arg(100_000, "OHEM: keep at least this many pixels per image")
    label_smoothing: float = arg(0.0, "cross-entropy label smoothing")
    drop_path_rate: float | None = arg(None, "stochastic depth rate of the last block (default: "
                                             "the variant's, 0.1)")
    fuse_first: bool = arg(False, "SegFormer: run the decoder's fuse at each stage's resolution, "
                                  "before upsampling: the same function, computed faster "
                                  "(decoder.py, chapter 9)")
    ema_decay: float | None = arg(None, "validate and keep an exponential moving average of the "
                                        "weights with this decay per iteration (e.g. 0.999)")
    val_interval: int = arg(4000, "validate (and save latest.pt) every this many iterations")
    save_minutes: float = arg(5.0, "also save latest.pt after this many minutes without a save, so "
                                   "that a crash loses less")
    val_images: int | None = arg(None, "validate on the first N images only (quick runs)")
    val_scale: tuple[int, int] | None = arg(None, "resize validation images to this (long, short) "
                                                  "scale")
    log_interval: int = arg(50, "write loss and lr to train_log.jsonl every this many iterations")
    num_workers: int = arg(min(4, available_cpus()), "data loading processes per training process "
                                                     "(0: exact resume); the default is at most "
                                                     "this machine's cores")
    seed: int = arg(0, "seed of weights, data order and augmentation")
    amp: str = arg("auto", "auto (bf16 where the processor computes it natively: a CPU with "
                           "AVX-512 BF16 or AMX, a GPU of compute capability 8 or later; fp16 with "
                           "a gradient scaler on older GPUs; else fp32), bf16, fp16, fp32")
    in_memory: bool = arg(True, "decode every frame once and keep it in memory, when that takes "
                                "under a quarter of the free memory")
    resume: bool = arg(False, "continue the run in out_dir from its latest.pt (a new run if it has "
                              "none); a new --lr, --weight-decay, --max-iters, --min-lr, --power, "
                              "--warmup-iters or --warmup-ratio recomputes the schedule from the "
                              "iteration reached, a new --amp applies from the next step, other "
                              "changes of the recipe are refused")
    overwrite: bool = arg(False, "start a new run in an out_dir that holds one, replacing its "
                                 "files")
    stop_at: int | None = arg(None, "stop (saving latest.pt) after this iteration, as if "
                                    "interrupted")
    test: bool = arg(False, "after training, evaluate best.pt on the test split "
                            "(test_metrics.json)")
    progress: bool = arg(True, "show a tqdm progress bar")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf: training stops, the last good checkpoint stays as it was."""


# ----------------------------------------------------------------------------- the run's parts


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The run's model, from its name: SegFormer-b0..b5 from scratch, or with a pretrained encoder
    (e.g. nvidia/mit-b0) and a new decoder for ``num_classes``; or the CNN baseline from scratch."""
    if cfg.model == cnn.NAME:
        return cnn.DeepLabV3Plus.from_config(cfg.model, num_classes=num_classes)
    overrides = {} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}
    if cfg.pretrained:
        model = SegFormer.from_pretrained(cfg.pretrained, num_classes=num_classes, **overrides)
    else:
        model = SegFormer.from_config(cfg.model or DEFAULT_MODEL, num_classes=num_classes,
                                      **overrides)
    model.decoder.fuse_first = cfg.fuse_first
    return model


def loss_options(cfg: TrainConfig, train_pixels: np.ndarray) -> dict:
    """The keyword arguments of ``segmentation_loss`` for this run; ``train_pixels`` (N, K + 1): the
    pixels of each class (and, last, the ignored ones) in each training label, which the class
    weights come from."""
    weight = None
    if cfg.class_weights is not None:
        weights = class_weights(cfg.class_weights, train_pixels[:, :-1])  # (K,)
        weight = torch.tensor(weights, dtype=torch.float32)
    return {"weight": weight, "ohem_thresh": cfg.ohem_thresh, "ohem_min_kept": cfg.ohem_min_kept,
            "label_smoothing": cfg.label_smoothing}


def averaged_model(model: nn.Module, decay: float | None):
    """An exponential moving average of the weights and BatchNorm statistics (None when ``decay`` is
    None)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# ----------------------------------------------------------------------------- the steps of train()


def prepare_data(cfg: TrainConfig, run: Placement, min_side: int, resumed: dict | None) -> RunData:
    """The splits, listed and then checked before the first step: every label read once
    (or every frame decoded into memory, where it fits), every evaluated image against the model's
    smallest side; a report of the class shares; the loss's class weights."""
    test_set = build_split(cfg, "test")[0] if cfg.test else None  # first: a missing one fails first
    train_set, names = build_split(cfg, "train")
    val_set, _ = build_split(cfg, "val")
    if resumed is not None and resumed.get("classes") and list(resumed["classes"]) != names:
        raise ValueError(f"{run.out / 'latest.pt'} was trained on the classes "
                         f"{', '.join(resumed['classes'])}, the dataset has {', '.join(names)}: "
                         "resume on the same dataset, or start again with --overwrite")
    if cfg.val_images is not None:
        val_set = Subset(val_set, range(min(cfg.val_images, len(val_set))))
    if len(train_set) < run.world:
        raise ValueError(f"{len(train_set)} training images cannot be split over {run.world} "
                         "processes")
    splits = {"train": train_set, "val": val_set, "test": test_set}
    splits = {name: split for name, split in splits.items() if split is not None}
    folders = {name: split.dataset if isinstance(split, Subset) else split
               for name, split in splits.items()}
    progress = run.main and cfg.progress
    counts = {}
    if not (cfg.in_memory and preload_if_it_fits([train_set, val_set], progress=progress)):
        counts = {name: folders[name].check_labels(progress=progress) for name in ("train", "val")}
    if test_set is not None:  # not kept in memory: read once after training
        counts["test"] = folders["test"].check_labels(progress=progress)
    for split, dataset in (("val", val_set), ("test", test_set)):
        if dataset is not None:
            check_image_sizes(split, dataset, cfg.val_scale, min_side)
    if run.main:
        report, warnings = data_report(
            {name: (len(folder), counts[name] if name in counts else folder.pixel_counts())
             for name, folder in folders.items()}, names)
        print(report, flush=True)
        for warning in warnings:
            print(warning, file=sys.stderr, flush=True)
    loss_kwargs = loss_options(cfg, folders["train"].pixels_per_image())
    if loss_kwargs["weight"] is not None:
        run.say(f"class weights ({cfg.class_weights}): " + ", ".join(
            f"{name} {w:.2f}" for name, w in zip(names, loss_kwargs["weight"].tolist())))
    return RunData(train_set, val_set, test_set, names, loss_kwargs)


def build(cfg: TrainConfig, data: RunData, run: Placement) -> TrainingParts:
    """The model (``build_model``), its moving average, the optimizer and schedule
    (``build_optimizer``), the autocast dtype and the gradient scaler (fp16 only)."""
    model = build_model(cfg, len(data.names)).to(run.device)
    ema = averaged_model(model, cfg.ema_decay)
    optimizer, scheduler = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult,
                                           cfg.max_iters, cfg.warmup_iters, cfg.warmup_ratio,
                                           cfg.power, cfg.optimizer, cfg.momentum, cfg.min_lr)
    precision = choose_precision(run.device, cfg.amp)
    run.say(f"precision: {precision.name} ({precision.reason})")
    scaler = torch.amp.GradScaler(run.device.type, enabled=precision.dtype == torch.float16)
    return TrainingParts(model, ema, optimizer, scheduler, scaler, precision)


def restore(cfg: TrainConfig, parts: TrainingParts, state: dict | None,
            run: Placement) -> RunProgress:
    """A fresh start, or everything latest.pt holds: weights, optimizer, schedule, scaler, average,
    RNG states; the logs cut back to its iteration (no line twice). The schedule then continues
    with this call's settings (``continue_schedule``), and what they change is said and kept."""
    if state is None:
        return RunProgress()
    base_lrs = list(parts.scheduler.base_lrs)  # this call's, before the checkpoint's replace them
    decays = [group["weight_decay"] for group in parts.optimizer.param_groups]
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    continue_schedule(parts.optimizer, parts.scheduler, base_lrs, decays)
    if state["scaler"]:  # empty when the run did not use fp16: a new --amp fp16 starts a scale
        parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None:
        parts.ema.module.load_state_dict(state["ema"])
        parts.ema.n_averaged.fill_(state["ema_updates"])
    if len(state["rng"]) == run.world:
        set_rng_state(state["rng"][run.rank])
    start = state["iteration"]
    if run.main:
        truncate_log(run.out / "train_log.jsonl", start)
        truncate_log(run.out / "metrics.jsonl", start)
    run.say(f"resumed from latest.pt at iteration {start}")
    progress = RunProgress(iteration=start, best_miou=state["best_miou"],
                           best_iteration=state.get("best_iteration"), saved_at=start,
                           seconds_before=state["train_seconds"],
                           wall_before=state.get("wall_seconds"), logged=(0.0, start),
                           loads=list(state.get("load_averages", [])),
                           resume_changes=list(state.get("resume_changes", [])))
    changed = resume_changes(cfg, state)[0]  # the others were refused before any work
    if changed:
        progress.resume_changes.append({"iteration": start, "changed": changed})
        run.say(changed_settings_line(changed, start, parts.optimizer))
    return progress


def changed_settings_line(changed: dict, start: int, optimizer: torch.optim.Optimizer) -> str:
    """What a resume changed, and from which iteration its schedule continues with it."""
    line = "resumed with changed settings: " + ", ".join(
        f"{flag_of(name)} {old} -> {new}" for name, (old, new) in changed.items())
    if any(name in SCHEDULE_SETTINGS for name in changed):
        lrs = [group["lr"] for group in optimizer.param_groups]
        line += (f"; the schedule continues from iteration {start} with them (next step: lr "
                 f"{lrs[0]:.3g}, decoder {max(lrs):.3g})")
    return line


def ddp_model(model: nn.Module, run: Placement) -> nn.Module:
    """The module the steps call: the model itself, or under torchrun its DistributedDataParallel
    wrapper (with SyncBatchNorm on GPUs; on CPUs, gloo in the tests,
    each rank keeps its BatchNorm)."""
    if run.world == 1:
        return model
    if run.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[run.device.index] if run.device.type == "cuda" else None)


def training_batches(cfg: TrainConfig, data: RunData, run: Placement, start: int):
    """Endless batches from iteration ``start`` on: the samples and augmentations the uninterrupted
    run draws there (exactly with ``num_workers=0``)."""
    from .transforms import seed_worker

    sampler = InfiniteSampler(len(data.train), run.rank, run.world, cfg.seed,
                              start=start * cfg.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed + run.rank + start)  # global RNG untouched
    loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
                        drop_last=True, worker_init_fn=seed_worker,
                        persistent_workers=cfg.num_workers > 0, generator=generator)
    return iter(loader)


def model_loss(model: nn.Module, train_model: nn.Module, images: Tensor, labels: Tensor,
               loss_kwargs: dict) -> Tensor:
    """The loss of one batch: on the logits, plus the auxiliary head's at its weight where the
    model has one (the CNN baseline, as mmseg trains it). ``train_model`` is ``model`` or its DDP
    wrapper: calling it, not ``model``, keeps the gradients synchronised."""
    if getattr(model, "aux_head", None) is None:
        return segmentation_loss(train_model(images), labels, **loss_kwargs)
    logits, aux_logits = train_model(images, aux=True)  # (B, K, h/4, w/4), (B, K, h/8, w/8)
    return (segmentation_loss(logits, labels, **loss_kwargs)
            + model.config.aux_loss_weight * segmentation_loss(aux_logits, labels, **loss_kwargs))


def train_step(parts: TrainingParts, train_model: nn.Module, batches, loss_kwargs: dict,
               run: Placement, progress: RunProgress) -> tuple[float, float, float]:
    """One optimizer step on the next batch, (B, 3, h, w) images and (B, h, w) labels; returns
    (the loss averaged over ranks, the lr of the encoder, the decoder's). A NaN or inf loss stops
    the run before its update reaches the weights."""
    tic = time.perf_counter()
    images, labels = next(batches)
    images = images.to(run.device, non_blocking=True)  # (B, 3, h, w)
    labels = labels.to(run.device, non_blocking=True)  # (B, h, w)
    dtype = parts.dtype or torch.float32
    with torch.autocast(run.device.type, dtype=dtype, enabled=parts.dtype is not None):
        loss = model_loss(parts.model, train_model, images, labels, loss_kwargs)
    mean_loss = loss.detach().clone()
    if run.world > 1:
        dist.all_reduce(mean_loss)
        mean_loss /= run.world
    if not math.isfinite(mean_loss.item()):  # before backward: no bad update reaches the weights
        latest = run.out / "latest.pt"
        kept = "no checkpoint yet"
        if progress.saved_at is not None:
            kept = f"{latest} (iteration {progress.saved_at}) is kept"
        raise NonFiniteLossError(f"loss is {mean_loss.item()} at iteration "
                                 f"{progress.iteration + 1}: training stopped; {kept}. Try a lower "
                                 "lr or --amp fp32, then --resume.")
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)
    lrs = [group["lr"] for group in parts.optimizer.param_groups]  # this step's
    lr, head_lr = lrs[0], max(lrs)
    parts.scheduler.step()
    progress.iteration += 1
    progress.losses.append(mean_loss.item())
    progress.run_time += time.perf_counter() - tic
    return mean_loss.item(), lr, head_lr


def log_step(cfg: TrainConfig, run: Placement, progress: RunProgress, lr: float, head_lr: float,
             bar) -> None:
    """Every ``log_interval`` iterations: loss, lr and training images/s (since the last line) to
    the bar and train_log.jsonl."""
    iteration = progress.iteration
    if iteration % cfg.log_interval and iteration != cfg.max_iters:
        return
    logged_time, logged_iteration = progress.logged
    images = (iteration - logged_iteration) * cfg.batch_size * run.world
    speed = images / (progress.run_time - logged_time)
    progress.logged = (progress.run_time, iteration)
    if hasattr(os, "getloadavg"):
        progress.loads.append(round(os.getloadavg()[0], 2))
    loss = progress.losses[-1]
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
    if run.main:
        with open(run.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"iter": iteration, "loss": loss, "lr": lr, "head_lr": head_lr,
                                "images_per_s": speed}) + "\n")


@contextmanager
def saying_what_is_kept(run: Placement, progress: RunProgress):
    """An error after the first step says which latest.pt it left
    (a note that ``cli.one_line`` shows)."""
    start = progress.iteration
    try:
        yield
    except BaseException as error:
        said = isinstance(error, NonFiniteLossError)  # its message says it already
        if progress.iteration > start and not said and hasattr(error, "add_note"):  # Python 3.11+
            kept = "no checkpoint was saved yet"
            if progress.saved_at is not None:
                kept = (f"{run.out / 'latest.pt'} (iteration {progress.saved_at}) is kept: "
                        "continue with --resume")
            error.add_note(kept)
        raise


def checkpoint_state(cfg: TrainConfig, parts: TrainingParts, data: RunData, run: Placement,
                     progress: RunProgress) -> dict:
    """What latest.pt and best.pt hold; every rank's RNG state (a collective call under DDP)."""
    rng = [rng_state()]
    if run.world > 1:
        rng = [None] * run.world
        dist.all_gather_object(rng, rng_state())
    ema = {} if parts.ema is None else {"ema": parts.ema.module.state_dict(),
                                        "ema_updates": int(parts.ema.n_averaged)}
    return {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(),
            "iteration": progress.iteration, "best_miou": progress.best_miou,
            "best_iteration": progress.best_iteration,
            "train_seconds": progress.seconds_before + progress.run_time,
            "wall_seconds": progress.wall_seconds(), "rng": rng,
            "load_averages": progress.loads, "resume_changes": progress.resume_changes,
            "config": asdict(cfg), "classes": data.names,
            "palette": palette_of(data.train, cfg.dataset)} | ema


def save_latest(cfg: TrainConfig, parts: TrainingParts, data: RunData, run: Placement,
                progress: RunProgress) -> None:
    state = checkpoint_state(cfg, parts, data, run, progress)
    if run.main:
        save_atomic(state, run.out / "latest.pt")
    progress.saved_at = progress.iteration


def validate_and_save(cfg: TrainConfig, parts: TrainingParts, data: RunData, run: Placement,
                      progress: RunProgress, write) -> None:
    """Validate (every rank evaluates the same weights), log the metrics, save latest.pt, and
    best.pt when the mIoU improved."""
    broadcast_bn_buffers(parts.model, run.world)
    metrics = evaluate(parts.evaluated, data.val, len(data.names), run.device, parts.dtype,
                       run.rank, run.world, data.names)
    improved = metrics["miou"] > progress.best_miou
    if improved:
        progress.best_miou, progress.best_iteration = metrics["miou"], progress.iteration
    progress.metrics = metrics
    state = checkpoint_state(cfg, parts, data, run, progress)
    if run.main:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"iter": progress.iteration} | metrics) + "\n")
        write(f"iter {progress.iteration}: mIoU {100 * metrics['miou']:.2f} %, pixel acc "
              f"{100 * metrics['acc']:.2f} %")
        save_atomic(state, run.out / "latest.pt")
        if improved:
            save_atomic(state, run.out / "best.pt")
    progress.saved_at = progress.iteration


def finish(cfg: TrainConfig, parts: TrainingParts, data: RunData, run: Placement,
           progress: RunProgress, start: int, status: str, signum: int | None) -> dict:
    """The summary; at the end of the run also summary.json, curves.png, predictions.png and, with
    ``test``, best.pt's test metrics."""
    world = run.world
    summary = {"status": status, "iteration": progress.iteration, "best_miou": progress.best_miou,
               "best_iteration": progress.best_iteration,
               # over all resumed calls
               "train_seconds": progress.seconds_before + progress.run_time,
               "wall_seconds": progress.wall_seconds(),
               "images_per_s": (progress.iteration - start) * cfg.batch_size * world
               / max(progress.run_time, 1e-9),  # this call
               "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda"
               else "cpu",
               "world_size": world, "out_dir": str(run.out), "signal": signum,
               "seed": cfg.seed, "precision": parts.precision.name,
               "precision_reason": parts.precision.reason,
               "images_seen": progress.iteration * cfg.batch_size * world,
               "resume_changes": progress.resume_changes,
               **load_summary(progress.loads)}
    test_metrics = None
    if run.main and progress.iteration == cfg.max_iters:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_curves(run.out)
        save_prediction_grid(parts.evaluated, data.val, cfg.dataset, run.out / "predictions.png")
        if cfg.test:
            best = torch.load(run.out / "best.pt", map_location=run.device, weights_only=True)
            parts.model.load_state_dict(evaluated_weights(best))
            tested = evaluate(parts.model, data.test, len(data.names), run.device, parts.dtype,
                              names=data.names)
            test_metrics = {"iter": best["iteration"]} | tested
            (run.out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1))
    if world > 1:
        dist.barrier()
    return summary | {"losses": progress.losses, "metrics": progress.metrics,
                      "test_metrics": test_metrics, "model": parts.model}


# ----------------------------------------------------------------------------- the loop

def finished_already(cfg: TrainConfig, run: Placement, resumed: dict) -> dict:
    """The summary of a run whose latest.pt is at --max-iters: nothing to train."""
    run.say(f"{run.out} finished already, at iteration {cfg.max_iters}: nothing to train (pass "
            "a larger --max-iters to train further)")
    return {"status": "already finished", "iteration": cfg.max_iters,
            "best_miou": resumed["best_miou"], "best_iteration": resumed.get("best_iteration"),
            "out_dir": str(run.out), "signal": None, "losses": [], "metrics": None,
            "test_metrics": None, "model": None}


def training_loop(cfg: TrainConfig, parts: TrainingParts, data: RunData, run: Placement,
                  progress: RunProgress, train_model: nn.Module, batches) -> tuple[str, int | None]:
    """Steps until ``max_iters``, ``stop_at`` or a signal: validations and saves on schedule, and
    latest.pt saved at the end; (status, the signal that stopped it, if one did)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_iters, initial=progress.iteration,
               disable=not (run.main and cfg.progress), dynamic_ncols=True)
    status, last_save = "finished", time.monotonic()
    train_model.train()
    with StopRequest(announce=run.main) as stop, saying_what_is_kept(run, progress):
        while progress.iteration < cfg.max_iters:
            # every rank stops (and saves) together: one decision for all
            save_due = run.main and time.monotonic() - last_save >= 60 * cfg.save_minutes
            stop_due = stop.requested or progress.iteration == cfg.stop_at
            stop_now, save_now = any_rank([stop_due, save_due], run.device, run.world)
            if save_now and progress.saved_at != progress.iteration:
                save_latest(cfg, parts, data, run, progress)
                last_save = time.monotonic()
            if stop_now:
                status = "interrupted" if stop.requested else "stopped"
                break
            _, lr, head_lr = train_step(parts, train_model, batches, data.loss_kwargs, run,
                                        progress)
            bar.update()
            log_step(cfg, run, progress, lr, head_lr, bar)
            at = progress.iteration
            if at % cfg.val_interval == 0 or at == cfg.max_iters:
                validate_and_save(cfg, parts, data, run, progress, bar.write)
                train_model.train()
                last_save = time.monotonic()
        if progress.saved_at != progress.iteration:
            save_latest(cfg, parts, data, run, progress)
    bar.close()
    return status, stop.signum


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) the training ``cfg`` describes; returns a summary
    (status, losses of this call, metrics, timing, ``model``).

    Every check comes before the first step; once steps run, latest.pt is saved at each validation
    and after ``save_minutes`` without a save, and whatever stops the run leaves the last
    one intact and says where.
    """
    started = time.monotonic()
    rank, world, device = setup_distributed()
    cfg, min_side = check_config(cfg, device, say=print if rank == 0 else lambda line: None)
    run = Placement(rank, world, device, Path(cfg.out_dir))
    # a new run, latest.pt to resume, or a refusal; the folder is this run's until it returns
    with claim_run_folder(cfg, run) as resumed:
        if resumed is not None and resumed["iteration"] == cfg.max_iters:
            return finished_already(cfg, run, resumed)
        random.seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
        # the same initial weights on every rank; DDP also broadcasts rank 0's
        torch.manual_seed(cfg.seed)

        data = prepare_data(cfg, run, min_side, resumed)  # every file checked before the first step
        parts = build(cfg, data, run)  # model, average, optimizer, schedule, autocast, scaler
        progress = restore(cfg, parts, resumed, run)  # from latest.pt, or a fresh start
        progress.call_start = started  # the wall time counts this call's setup too
        if resumed is None:
            clear_old_run(run)
        start = progress.iteration
        train_model, batches = ddp_model(parts.model, run), training_batches(cfg, data, run, start)

        status, signum = training_loop(cfg, parts, data, run, progress, train_model, batches)
        return finish(cfg, parts, data, run, progress, start, status, signum)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """A flag per TrainConfig field (``--max-iters``, ``--crop-size H W``,
    ``--resume``/``--no-resume``...), its default in ``--help``."""
    parser = cli.ArgumentParser(prog="python -m segformer_edu.train",
                                   description=__doc__.split("\n")[0])
    for f in fields(TrainConfig):
        flag, kind = "--" + f.name.replace("_", "-"), f.type
        optional = get_origin(kind) is UnionType  # X | None
        options = [a for a in get_args(kind) if a is not type(None)] if optional else [kind]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"])
        elif get_origin(options[0]) is tuple:
            parts = get_args(options[0])
            # tuple[str, ...]: one or more values
            count = "+" if parts[-1] is Ellipsis else len(parts)
            parser.add_argument(flag, nargs=count, type=parts[0], default=f.default,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=options[0], default=f.default, help=f.metadata["help"])
    values = vars(parser.parse_args(argv))
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def per_class_iou(metrics: dict, split: str) -> str:
    """One line: mIoU and each class's IoU under its name (n/a: the class is in neither labels nor
    predictions)."""
    names = metrics.get("classes") or [f"class_{k}" for k in range(len(metrics["iou"]))]
    scores = ", ".join(f"{name} {'n/a' if math.isnan(iou) else f'{100 * iou:.1f}'}"
                       for name, iou in zip(names, metrics["iou"]))
    return f"{split} mIoU {percent(metrics['miou'])}; IoU per class (%): {scores}"


def resume_command(argv: list[str], world: int) -> str:
    """The command that continues this run (``continue_command``), against this command's flags."""
    flags = [flag_of(f.name) for f in fields(TrainConfig)]
    flags += [f"--no-{flag_of(f.name)[2:]}" for f in fields(TrainConfig) if f.type is bool]
    return continue_command(argv, world, flags)


def summary_line(result: dict, argv: list[str]) -> str:
    """The run's last line: where its result is and what to do next."""
    out, iteration = result["out_dir"], f"{result['iteration']:,}"
    best = result.get("best_iteration")
    best = (f"best.pt: val mIoU {percent(result['best_miou'])} at iteration {best:,}, in {out}"
            if best is not None else f"no validation yet, nothing in {out}/best.pt")
    if result["status"] in ("finished", "already finished"):
        done = "finished" if result["status"] == "finished" else "finished already"
        return (f"{done} at iteration {iteration}; {best}; next: python -m segformer_edu.predict "
                f"--model {shlex.quote(out)} --images IMAGES --out PREDICTIONS")
    if result["status"] == "stopped":
        why = "stopped, as --stop-at asked,"
    else:
        signum = result["signal"]
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        why = f"interrupted ({name})"
    return (f"{why} at iteration {iteration}: latest.pt saved in {out} ({best}); continue with: "
            f"{resume_command(argv, result['world_size'])}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_args(argv)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    try:
        result = train(cfg)
    except KeyboardInterrupt as error:
        notes = "; ".join(getattr(error, "__notes__", [])) or "nothing was trained or saved"
        if main_rank:
            print(f"interrupted: {notes}", file=sys.stderr)
        return cli.INTERRUPTED
    except (ImportError, OSError, ValueError, NonFiniteLossError) as error:  # a line, no traceback
        return cli.report(error)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_rank:
        for split, metrics in (("val", result["metrics"]), ("test", result["test_metrics"])):
            if metrics:
                print(per_class_iou(metrics, split))
        print(summary_line(result | {"world_size": result.get("world_size", 1)}, argv))
    if result["status"] == "interrupted":
        return cli.interrupted_status(result["signal"])
    return cli.DONE


if __name__ == "__main__":
    sys.exit(main())
