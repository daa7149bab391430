"""The GPU recipe rehearsed on this CPU (segformer_edu.rehearse): the recipe's own settings, one real step on CamVid's
full frames, and a report of what it measured."""

import math

import torch

from segformer_edu.recipes import recipe
from segformer_edu.rehearse import main, rehearse


def test_the_gpu_recipe_starts_and_reports_its_pace(camvid_root, tmp_path, capsys):
    report = rehearse("gpu-camvid", iters=1, out_dir=tmp_path, data_root=str(camvid_root), loader_batches=1)
    out = capsys.readouterr().out
    latest = torch.load(tmp_path / "run" / "latest.pt", map_location="cpu", weights_only=True)
    config, expected = latest["config"], recipe("gpu-camvid")
    for name in ("batch_size", "max_iters", "lr", "head_lr_mult", "warmup_iters", "num_workers", "amp"):
        assert config[name] == expected[name], name  # the run's settings, not shrunk ones
    assert tuple(config["crop_size"]) == (360, 480) and config["batch_size"] == 16
    assert config["pretrained"] == str(tmp_path / "encoder_stand_in")  # the hub's encoder, stood in for
    assert latest["iteration"] == 1 and math.isfinite(report["losses"][0])
    assert report["step_images_per_s"] > 0 and report["loader_images_per_s"] > 0
    hours = 20_000 * 16 / min(report["step_images_per_s"], report["loader_images_per_s"]) / 3600
    assert math.isclose(report["projected_train_hours"], hours, rel_tol=0.01)
    assert report["peak_memory"]["process_gb"] > 0
    for line in ("rehearsal of gpu-camvid: 1 iteration of batch 16, crops 360x480", "precision: ", "peak memory:",
                 "projected: 20,000 iterations", "note: encoder: nvidia/mit-b0 replaced by random weights"):
        assert line in out, line


def test_a_bad_iteration_count_is_one_line_before_any_work(tmp_path, capsys):
    assert main(["--iters", "0", "--out-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "error: --iters must be at least 1, not 0"
    assert not any(tmp_path.iterdir())
