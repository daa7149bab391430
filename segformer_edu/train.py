"""Training SegFormer with the paper's recipe: one function for the CLI, the notebook and torchrun (book chapter 8).

    python -m segformer_edu.train --dataset camvid --model b0 --max-iters 20000 --out-dir runs/camvid_b0
    torchrun --nproc_per_node=2 -m segformer_edu.train ...        # DistributedDataParallel, one process per GPU

Everything a run produces lands in ``out_dir``: ``latest.pt`` / ``best.pt`` (model, optimizer, scaler, scheduler,
iteration, RNG states, config), ``train_log.jsonl`` (loss, lr, images/s every ``log_interval`` iterations),
``metrics.jsonl`` (mIoU, per-class IoU, pixel accuracy at each validation), ``curves.png`` and ``predictions.png``.
"""

import argparse
import json
import math
import os
import platform
import random
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import get_args, get_origin

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, Subset

from . import errors
from .checkpoint import evaluated_weights
from .losses import CLASS_WEIGHTINGS, class_weights, segmentation_loss
from .model import SegFormer
from .schedule import build_optimizer

IGNORE_INDEX = 255  # the data module's value; padding and CamVid's void


def arg(default, help: str):
    """A config field with the help text its command-line flag shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper's recipe; sizes are per process (per GPU), like mmseg's."""

    dataset: str = arg("camvid", "camvid, ade20k, or folder (your own: DATA_ROOT/{train,val[,test]}/{images,masks})")
    data_root: str | None = arg(None, "dataset folder (default: $SEGFORMER_DATA, ../shared/data, ~/.cache)")
    num_classes: int | None = arg(None, "folder dataset: number of classes, if DATA_ROOT/classes.json is absent")
    class_names: tuple[str, ...] | None = arg(None, "folder dataset: class names, in mask-value order")
    reduce_zero_label: bool = arg(False, "folder dataset: mask value 0 is 'other' (ignored), class k is value k+1")
    ignore_index: int = arg(255, "folder dataset: the mask value left out of loss and metrics")
    model: str = arg("b0", "variant b0..b5, random initialisation")
    pretrained: str | None = arg(None, "encoder weights: a hub id such as nvidia/mit-b0 or a local folder/file")
    out_dir: str = arg("runs/camvid_b0", "where checkpoints, logs and figures go")
    crop_size: tuple[int, int] = arg((512, 512), "training crop (height, width); smaller images are padded")
    scale: tuple[int, int] = arg((2048, 512), "resize target (long, short side) before the random ratio")
    ratio_range: tuple[float, float] = arg((0.5, 2.0), "random resize ratio range")
    batch_size: int = arg(8, "images per process per iteration")
    max_iters: int = arg(160_000, "optimizer steps in the whole run")
    lr: float = arg(6e-5, "AdamW base lr (encoder); the decoder gets head_lr_mult times it")
    weight_decay: float = arg(0.01, "AdamW weight decay, not applied to norms and biases")
    head_lr_mult: float = arg(10.0, "lr multiplier of the decoder")
    warmup_iters: int = arg(1500, "linear warm-up iterations")
    warmup_ratio: float = arg(1e-6, "lr factor at iteration 0 of the warm-up")
    power: float = arg(1.0, "poly decay power")
    class_weights: str | None = arg(None, "weight the loss per class, from the training labels: enet "
                                          "(1 / ln(1.02 + share), ENet's) or median (median-frequency balancing)")
    ohem_thresh: float | None = arg(None, "online hard example mining (mmseg's OHEMPixelSampler): train on the "
                                          "pixels whose true class has a probability under this, e.g. 0.7")
    ohem_min_kept: int = arg(100_000, "OHEM: keep at least this many pixels per image")
    label_smoothing: float = arg(0.0, "cross-entropy label smoothing")
    drop_path_rate: float | None = arg(None, "stochastic depth rate of the last block (default: the variant's, 0.1)")
    ema_decay: float | None = arg(None, "validate and keep an exponential moving average of the weights with "
                                        "this decay per iteration (e.g. 0.999)")
    val_interval: int = arg(4000, "validate (and save latest.pt) every this many iterations")
    val_images: int | None = arg(None, "validate on the first N images only (quick runs)")
    val_scale: tuple[int, int] | None = arg(None, "resize validation images to this (long, short) scale")
    log_interval: int = arg(50, "write loss and lr to train_log.jsonl every this many iterations")
    num_workers: int = arg(4, "data loading processes per training process (0: exact resume)")
    seed: int = arg(0, "seed of weights, data order and augmentation")
    amp: str = arg("auto", "auto (bf16 if the GPU supports it, else fp16 with a scaler; fp32 on CPU), bf16, fp16, fp32")
    in_memory: bool = arg(True, "decode every frame once and keep it in memory, when that takes under a quarter of "
                                "the free memory (also checks every file before the first step)")
    resume: bool = arg(False, "continue from out_dir/latest.pt if it exists")
    stop_at: int | None = arg(None, "stop (saving latest.pt) after this iteration, as if interrupted")
    test: bool = arg(False, "after training, evaluate best.pt on the test split (test_metrics.json)")
    progress: bool = arg(True, "show a tqdm progress bar")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf: training stops, the last good checkpoint stays as it was."""


# ----------------------------------------------------------------------------- data

def datasets(cfg: TrainConfig, split: str):
    """The dataset of ``split`` ("train", "val", "test") with its transform, and its class names."""
    from . import data
    from .transforms import EvalTransform, TrainTransform

    if split == "train":
        transform = TrainTransform(crop_size=tuple(cfg.crop_size), scale=tuple(cfg.scale),
                                   ratio_range=tuple(cfg.ratio_range), ignore_index=IGNORE_INDEX)
    else:
        transform = EvalTransform(scale=tuple(cfg.val_scale) if cfg.val_scale else None)
    folder_only = {"num_classes": None, "class_names": None, "reduce_zero_label": False, "ignore_index": IGNORE_INDEX}
    given = [name for name, default in folder_only.items() if getattr(cfg, name) != default]
    if cfg.dataset != "folder" and given:
        raise ValueError(f"--{given[0].replace('_', '-')} applies to --dataset folder only; {cfg.dataset} has its "
                         f"own classes and label encoding")
    if cfg.dataset == "camvid":
        names = list(data.CAMVID_CLASSES)
        return data.camvid(cfg.data_root, split=split, transform=transform), names
    if cfg.dataset == "ade20k":
        if split == "test":
            raise ValueError("ADE20K's test images come without labels: evaluate on its val split (drop --test)")
        ade_split = {"train": "training", "val": "validation"}[split]
        names = list(data.ADE20K_CLASSES)
        return data.ade20k(cfg.data_root, split=ade_split, transform=transform), names
    if cfg.dataset == "folder":
        dataset = data.folder(cfg.data_root, split, transform, cfg.num_classes, cfg.class_names,
                              cfg.reduce_zero_label, cfg.ignore_index)
        return dataset, dataset.names
    raise ValueError(f"unknown dataset {cfg.dataset!r}: camvid, ade20k or folder")


def free_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable); 0 where that cannot be read."""
    try:
        line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) * 1024


