"""Chapter 8's runs for a GPU, checked on a CPU: the cells tagged ``gpu-runs`` run with the GPU branch forced.

On a reader's GPU those cells make the ImageNet-pretrained run and, if asked, the from-scratch one, into Google
Drive or ``runs/``, resume after a disconnect, never start a finished run again, and show the results wherever the
runs are. Here they run in this process on a tiny dataset (the fixture's 64x48 images, 4 iterations), with a local
folder standing in for the hub's ``nvidia/mit-b0``; only the settings are shrunk, the cells are the chapter's own.
The chapter and ``scripts/gpu_camvid_b0.sh`` read one recipe, ``segformer_edu.recipes``.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from segformer_edu import SegFormer
from segformer_edu.recipes import FROM_SCRATCH, RUN_NAMES, recipe, train_flags
from segformer_edu.system import available_cpus
from segformer_edu.train import TrainConfig, parse_args

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "08_training.ipynb"
SCRIPT = ROOT / "scripts" / "gpu_camvid_b0.sh"
TINY = dict(crop_size=(32, 32), scale=(64, 48), batch_size=2, max_iters=4, val_interval=2, log_interval=1,
            val_images=2, amp="fp32", progress=False, num_workers=0)


def cells():
    """The chapter's import cell (its first code cell on the page) and its ``gpu-runs`` cells, as sources."""
    notebook = json.loads(CHAPTER.read_text(encoding="utf-8"))["cells"]
    code = [c for c in notebook if c["cell_type"] == "code" and "remove-cell" not in c["metadata"].get("tags", [])]
    runs = [c for c in code if "gpu-runs" in c["metadata"].get("tags", [])]
    return "".join(code[0]["source"]), ["".join(c["source"]) for c in runs]


def run_cell(source: str, namespace: dict, capsys) -> str:
    capsys.readouterr()
    exec(compile(source, str(CHAPTER), "exec"), namespace)
    return capsys.readouterr().out


def test_the_gpu_runs_resume_finish_once_and_show_their_results(tiny_dataset, tmp_path, monkeypatch, capsys):
    imports, (settings, where, make, results) = cells()
    monkeypatch.chdir(ROOT / "book")  # where the chapter runs
    namespace = {}
    run_cell(imports, namespace, capsys)
    run_cell(settings, namespace, capsys)
    runs = namespace["RUNS"]
    assert list(runs)[0] == "camvid_b0_pretrained" and runs["camvid_b0_pretrained"]["pretrained"]
    encoder = tmp_path / "mit-b0"  # stands in for the hub's ImageNet encoder
    SegFormer.from_config("b0", num_classes=150).save_pretrained(encoder)
    runs["camvid_b0_pretrained"]["pretrained"] = str(encoder)
    for run in runs.values():
        run.update(TINY, data_root=str(tiny_dataset), stop_at=2)  # a disconnect at step 2
    run_cell(where, namespace, capsys)
    namespace["make_runs"] = list(runs)  # the GPU branch: both runs
    shown = []  # what the cells display (tables), in place of a notebook's display
    namespace["display"] = shown.append
    namespace["runs_root"] = drive = tmp_path / "drive" / "segformer_edu"

    out = run_cell(make, namespace, capsys)
    for name in runs:
        assert f"{name}: starting in {drive / name}" in out and "--out-dir" in out
        assert (drive / name / "latest.pt").is_file() and not (drive / name / "summary.json").exists()
    out = run_cell(results, namespace, capsys)
    assert out.count("stopped at iteration 2 of 4") == 2, out

    for run in runs.values():
        del run["stop_at"]  # the reader runs the cell again
    out = run_cell(make, namespace, capsys)
    for name in runs:
        assert f"{name}: resuming in {drive / name}" in out and "resumed from latest.pt at iteration 2" in out
        assert (drive / name / "summary.json").is_file() and (drive / name / "test_metrics.json").is_file()
    out = run_cell(results, namespace, capsys)
    assert out.count("test mIoU") == 2 and "4 iterations" in out, out
    table = shown[-1].data  # test IoU per class: the stored CPU run beside both runs
    assert "CPU run (half resolution)" in table and all(name in table for name in runs), table

    calls = []
    namespace["train"] = lambda cfg: calls.append(cfg)
    out = run_cell(make, namespace, capsys)
    assert calls == [] and all(f"{name}: finished before" in out for name in runs), out


