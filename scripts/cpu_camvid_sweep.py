"""Short runs of SegFormer-B0 from scratch on CamVid on a CPU (book chapter 8): what the from-scratch recipe
should be. Every run has the same budget (--iters optimizer steps of batch 8, seed 0, so the same data order;
the lever sweep repeats every run at each of --seeds) and its own short schedule (10 % linear warm-up, then poly
decay to 0), and is validated once, on the 101 val frames; the test frames are never read.

``lr`` (the first sweep, fp32, ``sweep.json``):
  1. learning rate, at half resolution (frames 240x180, crops 180x240): the paper's 6e-5 and larger ones;
  2. resolution, at the best of those rates: crops of 180x240 from full-resolution frames, validated at 480x360;
  3. bf16 autocast against fp32 on the first steps of the best learning rate's run (same schedule, same data).

``cnn`` (``cnn_sweep.json``): the optimiser of the CNN baseline (chapter 11), DeepLabV3+ with MobileNetV2, on
  the same data, crops, loss (ENet's class weights) and batch as the SegFormer run: AdamW as SegFormer's recipe
  (head x10) at three rates, and mmseg's SGD recipe for CNNs (momentum 0.9, weight decay 5e-4, poly power 0.9 to
  1e-4, no warm-up, auxiliary head at weight 0.4) at two, so that neither model runs on a rate tuned for the
  other.

``levers`` (the second, at lr 1e-3 in bf16, ``levers.json``): one change at a time against the same base run,
  each run at every seed of --seeds (default 0 1 2), so that the base's own seeds measure the noise:
  - the loss: ENet's class weights, median-frequency balancing, OHEM (thresh 0.7);
  - resolution: crops of native frames, frames at 3/4 size, against the base's half-size frames;
  - regularisation: stochastic depth 0 and 0.2 (base 0.1), a 3x longer warm-up, a moving average of the
    weights, label smoothing 0.1;
  then every change whose mean over the seeds beat the base's by more than twice the standard error of the
  difference (sqrt(sd_change^2 / n + sd_base^2 / n)), together, at the same seeds.

    python scripts/cpu_camvid_sweep.py levers                # ~100 min on 2 cores (3 seeds)
    python scripts/cpu_camvid_sweep.py cnn --iters 150       # ~30 min on 2 cores
    python scripts/cpu_camvid_sweep.py levers --iters 4 --runs-dir /tmp/sweep --out /tmp/sweep  # a smoke test

Each finished row is kept in RUNS_DIR/rows.json, so a killed sweep continues where it stopped.
"""

import argparse
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

from segformer_edu.runs import read_jsonl
from segformer_edu.seeds import beats, over_seeds
from segformer_edu.train import NonFiniteLossError, TrainConfig, train

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
OUT_DIRS = {"lr": "camvid_b0_cpu", "levers": "camvid_b0_cpu", "cnn": "camvid_cnn_cpu"}  # under RESULTS
LEARNING_RATES = (6e-5, 3e-4, 1e-3, 3e-3)
HALF = dict(scale=(240, 180), val_scale=(240, 180))  # (long, short) side of the frames, train and val
THREE_QUARTERS = dict(scale=(360, 270), val_scale=(360, 270))
FULL = dict(scale=(480, 360), val_scale=None)
LEVER_LR = 1e-3  # the lr sweep's best
# mmseg's OHEM keeps at least 100,000 pixels of a 512x1024 Cityscapes crop (19 %): the same share of 180x240
OHEM_MIN_KEPT = round(100_000 / (512 * 1024) * 180 * 240)
ROW_FIELDS = ("model", "optimizer", "lr", "head_lr_mult", "weight_decay", "power", "min_lr", "scale", "crop_size",
              "amp", "batch_size", "class_weights", "ohem_thresh", "ohem_min_kept",
              "label_smoothing", "drop_path_rate", "ema_decay", "warmup_iters", "seed", "val_scale")