def preload_if_it_fits(splits: list, progress: bool = False) -> bool:
    """Decode every frame of ``splits`` into memory (see SegmentationFolder.preload) if they take under a quarter
    of the free memory; returns whether it did. CamVid's train + val frames take ~320 MB; ADE20K's ~25 GB do not."""
    folders = [split.dataset if isinstance(split, Subset) else split for split in splits]
    if sum(folder.decoded_bytes() for folder in folders) > free_memory() / 4:
        return False
    for folder in folders:
        folder.preload(progress)
    return True


class InfiniteSampler(Sampler[int]):
    """Shuffled epochs back to back; each rank takes a disjoint slice of every shuffle (DistributedSampler's job).

    Infinite, so data loading workers never restart at an epoch boundary, and it starts at sample ``start``:
    a run resumed at iteration i draws exactly the samples the uninterrupted run would have drawn.
    """

    def __init__(self, size: int, rank: int = 0, world: int = 1, seed: int = 0, start: int = 0):
        self.size, self.rank, self.world, self.seed, self.start = size, rank, world, seed, start
        self.per_rank = size // world

    def __iter__(self):
        epoch, skip = divmod(self.start, self.per_rank)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            yield from order[self.rank: self.per_rank * self.world: self.world][skip:].tolist()
            epoch, skip = epoch + 1, 0


