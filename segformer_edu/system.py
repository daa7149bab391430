"""The machine a run or a measurement uses: its cores, memory and processor, the autocast precision
it runs fast, the record a timed script keeps of it (book chapters 8 and 9), and the signals that
stop a run cleanly.

The precision rule (``choose_precision``), measured on the team's two kinds of 2-core CPU
(benchmarks/bench_cpu_training.py): bf16 autocast trained B0 1.4-1.75x faster than fp32 both on an
Intel Xeon with AMX and on an AMD EPYC with AVX-512 BF16 but no AMX. So on a CPU, bf16 wherever the
processor computes it natively (either instruction set, as oneDNN uses them); on a GPU, bf16 where
its tensor cores have it (compute capability 8.0 and later: A100, L4, H100), else fp16 with a
gradient scaler (T4, V100, P100), never bf16 that the GPU only emulates.
"""

import os
import platform
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
# x86 flags (Linux's /proc/cpuinfo) of native bf16 arithmetic; "bf16" is Arm's (Neoverse V1 and
# later)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def available_cpus() -> int:
    """The cores this process may run on (its affinity, as PyTorch's DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable); 0 where that cannot be read."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        line = next(line for line in lines if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) * 1024


def cpu_info() -> str:
    info = Path("/proc/cpuinfo")
    return info.read_text() if info.exists() else ""


def cpu_name() -> str:
    """The processor's name as the OS reports it (Linux's /proc/cpuinfo), for the summaries that
    state a machine."""
    names = re.findall(r"model name\s*:\s*(.*)", cpu_info())
    return names[0] if names else platform.processor() or platform.machine()


def cpu_bf16_flags() -> list[str]:
    """The native bf16 instruction sets the processor lists (AVX-512 BF16, AMX, Arm's BF16)."""
    lines = re.findall(r"^(?:flags|Features)\s*:(.*)$", cpu_info(), flags=re.MULTILINE)
    flags = set(lines[0].split()) if lines else set()
    return sorted(flags & set(NATIVE_BF16_FLAGS))


@dataclass(frozen=True)
class Precision:
    """The autocast dtype a run uses (None: float32), and why, in words a summary can hold."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]


def gpu_has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: compute capability 8.0 or later (torch's is_bf16_supported also counts
    emulation, which it reports True on a T4)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def choose_precision(device: torch.device, amp: str = "auto") -> Precision:
    """The autocast precision for ``amp`` on ``device``; a precision this device cannot run (or
    runs only emulated) is one ValueError that says what to pass instead."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    if amp == "fp32":
        return Precision(None, "fp32 as asked")
    if device.type == "cuda":
        return gpu_precision(device, amp)
    if amp == "fp16":
        raise ValueError("--amp fp16 needs a GPU; on a CPU pass --amp bf16 or fp32")
    if amp == "bf16":
        return Precision(torch.bfloat16, "bf16 as asked")
    flags = cpu_bf16_flags()
    if flags:
        return Precision(torch.bfloat16,
                         f"auto: this CPU computes bf16 natively ({', '.join(flags)})")
    return Precision(None, "auto: this CPU has no native bf16 (no AVX-512 BF16, AMX or Arm BF16)")


def gpu_precision(device: torch.device, amp: str) -> Precision:
    name, native = torch.cuda.get_device_name(device), gpu_has_native_bf16(device)
    major, minor = torch.cuda.get_device_capability(device)
    if amp == "bf16" and not native:
        raise ValueError(f"{name} (compute capability {major}.{minor}) has no bf16 tensor cores, "
                         "only emulation: pass --amp fp16 (with a gradient scaler) or fp32")
    if amp == "bf16":
        return Precision(torch.bfloat16, "bf16 as asked")
    if amp == "fp16":
        return Precision(torch.float16, "fp16 as asked, with a gradient scaler")
    if native:
        return Precision(torch.bfloat16, f"auto: {name} (compute capability {major}.{minor}) has "
                                         "bf16 tensor cores")
    return Precision(torch.float16, f"auto: {name} (compute capability {major}.{minor}) has no "
                                    "bf16 tensor cores: fp16 with a gradient scaler")


def autocast_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``choose_precision`` (None: float32)."""
    return choose_precision(device, amp).dtype


class StopRequest:
    """Ctrl-C or SIGTERM (a scheduler's kill, torchrun's shutdown) ends the run after the current
    step or validation, saving latest.pt first, instead of losing everything since the last
    checkpoint. A second one stops at once (KeyboardInterrupt); the last checkpoint stays intact."""

    def __init__(self, announce: bool = True):
        self.announce, self.signum, self.previous = announce, None, {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            line = (f"\n{name}: stopping after this step or validation, once latest.pt is saved "
                    "(again: stop at once, keeping the last checkpoint)\n")
            try:  # to the file itself: a handler that writes to a stream mid-write would raise
                os.write(sys.stderr.fileno(), line.encode())
            except (AttributeError, OSError, ValueError):  # no file behind it (pytest, Jupyter)
                print(line, end="", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def refuse_under_load(max_load: float) -> float:
    """The 1-minute load average before a timed script starts; one line (SystemExit) if it exceeds
    ``max_load``: timings shared with other work are not this CPU's own."""
    load = os.getloadavg()[0]
    if load > max_load:
        raise SystemExit(f"error: load average {load:.2f} > {max_load}: something else holds the "
                         "cores; stop it (or wait) and run again, so that the timings are this "
                         "CPU's own (or pass --max-load)")
    return load


def machine_record(load_before: float) -> dict:
    """What a timed script stores of the machine: processor, native bf16, threads, torch, and the
    load average before it and now (the 1-minute average after counts the script's own threads,
    about one per core)."""
    return {"machine": cpu_name(), "bf16_flags": cpu_bf16_flags(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
