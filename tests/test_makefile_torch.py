"""Which PyTorch build `make book` and `make test` install (read from `make -n`, nothing installed): a wheel pip
finds without an index first (the team's machines), else the CPU build from PyTorch's index without an NVIDIA GPU
and PyPI's default (CUDA) build with one."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def planned_commands(tmp_path: Path, gpu: bool) -> str:
    """`make -n venv` in a fresh venv folder, with an `nvidia-smi` on PATH that lists a GPU or none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + ('echo "GPU 0: Tesla T4 (UUID: GPU-0)"\n' if gpu else "exit 9\n"))
    smi.chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["make", "-n", "venv", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("gpu", [False, True])
def test_the_cpu_build_without_a_gpu_and_a_local_wheel_first(tmp_path, gpu):
    commands = planned_commands(tmp_path, gpu)
    local = '--dry-run --no-deps --no-index "torch==2.13.0"'
    assert local in commands  # the team's find-links wheel, tried without touching an index
    assert commands.index(local) < commands.index('install -q "torch==2.13.0"')
    assert (CPU_INDEX in commands) == (not gpu), commands
