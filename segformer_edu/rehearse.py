"""A recipe rehearsed for a few iterations on the machine at hand (book chapter 8): before an hour
on a GPU, it shows that the run starts and fits, and where its time will go.

    python -m segformer_edu.rehearse --recipe gpu-camvid --iters 3
    python -m segformer_edu.rehearse --recipe gpu-camvid --from-scratch --iters 3

It runs ``train()`` on the recipe's own ``TrainConfig`` (batch, crops, schedule over the full
``max_iters``, workers, ``amp="auto"``) and stops after ``--iters`` steps, as if interrupted, so no
validation runs. What differs from the real run, and is printed:

- the ImageNet encoder (a hub id such as ``nvidia/mit-b0``) is replaced by a local folder of random
  weights of the same architecture, written by ``save_pretrained``: the loading path and the shapes
  are the run's, the weights' quality is not, and no network is needed (the stand-in also holds a
  decoder, which loads but for its 150-class classifier; the hub's checkpoint has none, so the real
  run starts its whole decoder fresh);
- the precision is what ``amp="auto"`` picks on this machine: on a CPU bf16 or fp32, never the fp16
  and gradient scaler of a T4 or V100 (``train`` refuses fp16 on a CPU, where it is emulated: B0's
  step ran 5-20x slower than fp32 on the book's CPU);
- on a CPU the step is the CPU's, tens of times slower than a GPU's; the loader's speed and the
  memory of the data are the run's.
"""

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .recipes import RUN_NAMES, recipe
from .system import available_cpus, cpu_name
from .datasets import build_split
from .runs import read_jsonl
from .train import TrainConfig, train
from .transforms import seed_worker


def stand_in_encoder(hub_id: str, folder: Path) -> Path:
    """A local folder in the Hugging Face layout with random weights of ``hub_id``'s architecture
    (``nvidia/mit-b0`` -> B0): what ``--pretrained`` loads, without the network."""
    from .model import SegFormer

    variant = hub_id.rsplit("-", 1)[-1]  # mit-b0 -> b0
    SegFormer.from_config(variant, num_classes=150).save_pretrained(folder)
    return folder


def loader_images_per_s(cfg: TrainConfig, batches: int) -> float:
    """The training loader's images/s at the recipe's batch and workers, frames decoded in memory
    as the run keeps them (after one untimed batch: the workers' start)."""
    dataset, _ = build_split(cfg, "train")
    if cfg.in_memory:
        dataset.preload()
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.num_workers, worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(cfg.seed))
    batch_iter = iter(loader)
    next(batch_iter)
    start = time.perf_counter()
    for _ in range(batches):
        next(batch_iter)
    return batches * cfg.batch_size / (time.perf_counter() - start)