# ----------------------------------------------------------------------------- the pieces of a step

def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (Intel Sapphire Rapids and later), as /proc/cpuinfo lists them."""
    info = Path("/proc/cpuinfo")
    return info.exists() and "amx_bf16" in info.read_text().split()


def autocast_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for fp32. auto: bf16 where the GPU has it (no scaler needed), else fp16; on a
    CPU, bf16 where it has AMX, else fp32. Measured with benchmarks/bench_cpu_training.py on 2 cores: with AMX,
    bf16 made B0's training step about 1.5x faster; on a CPU with AVX-512 BF16 but no AMX it was slower.
    """
    if amp not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"amp must be auto, bf16, fp16 or fp32, not {amp!r}")
    if amp == "fp32":
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise ValueError("fp16 autocast needs a GPU; on a CPU use --amp bf16 or fp32")
        return torch.bfloat16 if amp == "bf16" or cpu_has_amx() else None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, device: torch.device, dtype: torch.dtype | None = None,
             rank: int = 0, world: int = 1, names: list[str] | None = None, protocol: dict | None = None) -> dict:
    """mIoU, per-class IoU and pixel accuracy over whole images; predictions resized to the label size.

    ``protocol``: keyword arguments of ``inference.segment`` (sliding window, scales, flip) instead of one pass.
    Each rank takes every world-th image; the confusion matrices are summed over ranks before computing.
    ``model_seconds`` is the time spent in the model (and protocol), without reading the data.
    """
    from .inference import segment
    from .metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    model_seconds = 0.0
    for index in range(rank, len(dataset), world):
        image, label = dataset[index]  # (3, h, w), (H, W)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if protocol is None:
                scores = model(image[None].to(device))  # (1, K, h/4, w/4)
            else:
                scores = segment(model, image[None].to(device), **protocol)  # (1, K, h, w)
        scores = F.interpolate(scores.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        prediction = scores.argmax(1)[0]
        model_seconds += time.perf_counter() - start
        matrix.update(prediction, label.to(device))
    if world > 1:
        matrix.reduce_()
    model.train(was_training)
    metrics = matrix.compute()
    metrics["iou"] = [float(x) for x in metrics["iou"]]
    metrics["model_seconds"] = model_seconds
    if names:
        metrics["classes"] = names
    return metrics


# ----------------------------------------------------------------------------- checkpoints

def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a kill mid-save leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on the same file system
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every random generator a step draws from, as tensors and ints (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so a resumed log has no duplicates."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["iter"] <= iteration]
        path.write_text("".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------- signals and processes

class StopRequest:
    """Ctrl-C or SIGTERM (a scheduler's kill, torchrun's shutdown) ends the run after the current step,
    saving latest.pt first, instead of losing everything since the last checkpoint."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def cpu_name() -> str:
    """The processor's name as the OS reports it (Linux's /proc/cpuinfo), for the summaries that state a machine."""
    info = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.*)", info.read_text()) if info.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device): from torchrun's environment variables, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank if it is true on one: all ranks must stop (or save) together."""
    if world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_bn_buffers(model: nn.Module, world: int) -> None:
    """Rank 0's BatchNorm running statistics to every rank, as mmcv's evaluation hook (broadcast_bn_buffer=True).

    Without SyncBatchNorm (on CPUs) each rank updates its own statistics in its last forward, so the ranks would
    evaluate slightly different models; after this they all evaluate the weights rank 0 saves.
    """
    if world == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                dist.broadcast(buffer, src=0)


# ----------------------------------------------------------------------------- the loop

def build_model(cfg: TrainConfig, num_classes: int) -> SegFormer:
    """From scratch, or with a pretrained encoder (e.g. nvidia/mit-b0) and a new decoder for ``num_classes``."""
    overrides = {} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}
    if cfg.pretrained:
        return SegFormer.from_pretrained(cfg.pretrained, num_classes=num_classes, **overrides)
    return SegFormer.from_config(cfg.model, num_classes=num_classes, **overrides)


def loss_options(cfg: TrainConfig, train_pixels: np.ndarray) -> dict:
    """The keyword arguments of ``segmentation_loss`` for this run; ``train_pixels`` (N, K + 1): the pixels of
    each class (and, last, the ignored ones) in each training label, which the class weights come from."""
    if cfg.class_weights is not None and cfg.class_weights not in CLASS_WEIGHTINGS:
        raise ValueError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTINGS)}, not {cfg.class_weights!r}")
    weight = None
    if cfg.class_weights is not None:
        weight = torch.tensor(class_weights(cfg.class_weights, train_pixels[:, :-1]), dtype=torch.float32)
    return {"weight": weight, "ohem_thresh": cfg.ohem_thresh, "ohem_min_kept": cfg.ohem_min_kept,
            "label_smoothing": cfg.label_smoothing}


