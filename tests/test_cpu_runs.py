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


def seed_runs(tmp_path: Path, stored: tuple[str, ...] = ()) -> list[list[str]]:
    """The calls scripts/cpu_camvid_seeds.sh makes, with the runs named in ``stored`` already stored."""
    record, fake, store = tmp_path / "calls", tmp_path / "python", tmp_path / "seeds"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> "{record}"\nprintf "\\n" >> "{record}"\n')
    fake.chmod(0o755)
    for name in stored:
        (store / name).mkdir(parents=True)
        (store / name / "summary.json").write_text("{}")
    subprocess.run(["bash", "scripts/cpu_camvid_seeds.sh"], cwd=REPO, check=True,
                   env=os.environ | {"PYTHON": str(fake), "STORE": str(store)})
    return [line.rstrip("\0").split("\0") for line in record.read_text().splitlines()]


def trainings(calls: list[list[str]]) -> list[dict]:
    return [asdict(parse_args(call[2:])) for call in calls if call[:2] == ["-m", "segformer_edu.train"]]


def test_the_seed_runs_compare_the_models_at_equal_crops(tmp_path):
    """scripts/cpu_camvid_seeds.sh: B0 at seeds 0-2, B0 without photometric distortion at seeds 0-2 and the CNN at
    seed 1, each 2,200 iterations of batch 8 (the stored CNN run's 17,600 crops), differing from the stored runs in
    nothing but seed and length, and the ablation from B0's in nothing but the colour changes."""
    calls = seed_runs(tmp_path)
    trains = trainings(calls)
    assert [(c["model"], c["seed"], c["photometric"]) for c in trains] == [
        ("b0", 0, True), ("b0", 1, True), ("b0", 2, True), ("b0", 0, False), ("b0", 1, False), ("b0", 2, False),
        ("deeplabv3plus-mobilenetv2", 1, True)]
    assert {c["max_iters"] * c["batch_size"] for c in trains} == {17_600}
    assert len({c["out_dir"] for c in trains}) == 7 and all("seeds" in c["out_dir"] for c in trains)
    b0, ablation, cnn = trains[0], trains[3], trains[6]
    assert {key for key in b0 if b0[key] != cnn[key]} <= OWN | {"seed"}
    assert {key for key in b0 if b0[key] != ablation[key]} == {"photometric", "out_dir"}
    exports = [call for call in calls if call[0] == "scripts/export_camvid_run.py"]
    commands = [call[call.index("--command") + 1] for call in exports]
    assert all("SEED=" in command for command in commands)
    assert ["PHOTOMETRIC=0" in command for command in commands] == [False] * 3 + [True] * 3 + [False]


def test_a_stored_seed_run_is_left_as_it_is(tmp_path):
    """Re-running the script continues the runs not yet stored; a stored one's results (and notes) stay."""
    trains = trainings(seed_runs(tmp_path, stored=("b0_17600_s0", "b0_no_photometric_17600_s1")))
    assert [(c["seed"], c["photometric"]) for c in trains if c["model"] == "b0"] == [
        (1, True), (2, True), (0, False), (2, False)]


def test_the_recipe_benchmark_times_the_seed_runs_recipe(tmp_path):
    """benchmarks/bench_cpu_recipe.py writes the recipe again in Python: it must stay the B0 seed runs' own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cpu_recipe", REPO / "benchmarks" / "bench_cpu_recipe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    b0 = trainings(seed_runs(tmp_path))[0]
    for key, value in bench.RECIPE.items():
        if key != "progress":
            assert (list(value) if isinstance(value, tuple) else value) == (
                list(b0[key]) if isinstance(b0[key], tuple) else b0[key]), key
