"""The CPU recipe's whole training iteration, data loading included, with the decoder in the paper's order and
fused first (``--fuse-first``; book chapter 8, "what the speed buys").

Each trial is the trainer itself (``segformer_edu.train.train``) on CamVid with the settings of
scripts/camvid_cpu_run.sh for B0 (half-size frames, 180x240 crops, batch 8, ENet's class weights, bf16, data
loaded in the training process), stopped after --iters iterations as if interrupted. The two orders take turns,
--repeats times each; a trial's speed is the median of its logged images/s after the first --skip iterations
(the first steps also warm the caches). The script refuses to start under load and records the machine.

    python benchmarks/bench_cpu_recipe.py            # writes book/results/cpu_recipe_speed.json
    python benchmarks/bench_cpu_recipe.py --iters 4 --skip 2 --repeats 1 --max-load 99 --out /tmp/recipe.json
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from segformer_edu.runs import read_jsonl
from segformer_edu.system import machine_record, refuse_under_load
from segformer_edu.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
# scripts/camvid_cpu_run.sh and scripts/cpu_camvid_b0.sh, at the equal-crops runs' length
RECIPE = dict(dataset="camvid", model="b0", crop_size=(180, 240), scale=(240, 180), ratio_range=(0.5, 2.0),
              val_scale=(240, 180), batch_size=8, max_iters=2200, warmup_iters=110, class_weights="enet",
              num_workers=0, amp="bf16", lr=1e-3, head_lr_mult=10.0, progress=False)


def trial(fuse_first: bool, iters: int, skip: int, data_root: str | None) -> float:
    """Median images/s of the trainer's logged iterations after the first ``skip``."""
    with tempfile.TemporaryDirectory() as folder:
        cfg = TrainConfig(**RECIPE | dict(fuse_first=fuse_first, stop_at=iters, log_interval=1,
                                          data_root=data_root, out_dir=f"{folder}/run"))
        train(cfg)
        log = read_jsonl(Path(cfg.out_dir) / "train_log.jsonl")
    return statistics.median(line["images_per_s"] for line in log[skip:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=40, help="iterations of each trial")
    parser.add_argument("--skip", type=int, default=5, help="first iterations of a trial left out")
    parser.add_argument("--repeats", type=int, default=2, help="trials of each order, taking turns")
    parser.add_argument("--data-root", default=None, help="CamVid folder (default: as the trainer)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_recipe_speed.json")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start when the 1-minute load average is above this")
    args = parser.parse_args()
    if args.skip >= args.iters:
        parser.error(f"--skip {args.skip} leaves none of --iters {args.iters}: skip fewer")
    load_before = refuse_under_load(args.max_load)
    speeds = {"paper order": [], "fuse first": []}
    for _ in range(args.repeats):
        for order in speeds:
            speeds[order].append(trial(order == "fuse first", args.iters, args.skip, args.data_root))
            print(f"{order}: {speeds[order][-1]:.1f} images/s", flush=True)
    result = machine_record(load_before) | {
        "recipe": {key: value for key, value in RECIPE.items() if key != "progress"},
        "iters": args.iters, "skip": args.skip,
        "images_per_s": {order: statistics.median(values) for order, values in speeds.items()},
        "trials": speeds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