def averaged_model(model: nn.Module, decay: float | None):
    """An exponential moving average of the weights and BatchNorm statistics (None when ``decay`` is None)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) the training ``cfg`` describes; returns a summary (losses of this call, metrics, timing)."""
    rank, world, device = setup_distributed()
    main = rank == 0
    out = Path(cfg.out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank; DDP also broadcasts rank 0's

    test_set = datasets(cfg, "test")[0] if cfg.test else None  # first: a missing test split fails before training
    train_set, names = datasets(cfg, "train")
    val_set, _ = datasets(cfg, "val")
    if cfg.val_images is not None:
        val_set = Subset(val_set, range(min(cfg.val_images, len(val_set))))
    # every file checked before the first step: decoded into memory where it fits, else each label read once
    folders = {"train": train_set, "val": val_set} | ({"test": test_set} if test_set is not None else {})
    folders = {name: split.dataset if isinstance(split, Subset) else split for name, split in folders.items()}
    counts = {}
    if not (cfg.in_memory and preload_if_it_fits([train_set, val_set], progress=main and cfg.progress)):
        counts = {name: folders[name].check_labels(progress=main and cfg.progress) for name in ("train", "val")}
    if test_set is not None:  # not kept in memory: read once after training
        counts["test"] = folders["test"].check_labels(progress=main and cfg.progress)
    if main:
        from .data import data_report

        report, warnings = data_report(
            {name: (len(folder), counts[name] if name in counts else folder.pixel_counts()) for name, folder in
             folders.items()}, names)
        print(report, flush=True)
        for warning in warnings:
            print(warning, file=sys.stderr, flush=True)
    num_classes = len(names)
    if len(train_set) < world:
        raise ValueError(f"{len(train_set)} training images cannot be split over {world} processes")
    loss_kwargs = loss_options(cfg, folders["train"].pixels_per_image())
    if main and loss_kwargs["weight"] is not None:
        print(f"class weights ({cfg.class_weights}): " + ", ".join(
            f"{name} {w:.2f}" for name, w in zip(names, loss_kwargs["weight"].tolist())), flush=True)

    model = build_model(cfg, num_classes).to(device)
    ema = averaged_model(model, cfg.ema_decay)
    optimizer, scheduler = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult, cfg.max_iters,
                                           cfg.warmup_iters, cfg.warmup_ratio, cfg.power)
    dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start, best_miou, saved_at, seconds_before = 0, -1.0, None, 0.0
    latest = out / "latest.pt"
    if cfg.resume and latest.exists():
        state = torch.load(latest, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged.fill_(state["ema_updates"])
        start, best_miou, saved_at = state["iteration"], state["best_miou"], state["iteration"]
        seconds_before = state["train_seconds"]
        rng = state["rng"]
        if len(rng) == world:
            set_rng_state(rng[rank])
        if main:
            truncate_log(out / "train_log.jsonl", start)
            truncate_log(out / "metrics.jsonl", start)
            print(f"resumed from {latest.name} at iteration {start}")

    train_model = model
    if world > 1:
        if device.type == "cuda":  # SyncBatchNorm runs on GPUs only; on CPU (gloo, tests) each rank keeps its BN
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    from .transforms import seed_worker

    sampler = InfiniteSampler(len(train_set), rank, world, cfg.seed, start=start * cfg.batch_size)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", drop_last=True, worker_init_fn=seed_worker,
                        persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed + rank + start))  # leaves global RNG alone
    batches = iter(loader)

    def checkpoint(iteration: int) -> dict:
        rng = [rng_state()]
        if world > 1:
            rng = [None] * world
            dist.all_gather_object(rng, rng_state())
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "iteration": iteration,
                "best_miou": best_miou, "train_seconds": seconds_before + run_time, "rng": rng,
                "config": asdict(cfg), "classes": names, "palette": palette_of(train_set, cfg.dataset)} | (
                    {} if ema is None else {"ema": ema.module.state_dict(), "ema_updates": int(ema.n_averaged)})

    def write_jsonl(name: str, record: dict) -> None:
        with open(out / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.max_iters, initial=start, disable=not (main and cfg.progress), dynamic_ncols=True)
    losses, metrics, status = [], None, "finished"
    run_time, logged_time, logged_iteration = 0.0, 0.0, start  # seconds in training steps, not validation
    iteration = start
    train_model.train()
    with StopRequest() as stop:
        while iteration < cfg.max_iters:
            if any_rank(stop.requested or iteration == cfg.stop_at, device, world):
                status = "interrupted" if stop.requested else "stopped"
                break
            tic = time.perf_counter()
            images, labels = next(batches)  # (B, 3, h, w), (B, h, w)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = segmentation_loss(train_model(images), labels, **loss_kwargs)
            mean_loss = loss.detach().clone()
            if world > 1:
                dist.all_reduce(mean_loss)
                mean_loss /= world
            if not math.isfinite(mean_loss.item()):  # before backward: no bad update reaches the weights
                kept = f"{latest} (iteration {saved_at}) is kept" if saved_at is not None else "no checkpoint yet"
                raise NonFiniteLossError(
                    f"loss is {mean_loss.item()} at iteration {iteration + 1}: training stopped; {kept}. "
                    f"Try a lower lr or --amp fp32, then --resume.")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(model)
            lr, head_lr = scheduler.get_last_lr()[0], max(scheduler.get_last_lr())
            scheduler.step()
            iteration += 1
            losses.append(mean_loss.item())
            run_time += time.perf_counter() - tic
            bar.update()

            if iteration % cfg.log_interval == 0 or iteration == cfg.max_iters:
                speed = (iteration - logged_iteration) * cfg.batch_size * world / (run_time - logged_time)
                logged_time, logged_iteration = run_time, iteration
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                if main:
                    write_jsonl("train_log.jsonl", {"iter": iteration, "loss": losses[-1], "lr": lr,
                                                    "head_lr": head_lr, "images_per_s": speed})
            if iteration % cfg.val_interval == 0 or iteration == cfg.max_iters:
                broadcast_bn_buffers(model, world)
                metrics = evaluate(model if ema is None else ema.module, val_set, num_classes, device, dtype,
                                   rank, world, names)
                train_model.train()
                improved = metrics["miou"] > best_miou
                best_miou = max(best_miou, metrics["miou"])
                state = checkpoint(iteration)
                if main:
                    write_jsonl("metrics.jsonl", {"iter": iteration} | metrics)
                    bar.write(f"iter {iteration}: mIoU {metrics['miou']:.4f}, pixel acc {metrics['acc']:.4f}")
                    save_atomic(state, latest)
                    if improved:
                        save_atomic(state, out / "best.pt")
                saved_at = iteration
        if saved_at != iteration:
            state = checkpoint(iteration)
            if main:
                save_atomic(state, latest)
            saved_at = iteration
    bar.close()

    summary = {"status": status, "iteration": iteration, "best_miou": best_miou,
               "train_seconds": seconds_before + run_time,  # over all resumed calls
               "images_per_s": (iteration - start) * cfg.batch_size * world / max(run_time, 1e-9),  # this call
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "world_size": world}
    test_metrics = None
    if main and iteration == cfg.max_iters:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_curves(out)
        save_prediction_grid(model if ema is None else ema.module, val_set, cfg.dataset, out / "predictions.png")
        if cfg.test:
            best = torch.load(out / "best.pt", map_location=device, weights_only=True)
            model.load_state_dict(evaluated_weights(best))
            test_metrics = {"iter": best["iteration"]} | evaluate(model, test_set, num_classes, device, dtype,
                                                                  names=names)
            (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1))
    if world > 1:
        dist.barrier()
    return summary | {"losses": losses, "metrics": metrics, "test_metrics": test_metrics, "model": model}