def run(name: str, cfg: TrainConfig) -> dict:
    """Train ``cfg`` from scratch; a row of the sweep's table (a diverged run is a row too)."""
    start = time.perf_counter()
    row = {"name": name} | {key: getattr(cfg, key) for key in ROW_FIELDS} | {"iters": cfg.max_iters}
    try:
        result = train(cfg)
        if result["status"] == "interrupted":  # killed: this run is not a result, and the sweep stops here
            raise SystemExit(f"{name}: interrupted, so not kept; run the same command again (levers and cnn "
                             "continue from this run)")
        metrics = result["metrics"] or {}  # None when stopped before the (only) validation
        row |= {key: metrics.get(key) for key in ("miou", "acc", "iou", "classes")} | {"status": result["status"]}
        # as its summary records them: the precision it ran at, the crops it saw, how busy the cores were
        row |= {key: result[key] for key in ("precision", "images_seen", "load_average")}
    except NonFiniteLossError as error:
        row |= {"miou": None, "status": f"diverged: {error}"}
    row["seconds"] = time.perf_counter() - start
    row["losses"] = [record["loss"] for record in read_jsonl(Path(cfg.out_dir) / "train_log.jsonl")]
    print(f"{name}: mIoU {row['miou']}, {row['seconds']:.0f} s", flush=True)
    return row


