"""The trainer's loss and averaging options (chapter 8's ablation): they reach the loss, resume exactly, and the
moving average is what is validated and loaded."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segformer_edu import train as trainer
from segformer_edu.checkpoint import evaluated_weights
from segformer_edu.losses import enet_weights
from segformer_edu.predict import load_model
from segformer_edu.train import TrainConfig


@pytest.fixture
def cfg(tiny_dataset, tmp_path):
    return TrainConfig(dataset="camvid", data_root=str(tiny_dataset), out_dir=str(tmp_path / "run"),
                       crop_size=(64, 64), scale=(128, 64), batch_size=2, max_iters=6, lr=6e-4, warmup_iters=2,
                       val_interval=3, val_images=2, log_interval=1, num_workers=0, progress=False, amp="fp32")


def test_class_weights_come_from_the_training_labels_and_reach_the_loss(cfg, monkeypatch):
    seen = []
    original = trainer.segmentation_loss
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda logits, labels, **kw: seen.append(kw) or original(logits, labels, **kw))
    trainer.train(replace(cfg, class_weights="enet", max_iters=1, val_interval=1))
    from segformer_edu import data
    pixels = data.camvid(cfg.data_root, "train").pixels_per_image()[:, :-1]
    torch.testing.assert_close(seen[0]["weight"], torch.tensor(enet_weights(pixels), dtype=torch.float32))
    with pytest.raises(ValueError, match="--class-weights must be one of enet, median"):
        trainer.train(replace(cfg, class_weights="inverse", out_dir=cfg.out_dir + "_bad"))


def test_ema_is_validated_saved_and_loaded_and_resumes_exactly(cfg, tmp_path):
    ema = replace(cfg, ema_decay=0.9, val_interval=100)
    full = trainer.train(replace(ema, out_dir=str(tmp_path / "full")))
    trainer.train(replace(ema, stop_at=3))
    resumed = trainer.train(replace(ema, resume=True))
    torch.testing.assert_close(resumed["model"].state_dict(), full["model"].state_dict())
    done, reference = (torch.load(Path(d) / "latest.pt", weights_only=True) for d in (cfg.out_dir, tmp_path / "full"))
    torch.testing.assert_close(done["ema"], reference["ema"])  # the average resumed exactly too
    assert done["ema_updates"] == 6
    assert any(not torch.equal(done["ema"][k], done["model"][k]) for k in done["model"])
    # predict and export load the average, which is what the logged mIoU measured
    model, _ = load_model(cfg.out_dir, torch.device("cpu"))
    best = torch.load(Path(cfg.out_dir) / "best.pt", weights_only=True)
    torch.testing.assert_close(model.state_dict(), evaluated_weights(best))
    logged = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").open()][-1]
    val = trainer.build_split(cfg, "val")[0]
    again = trainer.evaluate(model, torch.utils.data.Subset(val, range(2)), 11, torch.device("cpu"))
    assert again["miou"] == pytest.approx(logged["miou"])


def test_drop_path_rate_overrides_the_variant(cfg):
    model = trainer.build_model(replace(cfg, drop_path_rate=0.3), 11)
    assert model.config.drop_path_rate == 0.3
    assert trainer.build_model(cfg, 11).config.drop_path_rate == 0.1