# ----------------------------------------------------------------------------- figures a reader opens

def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def plot_curves(out_dir: str | Path):
    """Training loss and validation mIoU against iterations, from the run's logs; saved as curves.png."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    log, val = read_jsonl(out_dir / "train_log.jsonl"), read_jsonl(out_dir / "metrics.jsonl")
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot([r["iter"] for r in log], [r["loss"] for r in log])
    ax_loss.set(xlabel="iteration", ylabel="training loss (cross-entropy)", title="loss")
    ax_miou.plot([r["iter"] for r in val], [100 * r["miou"] for r in val], marker="o")
    ax_miou.set(xlabel="iteration", ylabel="validation mIoU (%)", title="mIoU")
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=100)
    plt.close(fig)
    return fig


def palette_of(dataset, dataset_name: str) -> list[tuple[int, int, int]]:
    """The colour of each class: a folder dataset's own (classes.json, else VOC colours), CamVid's, ADE20K's."""
    from . import palette as palettes

    folder = dataset.dataset if isinstance(dataset, Subset) else dataset
    if getattr(folder, "palette", None) is not None:
        return [tuple(int(c) for c in colour) for colour in folder.palette]
    return list(palettes.CAMVID_PALETTE if dataset_name == "camvid" else palettes.ADE20K_PALETTE)


