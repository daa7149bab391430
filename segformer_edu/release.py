"""A finished training run stored as a folder a reader loads (book chapters 8 and 11): the best
weights in the Hugging Face layout, evaluated afresh on the test split, beside the run's logs, its
curves and a summary of how it was trained.

``release_run(run, out)`` writes to ``out``: ``config.json`` (the class names as labels) and
``model.safetensors`` (SegFormer in fp16, loadable by ``SegFormer.from_pretrained`` and
transformers' ``SegformerForSemanticSegmentation.from_pretrained``; the CNN in fp32, loadable by
``DeepLabV3Plus.from_pretrained``); ``test_metrics.json`` from the stored weights themselves
(predictions resized to the labels, void ignored); ``train_log.jsonl``, ``metrics.jsonl``,
``curves.png``, ``summary.json`` (machine, threads, dtype, wall time, iterations, images seen,
evaluation scale, command). ``scripts/export_camvid_run.py`` is its command line.
"""

import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from . import cnn
from .checkpoint import evaluated_weights, save_pretrained
from .data import CAMVID_CLASSES
from .datasets import build_split
from .evaluation import evaluate
from .model import SegFormer
from .plots import plot_curves
from .runs import load_summary, read_jsonl
from .system import cpu_name
from .train import TrainConfig


def run_record(run: Path, latest: dict) -> dict:
    """What the trainer's own summary.json says of the run beyond its config: the precision it
    trained in and why; and the load average while it trained, over every resumed call (whether it
    had the cores to itself)."""
    summary = run / "summary.json"
    trained = json.loads(summary.read_text()) if summary.exists() else {}
    return {"precision": trained.get("precision"),
            "precision_reason": trained.get("precision_reason"),
            **load_summary(latest.get("load_averages", []))}


def store_weights(cfg: TrainConfig, best: dict, out: Path) -> tuple[nn.Module, str]:
    """best.pt's evaluated weights saved to ``out``; returns (the model read back from there, as a
    reader loads it, and what the weights file holds)."""
    names = list(best.get("classes") or CAMVID_CLASSES)  # runs before classes were saved: CamVid
    if cfg.model == cnn.NAME:  # the CNN baseline of chapter 11: its own folder format
        model = cnn.DeepLabV3Plus.from_config(cfg.model, num_classes=len(names))
        model.load_state_dict(evaluated_weights(best))
        # float32 (61 MB), as the stored run was exported: chapter 11's robustness results are keyed
        # to these weights' digest (float16 would be safe too: save_pretrained keeps BatchNorm's
        # statistics in float32)
        model.eval().save_pretrained(out, class_names=names, dtype=torch.float32)
        return cnn.DeepLabV3Plus.from_pretrained(out), "model.safetensors (fp32)"
    model = SegFormer.from_config(cfg.model or "b0", num_classes=len(names))
    model.load_state_dict(evaluated_weights(best))
    save_pretrained(model.eval(), out, class_names=names, dtype=torch.float16)
    # what a reader loads: fp16 weights in fp32
    return SegFormer.from_pretrained(out).eval(), "model.safetensors (fp16)"


def run_summary(cfg: TrainConfig, run: Path, best: dict, latest: dict, metrics: dict,
                seconds: float, command: str | None) -> dict:
    """summary.json of the stored run: the machine, the recipe, its time and its results."""
    log = read_jsonl(run / "train_log.jsonl")
    return {
        "machine": cpu_name(), "device": "cpu", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "dtype": cfg.amp, "iterations": latest["iteration"],
        "batch_size": cfg.batch_size, "images_seen": latest["iteration"] * cfg.batch_size,
        "train_hours": latest["train_seconds"] / 3600,
        # the trainer's own count over resumed calls, pauses left out (None from a checkpoint
        # before the count)
        "wall_hours": latest["wall_seconds"] / 3600 if latest.get("wall_seconds") else None,
        "best_iteration": best["iteration"], "best_val_miou": best["best_miou"],
        "test_miou": metrics["miou"], "crop_size": cfg.crop_size, "scale": cfg.scale,
        "ratio_range": cfg.ratio_range, "photometric": cfg.photometric, "eval_scale": cfg.val_scale,
        "model": cfg.model or "b0", "optimizer": cfg.optimizer, "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay, "power": cfg.power, "min_lr": cfg.min_lr,
        "lr": cfg.lr, "head_lr_mult": cfg.head_lr_mult, "warmup_iters": cfg.warmup_iters,
        "class_weights": cfg.class_weights, "ohem_thresh": cfg.ohem_thresh,
        "label_smoothing": cfg.label_smoothing,
        "drop_path_rate": cfg.drop_path_rate, "ema_decay": cfg.ema_decay,
        "max_iters": cfg.max_iters, "final_images_per_s": log[-1]["images_per_s"] if log else None,
        "test_eval_seconds": seconds, "command": command,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "seed": cfg.seed, **run_record(run, latest),
    }


def release_run(run: str | Path, out: str | Path, command: str | None = None) -> dict:
    """Store the finished run in the folder ``run`` (its best.pt, latest.pt and logs) into ``out``;
    returns the stored weights' test metrics."""
    run, out = Path(run), Path(out)
    best_path = run / "best.pt"
    if not best_path.exists():
        raise FileNotFoundError(f"{best_path} not found: train first (the run writes best.pt at "
                                "each better validation)")
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in best["config"].items()})
    out.mkdir(parents=True, exist_ok=True)
    stored, weights = store_weights(cfg, best, out)
    test_set, names = build_split(cfg, "test")
    start = time.perf_counter()
    metrics = evaluate(stored, test_set, len(names), torch.device("cpu"), names=names)
    seconds = time.perf_counter() - start
    test_metrics = {"iter": best["iteration"], "split": "test", "frames": len(test_set),
                    "eval_scale": cfg.val_scale, "weights": weights} | metrics
    (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1))
    for name in ("train_log.jsonl", "metrics.jsonl"):
        shutil.copy(run / name, out / name)
    plot_curves(out)
    latest = torch.load(run / "latest.pt", weights_only=True)
    summary = run_summary(cfg, run, best, latest, metrics, seconds, command)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return test_metrics
