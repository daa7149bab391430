"""A training run's folder and files (book chapter 8): the folder a run claims (a new run, a resume,
or a refusal), the checkpoints written atomically with every random generator's state, the logs cut
back on resume, and what a run holds and where it stands while it trains.

Everything a run produces lands in its ``out_dir``: ``latest.pt`` / ``best.pt`` (model, optimizer,
scaler, scheduler, iteration, RNG states, config), ``train_log.jsonl``, ``metrics.jsonl``,
``summary.json``, ``curves.png`` and ``predictions.png``.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import cli
from .system import Precision, available_cpus

if TYPE_CHECKING:  # for the annotations only: train imports this module
    from .train import TrainConfig

# what a run writes; --overwrite removes these, nothing else
RUN_FILES = ("latest.pt", "best.pt", "train_log.jsonl", "metrics.jsonl", "summary.json",
             "test_metrics.json", "curves.png", "predictions.png")


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a kill mid-save leaves the
    old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on the same file system
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every random generator a step draws from, as tensors and ints (loadable with
    weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state(),
            "cuda": cuda}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so a resumed log has no
    duplicates."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines()
                 if json.loads(line)["iter"] <= iteration]
        path.write_text("".join(line + "\n" for line in lines))


def read_checkpoint(path: Path, peek: bool = False) -> dict:
    """A training checkpoint on the CPU; ``peek``: memory-mapped, for a look at its iteration and
    config."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=peek)
    except Exception as error:
        raise ValueError(f"cannot read {path} ({cli.one_line(error)}): start again with "
                         "--overwrite, or pass another --out-dir") from error


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def load_summary(loads: list[float]) -> dict:
    """The load average while the run trained (sampled at each log line) beside the cores it had:
    a load above them means the run shared its cores with other work."""
    if not loads:
        return {"load_average": None}
    return {"load_average": {"mean": round(sum(loads) / len(loads), 2), "max": max(loads),
                             "samples": len(loads), "cpus": available_cpus()}}


@dataclass
class Placement:
    """Where this process trains: its rank among ``world``, its device, the run's folder."""

    rank: int
    world: int
    device: torch.device
    out: Path

    @property
    def main(self) -> bool:
        return self.rank == 0

    def say(self, line: str) -> None:
        """Print on rank 0 only."""
        if self.main:
            print(line, flush=True)


def claim_run_folder(cfg: TrainConfig, run: Placement) -> dict | None:
    """The run-folder policy, on rank 0, before any data is read: a new or empty folder starts a
    run; one that holds anything is refused, unless ``resume`` (continue from its latest.pt; a new
    run if it has none) or ``overwrite`` (the old run's files are removed, other files kept). The
    folder is then tried with a write. Returns latest.pt's state when resuming (on every rank), else
    None. An overwritten run's files go only when training starts (``clear_old_run``):
    a check that fails before keeps them."""
    out, latest = run.out, run.out / "latest.pt"
    if run.main:
        blocker = next((p for p in (out, *out.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise NotADirectoryError(f"--out-dir {out}: {blocker} is a file, not a folder; pass a "
                                     "folder (it is created if missing)")
        contents = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if cfg.resume and not latest.is_file():
            if (out / "best.pt").exists():
                raise FileNotFoundError(f"{out} has best.pt but no latest.pt to resume from: start "
                                        "again with --overwrite, or pass another --out-dir")
            run.say(f"nothing to resume in {out}: starting a new run")
        elif contents and not cfg.resume and not cfg.overwrite:
            if latest.is_file():
                at = read_checkpoint(latest, peek=True)["iteration"]
                what = f"holds a run (latest.pt at iteration {at} of {cfg.max_iters})"
                advice = "continue it with --resume, start it again with --overwrite"
            else:
                listed = ", ".join(contents[:3]) + (", ..." if len(contents) > 3 else "")
                what = f"is not empty ({listed})"
                advice = "start a run among these files with --overwrite"
            raise FileExistsError(f"--out-dir {out} {what}: {advice}, or pass another --out-dir")
        try:
            cli.try_writing(out)
        except OSError as error:
            raise PermissionError(f"cannot write to --out-dir {out} ({error.strerror or error}): "
                                  "pass a folder you can write to") from error
    if run.world > 1:
        dist.barrier()
    if not (cfg.resume and latest.is_file()):
        return None
    state = read_checkpoint(latest)
    if state["iteration"] > cfg.max_iters:
        raise ValueError(f"{latest} is at iteration {state['iteration']}, past --max-iters "
                         f"{cfg.max_iters}: pass a larger --max-iters to train further")
    for name in ("model", "dataset"):
        trained = state["config"].get(name)
        if trained is not None and trained != getattr(cfg, name):
            raise ValueError(f"--{name} {getattr(cfg, name)} but {latest} was trained with "
                             f"--{name} {trained}: resume with --{name} {trained}, or start again "
                             "with --overwrite or another --out-dir")
    if ("ema" in state) != (cfg.ema_decay is not None):
        kept = "kept" if "ema" in state else "did not keep"
        raise ValueError(f"{latest} {kept} a moving average of the weights: resume with the same "
                         "--ema-decay as the run started with")
    return state


def clear_old_run(run: Placement) -> None:
    """A new run's folder keeps no file of an earlier run
    (``--overwrite``, or logs of one that never saved)."""
    removed = [name for name in RUN_FILES if (run.out / name).exists()]
    if run.main and removed:
        for name in removed:
            (run.out / name).unlink()
        run.say(f"removed the earlier run's {', '.join(removed)} from {run.out}")


@dataclass
class RunData:
    """The splits, their class names, and the loss's options (class weights come from the training
    labels)."""

    train: object
    val: object
    test: object | None
    names: list[str]
    loss_kwargs: dict


@dataclass
class TrainingParts:
    """What a step changes and a checkpoint holds."""

    model: nn.Module
    ema: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: Precision

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None: float32."""
        return self.precision.dtype

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and saved as the run's result: the average, when there is
        one."""
        return self.model if self.ema is None else self.ema.module


@dataclass
class RunProgress:
    """Where the run stands; ``run_time``: seconds in training steps of this call, not
    validation; ``wall_before``: wall seconds of the earlier calls up to their last save (None
    when the checkpoint predates the count), pauses between calls left out."""

    iteration: int = 0
    best_miou: float = -1.0
    best_iteration: int | None = None
    saved_at: int | None = None
    seconds_before: float = 0.0
    run_time: float = 0.0
    wall_before: float | None = 0.0
    call_start: float = field(default_factory=time.monotonic)
    losses: list = field(default_factory=list)
    metrics: dict | None = None
    logged: tuple[float, int] = (0.0, 0)  # (run_time, iteration) of the last log line
    # the 1-minute load average at each log line, over every call: whether the run had the cores
    loads: list = field(default_factory=list)

    def wall_seconds(self) -> float | None:
        """Wall time of the work the run keeps: every call's, setup and validation included."""
        if self.wall_before is None:
            return None
        return self.wall_before + time.monotonic() - self.call_start