def test_without_a_gpu_the_cells_make_nothing_and_say_what_to_run(monkeypatch, capsys):
    imports, (settings, where, make, results) = cells()
    monkeypatch.chdir(ROOT / "book")
    namespace = {}
    for source in (imports, settings, where):
        run_cell(source, namespace, capsys)
    namespace["make_runs"] = []  # what the cell chooses without a GPU
    assert run_cell(make, namespace, capsys) == ""
    out = run_cell(results, namespace, capsys)
    for name in namespace["RUNS"]:
        assert out.count(f"{name} (") == 1 and "the cells above make it" in out, out
    assert not re.search(r"pending|not been made", out)


def test_the_chapter_reads_the_recipe(capsys):
    imports, (settings, *_) = cells()
    namespace = {}
    run_cell(imports, namespace, capsys)
    run_cell(settings, namespace, capsys)
    assert namespace["RUNS"] == {"camvid_b0_pretrained": recipe("gpu-camvid"),
                                 "camvid_b0_scratch": recipe("gpu-camvid", from_scratch=True)}
    assert "6e-5" not in settings and "20_000" not in settings  # no second copy of a value


def test_the_recipe_is_the_pretrained_paper_recipe_and_from_scratch_changes_the_start_and_its_lr():
    pretrained, scratch = recipe("gpu-camvid"), recipe("gpu-camvid", from_scratch=True)
    assert pretrained["pretrained"] == "nvidia/mit-b0" and pretrained["lr"] == 6e-5
    assert pretrained["batch_size"] == 16 and pretrained["crop_size"] == (360, 480)
    assert pretrained.get("class_weights") is None  # the paper's recipe has none
    assert {k for k in pretrained if scratch.get(k) != pretrained[k]} == set(FROM_SCRATCH) == {"pretrained", "lr"}
    assert scratch["pretrained"] is None and scratch["lr"] == 1e-3
    assert pretrained["num_workers"] == available_cpus()  # from the machine, not a constant


def test_the_flags_the_script_passes_are_the_recipe():
    for scratch in (False, True):
        settings = recipe("gpu-camvid", from_scratch=scratch)
        assert asdict(parse_args(train_flags(settings))) == asdict(TrainConfig(**settings))


def test_the_script_trains_with_the_recipe_and_speaks_to_a_reader(tmp_path):
    """The script's train command, recorded by a stand-in python that runs the recipe module for real."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
if [ "$2" = segformer_edu.train ]; then shift 2; echo "$@" > {tmp_path}/train_args; exit 0; fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    env = os.environ | {"PYTHON": str(fake), "PYTHONPATH": str(ROOT), "RESULTS": str(tmp_path / "results")}
    for flags, name in (([], "camvid_b0_pretrained"), (["--from-scratch"], "camvid_b0_scratch")):
        done = subprocess.run(["bash", str(SCRIPT), *flags], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        expected = train_flags(recipe("gpu-camvid", from_scratch=bool(flags)))
        assert (tmp_path / "train_args").read_text().split() == expected + ["--resume", "--out-dir", f"runs/{name}"]
    done = subprocess.run(["bash", str(SCRIPT), "--form-scratch"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "--form-scratch" in done.stderr and not (tmp_path / "runs").exists()
    text = SCRIPT.read_text()
    for machinery in (r"device", r"\$OUT\b", r"carry", r"CHUNK", r"timeout", r"SIGTERM", r"--num-workers 12"):
        assert not re.search(machinery, text), machinery  # the team's machinery, which no reader has
