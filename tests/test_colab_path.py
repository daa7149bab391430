"""Chapter 8's runs for a GPU, checked on a CPU: the cells tagged ``gpu-runs`` run with the GPU branch forced.

On a reader's GPU those cells make the ImageNet-pretrained run and, if asked, the from-scratch one, into Google
Drive or ``runs/``, resume after a disconnect, never start a finished run again, and show the results wherever the
runs are. Here they run in this process on a tiny dataset (the fixture's 64x48 images, 4 iterations), with a local
folder standing in for the hub's ``nvidia/mit-b0``; only the settings are shrunk, the cells are the chapter's own.
The recipes in the chapter and in ``scripts/gpu_camvid_b0.sh`` must agree.
"""

import json
import re
from pathlib import Path

import pytest

from segformer_edu import SegFormer

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
    recipes = namespace["RECIPES"]
    assert list(recipes)[0] == "camvid_b0_pretrained" and recipes["camvid_b0_pretrained"]["pretrained"]
    encoder = tmp_path / "mit-b0"  # stands in for the hub's ImageNet encoder
    SegFormer.from_config("b0", num_classes=150).save_pretrained(encoder)
    recipes["camvid_b0_pretrained"]["pretrained"] = str(encoder)
    namespace["FULL_SETTING"].update(TINY, data_root=str(tiny_dataset), stop_at=2)  # a disconnect at step 2
    run_cell(where, namespace, capsys)
    namespace["make_runs"] = list(recipes)  # the GPU branch: both runs
    shown = []  # what the cells display (tables), in place of a notebook's display
    namespace["display"] = shown.append
    namespace["runs_root"] = drive = tmp_path / "drive" / "segformer_edu"

    out = run_cell(make, namespace, capsys)
    for name in recipes:
        assert f"{name}: starting in {drive / name}" in out and "--out-dir" in out
        assert (drive / name / "latest.pt").is_file() and not (drive / name / "summary.json").exists()
    out = run_cell(results, namespace, capsys)
    assert out.count("stopped at iteration 2 of 4") == 2, out

    del namespace["FULL_SETTING"]["stop_at"]  # the reader runs the cell again
    out = run_cell(make, namespace, capsys)
    for name in recipes:
        assert f"{name}: resuming in {drive / name}" in out and "resumed from latest.pt at iteration 2" in out
        assert (drive / name / "summary.json").is_file() and (drive / name / "test_metrics.json").is_file()
    out = run_cell(results, namespace, capsys)
    assert out.count("test mIoU") == 2 and "4 iterations" in out, out
    table = shown[-1].data  # test IoU per class: the stored CPU run beside both runs
    assert "CPU run (half resolution)" in table and all(name in table for name in recipes), table

    calls = []
    namespace["train"] = lambda cfg: calls.append(cfg)
    out = run_cell(make, namespace, capsys)
    assert calls == [] and all(f"{name}: finished before" in out for name in recipes), out


def test_without_a_gpu_the_cells_make_nothing_and_say_what_to_run(monkeypatch, capsys):
    imports, (settings, where, make, results) = cells()
    monkeypatch.chdir(ROOT / "book")
    namespace = {}
    for source in (imports, settings, where):
        run_cell(source, namespace, capsys)
    namespace["make_runs"] = []  # what the cell chooses without a GPU
    assert run_cell(make, namespace, capsys) == ""
    out = run_cell(results, namespace, capsys)
    for name in namespace["RECIPES"]:
        assert out.count(f"{name} (") == 1 and "the cells above make it" in out, out
    assert not re.search(r"pending|not been made", out)


def script_value(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), re.M)
    assert match, f"{SCRIPT.name} sets no {name}"
    return match[1]


def test_the_script_and_the_chapter_have_the_same_recipes(capsys):
    imports, (settings, *_) = cells()
    namespace = {}
    run_cell(imports, namespace, capsys)
    run_cell(settings, namespace, capsys)
    recipes, full = namespace["RECIPES"], namespace["FULL_SETTING"]
    for prefix, name in (("SCRATCH", "camvid_b0_scratch"), ("PRETRAINED", "camvid_b0_pretrained")):
        recipe = recipes[name]
        assert float(script_value(f"{prefix}_LR")) == recipe["lr"], name
        assert float(script_value(f"{prefix}_HEAD_LR_MULT")) == recipe["head_lr_mult"], name
        assert int(script_value(f"{prefix}_WARMUP_ITERS")) == recipe["warmup_iters"], name
    assert script_value("PRETRAINED_ENCODER") == recipes["camvid_b0_pretrained"]["pretrained"]
    assert recipes["camvid_b0_scratch"]["pretrained"] is None
    assert script_value("SCRATCH_CLASS_WEIGHTS") == recipes["camvid_b0_scratch"]["class_weights"]
    assert recipes["camvid_b0_pretrained"].get("class_weights") is None  # the paper's recipe has none
    script = SCRIPT.read_text()
    assert script_value("MAX_ITERS") == f"${{MAX_ITERS:-{full['max_iters']}}}"
    for flag, value in (("crop-size", full["crop_size"]), ("scale", full["scale"]), ("batch-size", full["batch_size"]),
                        ("val-interval", full["val_interval"])):
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert f"--{flag} {shown} " in script, flag
    assert full["test"] and "--test" in script
