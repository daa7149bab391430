"""A training run's folder and files (book chapter 8): the folder a run claims (locked for one run
at a time; a new run, a resume with what it may change, or a refusal), the checkpoints written
atomically with every random generator's state, the logs cut back on resume, and what a run holds
and where it stands while it trains.

Everything a run produces lands in its ``out_dir``: ``latest.pt`` / ``best.pt`` (model, optimizer,
scaler, scheduler, iteration, RNG states, config), ``train_log.jsonl``, ``metrics.jsonl``,
``summary.json``, ``curves.png`` and ``predictions.png``.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import cli, cnn
from .system import Precision, available_cpus

try:
    import fcntl
except ImportError:  # Windows: run folders are not locked
    fcntl = None

if TYPE_CHECKING:  # for the annotations only: train imports this module
    from .train import TrainConfig

# what a run writes; --overwrite removes these, nothing else
RUN_FILES = ("latest.pt", "best.pt", "train_log.jsonl", "metrics.jsonl", "summary.json",
             "test_metrics.json", "curves.png", "predictions.png")
LOCK_FILE = ".lock"  # held while a run uses the folder (RunFolderLock); not a run's file

# settings free to change on resume: where and how fast the run works, when it validates and logs
RESTARTABLE = {"data_root", "out_dir", "resume", "overwrite", "progress", "stop_at", "num_workers",
               "in_memory", "test", "save_minutes", "val_images", "val_interval", "log_interval",
               "fuse_first"}
# applied on resume: the lr schedule, recomputed with them from the iteration reached
SCHEDULE_SETTINGS = ("lr", "weight_decay", "max_iters", "min_lr", "power", "warmup_iters",
                     "warmup_ratio")
# ... and the autocast precision, from the next step; any other change of the recipe is refused
APPLIED_ON_RESUME = {*SCHEDULE_SETTINGS, "amp"}


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


class FolderInUseError(OSError):
    """Another process holds the run folder's lock."""


class RunFolderLock:
    """A run folder claimed by one run at a time: an OS lock (``flock``) on its ``.lock`` file, held
    by rank 0 until the run returns. The kernel drops the lock when the process ends, however it
    ends, so a killed run never leaves its folder locked; the file says who holds it (pid, host,
    start, command) and is removed on release. Where the OS has no ``flock`` (Windows), nothing is
    locked."""

    def __init__(self, folder: Path):
        self.folder, self.path, self.fd = folder, folder / LOCK_FILE, None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderInUseError(
                    f"--out-dir {self.folder} is in use by another run ({self.holder()}): wait "
                    "for it to finish, or pass another --out-dir") from None
            if self.still_at_its_path(fd):
                self.fd = fd
            else:  # its holder removed it between our open and our lock: lock the new file
                os.close(fd)
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since,
                  "command": shlex.join([sys.executable, *sys.argv])}
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps(record).encode())

    def still_at_its_path(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)

    def holder(self) -> str:
        """Who holds the lock, as its file says (written just after the lock is taken: a reader
        may come first, and waits a moment)."""
        for _ in range(20):
            try:
                record = json.loads(self.path.read_text())
                return f"pid {record['pid']} on {record['host']} since {record['since']}"
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        return "it has not said which yet"

    def release(self) -> None:
        """Remove the file, then unlock: a process that opened it meanwhile sees that it is gone
        (``still_at_its_path``) and locks the next one."""
        if self.fd is not None:
            with suppress(OSError):  # a folder made read-only meanwhile: the file stays, unlocked
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def lock_run_folder(out: Path) -> RunFolderLock:
    """The folder, created if missing and locked for this run: a file where it should be, a place
    that cannot be written to or a folder in use is one line."""
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise NotADirectoryError(f"--out-dir {out}: {blocker} is a file, not a folder; pass a "
                                 "folder (it is created if missing)")
    lock = RunFolderLock(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        cli.try_writing(out)
    except FolderInUseError:
        raise
    except OSError as error:
        lock.release()
        raise PermissionError(f"cannot write to --out-dir {out} ({error.strerror or error}): pass "
                              "a folder you can write to") from error
    return lock


def check_run_folder(cfg: TrainConfig, run: Placement) -> None:
    """The run-folder policy (rank 0, the folder locked): a new or empty folder starts a run; one
    that holds anything is refused, unless ``resume`` (continue from its latest.pt; a new run if it
    has none) or ``overwrite``."""
    out, latest = run.out, run.out / "latest.pt"
    contents = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
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


@contextmanager
def claim_run_folder(cfg: TrainConfig, run: Placement) -> Iterator[dict | None]:
    """The run's folder, before any data is read: locked by rank 0 for as long as the block runs
    (``RunFolderLock``), then the run-folder policy (``check_run_folder``). Yields latest.pt's
    state when resuming (on every rank, checked by ``resumed_state``), else None. An overwritten
    run's files go only when training starts (``clear_old_run``): a check that fails before keeps
    them."""
    lock = lock_run_folder(run.out) if run.main else None
    try:
        if run.main:
            check_run_folder(cfg, run)
        if run.world > 1:
            dist.barrier()
        yield resumed_state(cfg, run.out / "latest.pt") if cfg.resume else None
    finally:
        if lock is not None:
            lock.release()


def resumed_state(cfg: TrainConfig, latest: Path) -> dict | None:
    """latest.pt's state, if there is one, once it is known to continue with ``cfg``: the same
    model, data, moving average and recipe (``resume_changes``), an iteration within
    --max-iters."""
    if not latest.is_file():
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
    refuse_recipe_changes(cfg, resume_changes(cfg, state)[1], latest)
    return state


def resume_changes(cfg: TrainConfig, state: dict) -> tuple[dict, dict]:
    """The settings ``cfg`` changes against the checkpoint's, {name: (before, now)}: (those a
    resumed run applies, APPLIED_ON_RESUME; those it refuses, the rest of the recipe)."""
    before = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()}
    changed = {k: (before[k], v) for k, v in asdict(cfg).items()
               if k in before and k not in RESTARTABLE and before[k] != v}
    applied = {k: change for k, change in changed.items() if k in APPLIED_ON_RESUME}
    return applied, {k: change for k, change in changed.items() if k not in APPLIED_ON_RESUME}


