"""A small sweep for SegFormer-B0 from scratch on CamVid on a CPU (book chapter 8): which learning rate, which
resolution, and whether bf16 autocast changes the loss curve.

Every run has the same budget (--iters optimizer steps of batch 8, seed 0, so the same data order) and its own
short schedule (10 % linear warm-up, then poly decay to 0), and is validated once, on the 101 val frames.

  1. learning rate, at half resolution (frames 240x180, crops 180x240): the paper's 6e-5 and larger ones;
  2. resolution, at the best of those rates: crops of 180x240 from full-resolution frames, validated at 480x360
     (the same cost per step as half resolution; thin classes such as Pole are wider in pixels);
  3. bf16 autocast against fp32 on the first steps of the best learning rate's run (same schedule, same data).

    python scripts/cpu_camvid_sweep.py                       # ~20 min on 2 cores
    python scripts/cpu_camvid_sweep.py --iters 30 --out /tmp/sweep   # a smoke test

Writes ``sweep.json`` (one row per run: settings, val mIoU, per-class IoU, seconds, losses) to --out.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from segformer_edu.train import NonFiniteLossError, TrainConfig, read_jsonl, train

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results" / "camvid_b0_cpu"
LEARNING_RATES = (6e-5, 3e-4, 1e-3, 3e-3)
HALF = dict(scale=(240, 180), val_scale=(240, 180))  # (long, short) side of the frames, train and val
FULL = dict(scale=(480, 360), val_scale=None)


def run(name: str, cfg: TrainConfig) -> dict:
    """Train ``cfg`` from scratch; a row of the sweep's table (a diverged run is a row too)."""
    start = time.perf_counter()
    row = {"name": name, "lr": cfg.lr, "head_lr_mult": cfg.head_lr_mult, "scale": cfg.scale,
           "crop_size": cfg.crop_size, "amp": cfg.amp, "iters": cfg.max_iters, "batch_size": cfg.batch_size}
    try:
        result = train(cfg)
        metrics = result["metrics"] or {}  # None when stopped before the (only) validation
        row |= {key: metrics.get(key) for key in ("miou", "acc", "iou", "classes")} | {"status": result["status"]}
    except NonFiniteLossError as error:
        row |= {"miou": None, "status": f"diverged: {error}"}
    row["seconds"] = time.perf_counter() - start
    row["losses"] = [record["loss"] for record in read_jsonl(Path(cfg.out_dir) / "train_log.jsonl")]
    print(f"{name}: mIoU {row['miou']}, {row['seconds']:.0f} s", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--bf16-iters", type=int, default=100)
    parser.add_argument("--runs-dir", default="runs/sweep")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    base = TrainConfig(dataset="camvid", model="b0", crop_size=(180, 240), batch_size=8, max_iters=args.iters,
                       warmup_iters=args.iters // 10, val_interval=args.iters, log_interval=1, num_workers=0,
                       amp="fp32", seed=0, progress=False, **HALF)
    rows = []
    for lr in LEARNING_RATES:
        rows.append(run(f"lr {lr:g}, half", replace(base, lr=lr, out_dir=f"{args.runs_dir}/lr_{lr:g}")))
    best = max((r for r in rows if r["miou"] is not None), key=lambda r: r["miou"])
    rows.append(run(f"lr {best['lr']:g}, full", replace(base, lr=best["lr"], out_dir=f"{args.runs_dir}/full", **FULL)))
    # the best run's schedule and data order, stopped early: its losses against the fp32 run's, step by step
    bf16 = replace(base, lr=best["lr"], amp="bf16", stop_at=args.bf16_iters, out_dir=f"{args.runs_dir}/bf16")
    rows.append(run(f"lr {best['lr']:g}, half, bf16", bf16) | {"iters": args.bf16_iters})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out / 'sweep.json'}")


if __name__ == "__main__":
    main()
