"""Store a finished CamVid run for the book (chapter 8): the best weights in the Hugging Face layout, evaluated
afresh on the 233 test frames, beside the run's logs and figures.

    python scripts/export_camvid_run.py --run runs/camvid_b0_cpu --out book/results/camvid_b0_cpu

Writes to --out: ``config.json`` (the 11 class names as labels) and ``model.safetensors`` (SegFormer in fp16,
loadable by ``SegFormer.from_pretrained`` and transformers' ``SegformerForSemanticSegmentation.from_pretrained``;
chapter 11's CNN in fp32, loadable by ``DeepLabV3Plus.from_pretrained``); ``test_metrics.json`` from the stored
weights themselves (predictions resized to the 360x480 labels, void
ignored); ``train_log.jsonl``, ``metrics.jsonl``, ``curves.png``, ``summary.json`` (machine, threads, dtype,
wall time, iterations, images seen, evaluation scale, command).
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from segformer_edu import SegFormer, cnn
from segformer_edu.checkpoint import evaluated_weights, save_pretrained
from segformer_edu.data import CAMVID_CLASSES
from segformer_edu.system import cpu_name
from segformer_edu.train import TrainConfig, datasets, evaluate, load_summary, plot_curves, read_jsonl


def run_record(run: Path, latest: dict) -> dict:
    """What the trainer's own summary.json says of the run beyond its config: the precision it trained in and
    why; and the load average while it trained, over every resumed call (whether it had the cores to itself)."""
    trained = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    return {"precision": trained.get("precision"), "precision_reason": trained.get("precision_reason"),
            **load_summary(latest.get("load_averages", []))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run's out_dir (best.pt, logs)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", default=None, help="the command that made the run, recorded in summary.json")
    args = parser.parse_args()

    best_path = args.run / "best.pt"
    if not best_path.exists():
        sys.exit(f"error: {best_path} not found: train first (the run writes best.pt at each better validation)")
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in best["config"].items()})
    args.out.mkdir(parents=True, exist_ok=True)
    if cfg.model == cnn.NAME:  # the CNN baseline of chapter 11: its own folder format
        model = cnn.DeepLabV3Plus.from_config(cfg.model, num_classes=len(CAMVID_CLASSES))
        model.load_state_dict(evaluated_weights(best))
        # float32 (61 MB), as the stored run was exported: chapter 11's robustness results are keyed
        # to these weights' digest (float16 would be safe too: save_pretrained keeps BatchNorm's
        # statistics in float32)
        model.eval().save_pretrained(args.out, class_names=list(CAMVID_CLASSES), dtype=torch.float32)
        stored, weights = cnn.DeepLabV3Plus.from_pretrained(args.out), "model.safetensors (fp32)"
    else:
        model = SegFormer.from_config(cfg.model or "b0", num_classes=len(CAMVID_CLASSES))
        model.load_state_dict(evaluated_weights(best))
        save_pretrained(model.eval(), args.out, class_names=list(CAMVID_CLASSES), dtype=torch.float16)
        stored = SegFormer.from_pretrained(args.out).eval()  # what a reader loads: fp16 weights in fp32
        weights = "model.safetensors (fp16)"
    test_set, names = datasets(cfg, "test")
    start = time.perf_counter()
    metrics = evaluate(stored, test_set, len(names), torch.device("cpu"), names=names)
    seconds = time.perf_counter() - start
    test_metrics = {"iter": best["iteration"], "split": "test", "frames": len(test_set),
                    "eval_scale": cfg.val_scale, "weights": weights} | metrics
    (args.out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1))

    for name in ("train_log.jsonl", "metrics.jsonl"):
        shutil.copy(args.run / name, args.out / name)
    plot_curves(args.out)
    log, latest = read_jsonl(args.run / "train_log.jsonl"), torch.load(args.run / "latest.pt", weights_only=True)
    summary = {
        "machine": cpu_name(), "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "dtype": cfg.amp, "iterations": latest["iteration"], "batch_size": cfg.batch_size,
        "images_seen": latest["iteration"] * cfg.batch_size, "train_hours": latest["train_seconds"] / 3600,
        # the trainer's own count over resumed calls, pauses left out (None from a checkpoint before the count)
        "wall_hours": latest["wall_seconds"] / 3600 if latest.get("wall_seconds") else None,
        "best_iteration": best["iteration"], "best_val_miou": best["best_miou"], "test_miou": metrics["miou"],
        "crop_size": cfg.crop_size, "scale": cfg.scale, "ratio_range": cfg.ratio_range, "eval_scale": cfg.val_scale,
        "model": cfg.model or "b0", "optimizer": cfg.optimizer, "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay, "power": cfg.power, "min_lr": cfg.min_lr,
        "lr": cfg.lr, "head_lr_mult": cfg.head_lr_mult, "warmup_iters": cfg.warmup_iters,
        "class_weights": cfg.class_weights, "ohem_thresh": cfg.ohem_thresh, "label_smoothing": cfg.label_smoothing,
        "drop_path_rate": cfg.drop_path_rate, "ema_decay": cfg.ema_decay,
        "max_iters": cfg.max_iters, "final_images_per_s": log[-1]["images_per_s"] if log else None,
        "test_eval_seconds": seconds, "command": args.command, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "seed": cfg.seed, **run_record(args.run, latest),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"test mIoU {100 * metrics['miou']:.2f} % (iteration {best['iteration']}), written to {args.out}")


if __name__ == "__main__":
    main()