def base_config(iters: int, **changes) -> TrainConfig:
    settings = dict(dataset="camvid", model="b0", crop_size=(180, 240), batch_size=8, max_iters=iters,
                    warmup_iters=max(iters // 10, 1), val_interval=iters, log_interval=1, num_workers=0,
                    seed=0, progress=False) | HALF
    return TrainConfig(**settings | changes)


def lr_sweep(args) -> list[dict]:
    base = base_config(args.iters, amp="fp32")
    rows = []
    for lr in LEARNING_RATES:
        rows.append(run(f"lr {lr:g}, half", replace(base, lr=lr, out_dir=f"{args.runs_dir}/lr_{lr:g}")))
    best = max((r for r in rows if r["miou"] is not None), key=lambda r: r["miou"])
    rows.append(run(f"lr {best['lr']:g}, full",
                    replace(base, lr=best["lr"], out_dir=f"{args.runs_dir}/full", **FULL)))
    # the best run's schedule and data order, stopped early: its losses against the fp32 run's, step by step
    bf16 = replace(base, lr=best["lr"], amp="bf16", stop_at=args.bf16_iters, out_dir=f"{args.runs_dir}/bf16")
    rows.append(run(f"lr {best['lr']:g}, half, bf16", bf16) | {"iters": args.bf16_iters})
    return rows


def lever_runs(iters: int) -> dict[str, tuple[str, dict]]:
    """name: (lever group, changes to the base run)."""
    return {
        "base": ("base", {}),
        "ENet class weights": ("loss", {"class_weights": "enet"}),
        "median-frequency weights": ("loss", {"class_weights": "median"}),
        "OHEM 0.7": ("loss", {"ohem_thresh": 0.7, "ohem_min_kept": OHEM_MIN_KEPT}),
        "native frames": ("resolution", FULL),
        "3/4-size frames": ("resolution", THREE_QUARTERS),
        "stochastic depth 0": ("regularisation", {"drop_path_rate": 0.0}),
        "stochastic depth 0.2": ("regularisation", {"drop_path_rate": 0.2}),
        "warm-up 30 %": ("regularisation", {"warmup_iters": max(3 * iters // 10, 1)}),
        "EMA 0.99": ("regularisation", {"ema_decay": 0.99}),
        "label smoothing 0.1": ("regularisation", {"label_smoothing": 0.1}),
    }


def combined_changes(rows: list[dict], runs: dict) -> tuple[list[str], dict]:
    """The changes that beat the base over the seeds (``segformer_edu.seeds.beats``), at most one per group but
    regularisation (the best loss, the best resolution)."""
    values = over_seeds(rows)
    winners = [name for name in values if name in runs and runs[name][0] != "base"
               and beats(values[name], values["base"])]
    chosen = {}
    for name in sorted(winners, key=lambda name: -statistics.mean(values[name])):
        group = runs[name][0]
        if group == "regularisation" or group not in {runs[other][0] for other in chosen}:
            chosen[name] = runs[name][1]
    return list(chosen), {key: value for changes in chosen.values() for key, value in changes.items()}


CNN_OPTIMISERS = {
    "AdamW lr 3e-4": {"lr": 3e-4},
    "AdamW lr 1e-3": {"lr": 1e-3},
    "AdamW lr 3e-3": {"lr": 3e-3},
    "SGD lr 0.01": {"optimizer": "sgd", "lr": 0.01},
    "SGD lr 0.03": {"optimizer": "sgd", "lr": 0.03},
}
# mmseg's schedule for CNNs (configs/_base_/schedules/schedule_80k.py): SGD, poly 0.9 down to 1e-4
SGD_RECIPE = {"momentum": 0.9, "weight_decay": 5e-4, "power": 0.9, "min_lr": 1e-4, "warmup_iters": 0,
              "head_lr_mult": 1.0}


def cnn_sweep(args) -> list[dict]:
    from segformer_edu.cnn import NAME

    base = base_config(args.iters, amp="bf16", model=NAME, class_weights="enet")
    return resumable_rows(args, base, {
        name: ("optimiser", changes | (SGD_RECIPE if changes.get("optimizer") == "sgd" else {}))
        for name, changes in CNN_OPTIMISERS.items()})


def resumable_rows(args, base: TrainConfig, runs: dict, seeds=(0,)) -> list[dict]:
    """Run every (group, changes) of ``runs`` at each of ``seeds``, seed by seed, unless its row is
    already in RUNS_DIR/rows.json; all rows."""
    done_path = Path(args.runs_dir) / "rows.json"
    rows = json.loads(done_path.read_text()) if done_path.exists() else []
    done = {(row["name"], row["seed"]) for row in rows}
    for seed in seeds:
        for name, (group, changes) in runs.items():
            if (name, seed) in done:
                continue
            folder = slug(name) if seed == 0 else f"{slug(name)}_seed{seed}"
            cfg = replace(base, out_dir=f"{args.runs_dir}/{folder}", seed=seed, **changes)
            shutil.rmtree(cfg.out_dir, ignore_errors=True)  # a run killed half-way starts again
            rows.append(run(name, cfg) | {"group": group})
            done_path.write_text(json.dumps(rows, indent=1))
    return rows


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def lever_sweep(args) -> list[dict]:
    base = base_config(args.iters, amp="bf16", lr=LEVER_LR)
    runs = lever_runs(args.iters)
    rows = resumable_rows(args, base, runs, args.seeds)
    names, changes = combined_changes(rows, runs)
    if len(names) < 2:
        return rows
    rows = resumable_rows(args, base, {"combined": ("combined", changes)}, args.seeds)
    return [row | {"combines": names} if row["name"] == "combined" else row for row in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", choices=("lr", "levers", "cnn"), help="which sweep (see above)")
    parser.add_argument("--iters", type=int, default=300, help="optimizer steps of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="levers: the seeds every run is repeated at (at least two)")
    parser.add_argument("--bf16-iters", type=int, default=100, help="lr sweep: steps of the bf16 comparison")
    parser.add_argument("--runs-dir", default=None, help="the runs' folders (default: runs/sweep_SWEEP)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the sweep's json (default: book/results/camvid_b0_cpu, for cnn "
                             "book/results/camvid_cnn_cpu)")
    args = parser.parse_args()
    if args.sweep == "levers" and len(set(args.seeds)) < 2:
        parser.error("levers needs at least two different --seeds to measure its noise, "
                     "e.g. --seeds 0 1 2")
    args.runs_dir = args.runs_dir or f"runs/sweep_{args.sweep}"
    args.out = args.out or RESULTS / OUT_DIRS[args.sweep]
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    rows = {"lr": lr_sweep, "levers": lever_sweep, "cnn": cnn_sweep}[args.sweep](args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / {"lr": "sweep.json", "levers": "levers.json", "cnn": "cnn_sweep.json"}[args.sweep]
    path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