def save_prediction_grid(model: nn.Module, dataset, dataset_name: str, path: Path, count: int = 3):
    """Rows of image | ground truth | prediction for the first ``count`` images, in the dataset's palette."""
    import matplotlib.pyplot as plt

    from . import palette as palettes
    from .transforms import denormalize

    colours = palette_of(dataset, dataset_name)
    device = next(model.parameters()).device
    fig, axes = plt.subplots(count, 3, figsize=(10, 2.6 * count), squeeze=False)
    for row, index in enumerate(range(min(count, len(dataset)))):
        image, label = dataset[index]
        prediction = model.predict(image[None].to(device))[0].cpu()  # (h, w)
        prediction = F.interpolate(prediction[None, None].float(), size=label.shape[-2:], mode="nearest")[0, 0]
        panels = (denormalize(image), palettes.colorize(label, colours), palettes.colorize(prediction.long(), colours))
        for ax, panel, title in zip(axes[row], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """A flag per TrainConfig field (``--max-iters``, ``--crop-size H W``, ``--resume``/``--no-resume``...)."""
    parser = argparse.ArgumentParser(prog="python -m segformer_edu.train", description=__doc__.split("\n")[0])
    for f in fields(TrainConfig):
        flag, kind = "--" + f.name.replace("_", "-"), f.type
        options = [a for a in get_args(kind) if a is not type(None)] if get_origin(kind) is UnionType else [kind]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        elif get_origin(options[0]) is tuple:
            parts = get_args(options[0])
            count = "+" if parts[-1] is Ellipsis else len(parts)  # tuple[str, ...]: one or more values
            parser.add_argument(flag, nargs=count, type=parts[0], default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=options[0], default=f.default, help=f.metadata["help"])
    values = vars(parser.parse_args(argv))
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def per_class_iou(metrics: dict, split: str) -> str:
    """One line: mIoU and each class's IoU under its name (n/a: the class is in neither labels nor predictions)."""
    names = metrics.get("classes") or [f"class_{k}" for k in range(len(metrics["iou"]))]
    scores = ", ".join(f"{name} {'n/a' if math.isnan(iou) else f'{100 * iou:.1f}'}"
                       for name, iou in zip(names, metrics["iou"]))
    return f"{split} mIoU {100 * metrics['miou']:.2f}%; IoU per class (%): {scores}"


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        result = train(cfg)
    except (FileNotFoundError, NonFiniteLossError, ValueError) as error:  # a message, not a traceback
        return errors.report(error)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        for split, metrics in (("val", result["metrics"]), ("test", result["test_metrics"])):
            if metrics:
                print(per_class_iou(metrics, split))
        summary = {k: v for k, v in result.items() if k not in ("losses", "model", "metrics", "test_metrics")}
        print(json.dumps(summary | {"miou": (result["metrics"] or {}).get("miou")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
