"""The two CPU CamVid runs (scripts/cpu_camvid_b0.sh, scripts/cpu_camvid_cnn.sh): run with a PYTHON that only
records its arguments, each trains as its stored run in book/results trained, and the two differ in nothing but the
model, its optimiser and the length that the same wall time buys (book chapter 11)."""

import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from segformer_edu.train import parse_args

REPO = Path(__file__).resolve().parents[1]
RUNS = {"cpu_camvid_b0.sh": "camvid_b0_cpu", "cpu_camvid_cnn.sh": "camvid_cnn_cpu"}
# what the equal-time comparison lets differ: the model, its optimiser, and the iterations of the same time
OWN = {"model", "optimizer", "lr", "weight_decay", "max_iters", "warmup_iters", "val_interval", "out_dir"}


def calls(script: str, tmp_path: Path) -> list[list[str]]:
    """The argument lists the script passes to $PYTHON, one per call (train, then export)."""
    record = tmp_path / f"{script}.calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> "{record}"\nprintf "\\n" >> "{record}"\n')
    fake.chmod(0o755)
    env = os.environ | {"PYTHON": str(fake), "OUT_DIR": str(tmp_path / script / "run"),
                        "RESULTS": str(tmp_path / script / "results")}
    subprocess.run(["bash", f"scripts/{script}"], cwd=REPO, env=env, check=True)
    return [line.rstrip("\0").split("\0") for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}
    for script in RUNS:
        train, export = calls(script, tmp_path_factory.mktemp(script))
        assert train[:2] == ["-m", "segformer_edu.train"] and export[0] == "scripts/export_camvid_run.py"
        made[script] = (asdict(parse_args(train[2:])), export)
    return made


@pytest.mark.parametrize("script", RUNS)
def test_each_script_trains_as_its_stored_run(runs, script):
    config, export = runs[script]
    summary = json.loads((REPO / "book" / "results" / RUNS[script] / "summary.json").read_text())
    assert export[export.index("--command") + 1] == summary["command"]
    summary["val_scale"] = summary.pop("eval_scale")
    summary.setdefault("optimizer", "adamw")  # B0's summary predates the field: the default
    for key in summary.keys() & config.keys() - {"out_dir"}:
        value = list(config[key]) if isinstance(config[key], tuple) else config[key]
        assert value == summary[key], key


def test_the_two_runs_differ_only_in_the_model_and_its_optimiser(runs):
    (b0, _), (cnn, _) = runs.values()
    assert b0["model"] == "b0" and cnn["model"] == "deeplabv3plus-mobilenetv2"
    assert {key for key in b0 if b0[key] != cnn[key]} <= OWN
    assert b0["class_weights"] == cnn["class_weights"] == "enet" and b0["amp"] == cnn["amp"] == "bf16"