def peak_memory() -> dict:
    """Peak memory in GB: the GPU's (allocated by tensors) on a GPU; this process's resident set
    and its largest finished child's (a data-loading worker) on a CPU."""
    if torch.cuda.is_available():
        return {"gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"process_gb": round(kb / 1e6, 2), "largest_worker_gb": round(child_kb / 1e6, 2)}


def rehearse(name: str = "gpu-camvid", from_scratch: bool = False, iters: int = 3,
             out_dir: str | Path | None = None, data_root: str | None = None,
             loader_batches: int = 4) -> dict:
    """Run recipe ``name`` for ``iters`` steps here; returns what it measured (and prints it)."""
    if iters < 1:
        raise ValueError(f"--iters must be at least 1, not {iters}")
    settings = recipe(name, from_scratch)
    work = Path(out_dir or tempfile.mkdtemp(prefix="segformer_rehearsal_"))
    notes = []
    if settings.get("pretrained") and not Path(settings["pretrained"]).exists():
        hub_id = settings["pretrained"]
        folder = stand_in_encoder(hub_id, work / "encoder_stand_in")
        settings["pretrained"] = str(folder)
        notes.append(f"encoder: {hub_id} replaced by random weights of its architecture "
                     f"({folder}): the loading path and shapes are the run's, not its weights")
    # the schedule of the whole run; stopped after `iters` steps as if interrupted: no validation
    cfg = TrainConfig(**settings | dict(data_root=data_root, out_dir=str(work / "run"),
                                        stop_at=iters, log_interval=1, progress=False))
    load_before = os.getloadavg()[0]
    result = train(cfg)
    # per step after the first (the first also starts the workers and warms the caches)
    speeds = [line["images_per_s"] for line in read_jsonl(Path(cfg.out_dir) / "train_log.jsonl")]
    step = statistics.median(speeds[1:] or speeds)
    loader = loader_images_per_s(cfg, loader_batches)
    pace = min(step, loader)
    report = {
        "recipe": name, "from_scratch": from_scratch, "run_name": RUN_NAMES[from_scratch],
        "device": result["device"], "cpu": cpu_name(), "cpus": available_cpus(),
        "num_workers": cfg.num_workers, "batch_size": cfg.batch_size, "crop_size": cfg.crop_size,
        "precision": result["precision"], "precision_reason": result["precision_reason"],
        "iterations": result["iteration"], "losses": result["losses"],
        "step_images_per_s": round(step, 2), "loader_images_per_s": round(loader, 1),
        "projected_train_hours": round(cfg.max_iters * cfg.batch_size / pace / 3600, 2),
        "max_iters": cfg.max_iters, "peak_memory": peak_memory(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "notes": notes,
    }
    print(summary(report), flush=True)
    return report


def summary(report: dict) -> str:
    """The rehearsal's findings, in lines a reader can act on."""
    slower = "loader" if report["loader_images_per_s"] < report["step_images_per_s"] else "step"
    memory = ", ".join(f"{k.replace('_gb', '')} {v} GB" for k, v in report["peak_memory"].items())
    lines = [
        f"rehearsal of {report['recipe']}{' --from-scratch' if report['from_scratch'] else ''}: "
        f"{report['iterations']} iteration{'s' * (report['iterations'] != 1)} of batch "
        f"{report['batch_size']}, crops "
        f"{report['crop_size'][0]}x{report['crop_size'][1]}, on {report['device']} "
        f"({report['cpu']}, {report['cpus']} cores, {report['num_workers']} loader workers; load "
        f"average {report['load_average'][0]} before, {report['load_average'][1]} after)",
        f"precision: {report['precision']} ({report['precision_reason']})",
        "losses: " + ", ".join(f"{loss:.3f}" for loss in report["losses"]),
        f"step: {report['step_images_per_s']} images/s; loader: "
        f"{report['loader_images_per_s']} images/s; the {slower} sets the pace",
        f"peak memory: {memory}",
        f"projected: {report['max_iters']:,} iterations at that pace take "
        f"{report['projected_train_hours']} h of training on this machine (20 validations and the "
        "test not included)",
    ]
    return "\n".join(lines + [f"note: {note}" for note in report["notes"]])


def main(argv: list[str] | None = None) -> int:
    from . import cli

    parser = cli.ArgumentParser(prog="python -m segformer_edu.rehearse",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="gpu-camvid", help="a recipe of segformer_edu.recipes")
    parser.add_argument("--from-scratch", action="store_true",
                        help="random initial weights (and their learning rate)")
    parser.add_argument("--iters", type=int, default=3, help="training steps to run")
    parser.add_argument("--data-root", help="dataset folder (default: as the trainer finds it)")
    parser.add_argument("--out-dir", help="where the stand-in encoder and the run go (default: a "
                                          "new temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    try:
        report = rehearse(args.recipe, args.from_scratch, args.iters, args.out_dir,
                          args.data_root)
    except (ImportError, OSError, ValueError) as error:
        return cli.report(error)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return cli.DONE


if __name__ == "__main__":
    sys.exit(main())
