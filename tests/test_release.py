"""A finished run stored as a loadable folder (segformer_edu.release, scripts/export_camvid_run.py)."""

import json

import pytest
import torch

from segformer_edu import SegFormer, load
from segformer_edu.release import release_run
from segformer_edu.train import TrainConfig, train

pytestmark = pytest.mark.slow


def test_a_finished_run_is_stored_loadable_and_scored_afresh(tiny_dataset, tmp_path):
    cfg = TrainConfig(dataset="camvid", data_root=str(tiny_dataset), out_dir=str(tmp_path / "run"),
                      crop_size=(64, 64), scale=(128, 64), batch_size=2, max_iters=2, warmup_iters=1,
                      val_interval=2, val_images=2, log_interval=1, num_workers=0, progress=False)
    train(cfg)
    metrics = release_run(tmp_path / "run", tmp_path / "stored", command="a test")
    stored = tmp_path / "stored"
    assert {p.name for p in stored.iterdir()} >= {"config.json", "model.safetensors", "test_metrics.json",
                                                 "train_log.jsonl", "metrics.jsonl", "curves.png", "summary.json"}
    model = load(stored)
    assert isinstance(model, SegFormer) and model.class_names[0] == "Sky"
    assert metrics["split"] == "test" and metrics["frames"] == 2 and metrics["iter"] == 2
    summary = json.loads((stored / "summary.json").read_text())
    assert summary["command"] == "a test" and summary["iterations"] == 2
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    weights = model.state_dict()
    assert all(torch.allclose(weights[k], v.float(), atol=1e-2) for k, v in best.items() if v.is_floating_point())


def test_a_run_without_best_pt_is_refused_before_any_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="best.pt not found: train first"):
        release_run(tmp_path / "nothing", tmp_path / "stored")
    assert not (tmp_path / "stored").exists()
