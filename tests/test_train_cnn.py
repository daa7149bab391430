"""The CNN baseline (chapter 11) trains with the package's own trainer: SGD as mmseg, the auxiliary
loss, its parameter groups, and its settings checked before any work."""

import math
from dataclasses import replace

import pytest
import torch

from segformer_edu import cnn, train as trainer
from segformer_edu.schedule import build_optimizer, lr_factor, param_groups
from segformer_edu.train import TrainConfig


@pytest.fixture
def cfg(tiny_dataset, tmp_path):
    return TrainConfig(dataset="camvid", data_root=str(tiny_dataset), out_dir=str(tmp_path / "run"),
                       model=cnn.NAME, crop_size=(64, 64), scale=(128, 64), batch_size=2,
                       max_iters=4, lr=0.01, optimizer="sgd", weight_decay=5e-4, power=0.9,
                       min_lr=1e-4, warmup_iters=0, head_lr_mult=1.0, val_interval=2,
                       val_images=2, log_interval=1, num_workers=0, progress=False, amp="fp32")


def test_sgd_run_trains_the_cnn_with_its_auxiliary_loss(cfg, monkeypatch):
    calls = []
    original = trainer.segmentation_loss
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda logits, labels, **kw: calls.append(logits.shape) or
                        original(logits, labels, **kw))
    result = trainer.train(cfg)
    assert result["status"] == "finished" and result["iteration"] == 4
    assert all(math.isfinite(loss) for loss in result["losses"])
    # each step: the logits at 1/4 of the 64x64 crop, then the auxiliary head's at 1/8
    assert calls[:2] == [torch.Size([2, 11, 16, 16]), torch.Size([2, 11, 8, 8])]
    assert isinstance(result["model"], cnn.DeepLabV3Plus)


def test_cnn_parameter_groups_and_the_sgd_schedule_to_min_lr():
    model = cnn.DeepLabV3Plus.from_config(cnn.NAME, num_classes=11)
    groups = {g["name"]: g for g in param_groups(model, lr=0.01, weight_decay=5e-4,
                                                 head_lr_mult=10.0)}
    encoder = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == encoder
    assert len(groups["decoder"]["params"]) == len(list(model.parameters())) - len(encoder)
    assert groups["decoder"]["lr"] == pytest.approx(0.1)
    optimizer, scheduler = build_optimizer(model, lr=0.01, weight_decay=5e-4, head_lr_mult=1.0,
                                           max_iters=10, warmup_iters=0, power=0.9,
                                           optimizer="sgd", min_lr=1e-4)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # mmcv's poly: (base - min) (1 - t/T)^0.9 + min
    assert seen == pytest.approx([(0.01 - 1e-4) * (1 - t / 10) ** 0.9 + 1e-4 for t in range(10)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert lr_factor(10, 10, 0, min_ratio=0.25) == pytest.approx(0.25)


@pytest.mark.parametrize("change, message", [
    ({"pretrained": "nvidia/mit-b0"}, "trains from scratch"),
    ({"drop_path_rate": 0.1}, "has none"),
    ({"fuse_first": True}, "drop --fuse-first"),
    ({"batch_size": 1}, "at least 2 images"),
    ({"optimizer": "lamb"}, "--optimizer must be one of adamw, sgd"),
    ({"min_lr": 0.5}, "--min-lr 0.5 must lie in"),
])
def test_cnn_settings_are_checked_before_any_work(cfg, change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        trainer.train(replace(cfg, **change))
    assert not (tmp_path / "run").exists()