def refuse_recipe_changes(cfg: TrainConfig, refused: dict, latest: Path) -> None:
    """One line for recipe changes that a saved optimizer, data order or model cannot take, with
    the way to start a new run from these weights instead."""
    if not refused:
        return
    listed = ", ".join(f"{flag_of(k)} ({old} -> {new})" for k, (old, new) in refused.items())
    if cfg.model == cnn.NAME:  # it trains from scratch: --pretrained is SegFormer's
        instead = "start a new run with --overwrite or another --out-dir"
    else:
        instead = (f"start a new run from its weights: --pretrained {latest} --out-dir NEW_DIR, "
                   "without --resume")
    applied = ", ".join(flag_of(name) for name in (*SCHEDULE_SETTINGS, "amp"))
    raise ValueError(f"--resume cannot change {listed}: a resumed run keeps its recipe and applies "
                     f"new {applied} only; resume with the run's values, or {instead}")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def continue_command(argv: list[str], world: int, flags: list[str]) -> str:
    """The command that continues a stopped run: the same flags with --resume, without --overwrite
    and without --stop-at N, which would stop it again at once. ``flags``: every long flag of the
    command, to read a flag abbreviated as argparse takes it (--stop for --stop-at)."""
    dropped = {"--overwrite", "--no-overwrite", "--resume", "--no-resume", "--stop-at"}
    kept, value_dropped = [], False
    for word in argv:
        if value_dropped:  # the N of --stop-at N
            value_dropped = False
            continue
        typed = word.split("=", 1)[0]
        named = [flag for flag in flags if flag.startswith(typed)] if typed.startswith("--") else []
        flag = typed if typed in flags else named[0] if len(named) == 1 else None
        if flag in dropped:
            value_dropped = flag == "--stop-at" and "=" not in word
        else:
            kept.append(word)
    program = "python -m segformer_edu.train" if world == 1 else \
        f"torchrun --nproc_per_node={world} -m segformer_edu.train"
    return f"{program} {shlex.join(kept + ['--resume'])}"


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
    # the settings each resume changed: {"iteration": N, "changed": {name: [before, now]}}
    resume_changes: list = field(default_factory=list)

    def wall_seconds(self) -> float | None:
        """Wall time of the work the run keeps: every call's, setup and validation included."""
        if self.wall_before is None:
            return None
        return self.wall_before + time.monotonic() - self.call_start
