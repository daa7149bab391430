"""The training loader of the GPU recipe on this machine's CPU cores (book chapter 8): images/s.

The loader is the trainer's own: CamVid's training frames decoded once into memory (``--in-memory``,
the default), the recipe's transform (a random rescale of the 480x360 frames by 0.5-2, a 360x480
crop, flip, photometric distortion, normalise, pad) and batches of 16, in this process
(``--workers 0``) or in worker processes. On a GPU the step waits for it wherever it is slower than
the step, so it is the floor of the run's time on a machine with these cores.

    python benchmarks/bench_loader.py                       # in-process, 2 workers, 3 workers
    python benchmarks/bench_loader.py --workers 0 --batches 30 --out book/results/loader_speed_cpu.json

A measurement on a busy machine measures the machine's load too: the 1-minute load average is
recorded before and after, and the script refuses to start above ``--max-load``.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from segformer_edu.datasets import build_split
from segformer_edu.recipes import recipe
from segformer_edu.system import available_cpus, machine_record, refuse_under_load
from segformer_edu.train import TrainConfig
from segformer_edu.transforms import seed_worker


def cpu_seconds(worker_pids: list[int]) -> float:
    """CPU time of this process and of its data-loading workers (Linux's /proc/PID/stat)."""
    total = time.process_time()
    for pid in worker_pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def loader_images_per_s(dataset, batch_size: int, workers: int, batches: int) -> dict:
    """Images/s over ``batches`` batches, after two untimed ones (the workers' start, the colour
    tables' first use); and per second of CPU time (this process's and its workers'), which other
    work on the machine disturbs less than the wall clock."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, worker_init_fn=seed_worker, generator=generator,
                        persistent_workers=workers > 0)
    batch_iter = iter(loader)
    while True:
        try:
            for _ in range(2):
                next(batch_iter)
            pids = [worker.pid for worker in getattr(batch_iter, "_workers", [])]
            start, cpu_start = time.perf_counter(), cpu_seconds(pids)
            for _ in range(batches):
                next(batch_iter)
            images = batches * batch_size
            cpu = cpu_seconds(pids) - cpu_start
            return {"images_per_s": round(images / (time.perf_counter() - start), 1),
                    "images_per_cpu_s": round(images / cpu, 1)}
        except StopIteration:  # an epoch ended (367 frames: 22 batches): start another
            batch_iter = iter(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="gpu-camvid")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 3],
                        help="data-loading processes (0: this process)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start when the 1-minute load average is above this")
    parser.add_argument("--label", default="", help="what this measurement is (stored with it)")
    parser.add_argument("--out", type=Path, help="write the result here (JSON)")
    args = parser.parse_args()
    load_before = refuse_under_load(args.max_load)
    settings = recipe(args.recipe)
    cfg = TrainConfig(**settings)
    dataset, _ = build_split(cfg, "train")
    dataset.preload()  # --in-memory: every frame decoded once
    speeds = {}
    for workers in args.workers:
        speeds[str(workers)] = loader_images_per_s(dataset, cfg.batch_size, workers, args.batches)
        print(f"{workers} workers: {speeds[str(workers)]}", flush=True)
    result = {"label": args.label, "recipe": args.recipe, "batch_size": cfg.batch_size,
              "crop_size": cfg.crop_size, "scale": cfg.scale, "ratio_range": cfg.ratio_range,
              "by_workers": speeds, "timed_batches": args.batches,
              "cpus": available_cpus(), "torch_threads_in_process": torch.get_num_threads()}
    result |= machine_record(load_before)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
