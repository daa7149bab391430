"""The trainer (book chapter 8): recipe, resume, atomic checkpoints, NaN stop, signals, DDP on 2 CPU processes, CLI."""

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segformer_edu import SegFormer, data, train as trainer
from segformer_edu.schedule import build_optimizer, lr_factor, official_name, param_groups
from segformer_edu.train import NonFiniteLossError, TrainConfig, save_atomic, segmentation_loss

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(tiny_dataset, tmp_path):
    """B0 on 64x64 crops of the tiny dataset: a few iterations take a second."""
    return TrainConfig(dataset="camvid", data_root=str(tiny_dataset), out_dir=str(tmp_path / "run"),
                       crop_size=(64, 64), scale=(128, 64), batch_size=2, max_iters=6, lr=6e-4, warmup_iters=2,
                       val_interval=3, val_images=2, log_interval=1, num_workers=0, progress=False)


def test_param_groups_follow_the_official_paramwise_cfg_by_official_names():
    model = SegFormer.from_config("b0", num_classes=11)
    groups = {g["name"]: g for g in param_groups(model, lr=6e-5, weight_decay=0.01)}
    assert set(groups) == {"encoder", "encoder_norm", "decoder"}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    official = {id(p): official_name(n) for n, p in model.named_parameters()}
    for group in groups.values():
        for param in group["params"]:
            name = official[id(param)]  # mmseg's rule, written out: "head" first, then "norm"
            lr_mult = 10.0 if "head" in name else 1.0
            decay_mult = 0.0 if "norm" in name and "head" not in name else 1.0
            assert group["lr"] == pytest.approx(6e-5 * lr_mult), name
            assert group["weight_decay"] == pytest.approx(0.01 * decay_mult), name
    in_group = {official[id(p)]: g["name"] for g in groups.values() for p in g["params"]}
    assert in_group["backbone.block1.0.norm1.weight"] == "encoder_norm"  # LayerNorms: no decay
    assert in_group["backbone.block1.0.attn.norm.bias"] == "encoder_norm"
    assert in_group["backbone.norm4.weight"] == "encoder_norm"
    assert in_group["backbone.patch_embed1.norm.weight"] == "encoder_norm"
    assert in_group["backbone.block1.0.attn.q.bias"] == "encoder"  # biases are decayed
    assert in_group["decode_head.linear_fuse.bn.weight"] == "decoder"  # the decoder's BatchNorm too (lr x10)
    assert in_group["decode_head.linear_pred.bias"] == "decoder"
    # LayerNorms: 4 after patch embedding, 4 at stage ends, 3 per block (2 in stage 4, where sr = 1 has none)
    assert len(groups["encoder_norm"]["params"]) == 2 * (4 + 4 + 6 * 3 + 2 * 2)


def test_lr_schedule_is_warmup_then_poly():
    max_iters, warmup = 1000, 100
    model = SegFormer.from_config("b0", num_classes=3)
    optimizer, scheduler = build_optimizer(model, lr=6e-5, max_iters=max_iters, warmup_iters=warmup)
    seen = {}
    for it in range(max_iters):
        seen[it] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    for it in (0, 50, 99, 100, 500, 999):
        poly = 1 - it / max_iters
        ramp = 1 - (1 - it / warmup) * (1 - 1e-6) if it < warmup else 1.0
        assert lr_factor(it, max_iters, warmup) == pytest.approx(poly * ramp)
        assert seen[it][0] == pytest.approx(6e-5 * poly * ramp)  # encoder
        assert max(seen[it]) == pytest.approx(6e-4 * poly * ramp)  # decoder, x10
    assert lr_factor(0, max_iters, warmup) == pytest.approx(1e-6)
    assert lr_factor(max_iters, max_iters, warmup) == 0.0


def test_recipe_overfits_one_batch():
    torch.manual_seed(0)
    model = SegFormer.from_config("b0", num_classes=4)
    optimizer, scheduler = build_optimizer(model, lr=1e-3, max_iters=30, warmup_iters=0)
    blocks = torch.randint(0, 4, (2, 1, 4, 4)).float()  # a 4x4 layout of classes per image
    labels = torch.nn.functional.interpolate(blocks, size=(64, 64), mode="nearest")[:, 0].long()  # (2, 64, 64)
    images = torch.randn(2, 3, 64, 64)
    labels[:, :8] = 255  # ignored pixels take no part
    losses = []
    for _ in range(30):
        loss = segmentation_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_loss_ignores_255_and_upsamples_to_label_size():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.full((1, 16, 16), 255)
    labels[0, 0, 0] = 2
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    expected = -torch.log_softmax(up[0, :, 0, 0], dim=0)[2]
    torch.testing.assert_close(segmentation_loss(logits, labels), expected)


def test_short_run_writes_everything_a_reader_opens(cfg):
    result = trainer.train(cfg)
    assert result["status"] == "finished" and result["iteration"] == 6
    assert len(result["losses"]) == 6 and all(math.isfinite(x) for x in result["losses"])
    out = Path(cfg.out_dir)
    for name in ("latest.pt", "best.pt", "train_log.jsonl", "metrics.jsonl", "curves.png", "predictions.png",
                 "summary.json"):
        assert (out / name).exists(), name
    assert [json.loads(line)["iter"] for line in (out / "train_log.jsonl").open()] == [1, 2, 3, 4, 5, 6]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [m["iter"] for m in metrics] == [3, 6]
    assert len(metrics[-1]["iou"]) == 11 and 0 <= metrics[-1]["miou"] <= 1
    state = torch.load(out / "latest.pt", weights_only=True)  # our own format loads without pickle
    assert state["iteration"] == 6 and state["config"]["max_iters"] == 6
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "best_miou"}


def test_resume_continues_the_uninterrupted_loss_curve(cfg, tmp_path):
    full = trainer.train(replace(cfg, out_dir=str(tmp_path / "full"), val_interval=100))
    first = trainer.train(replace(cfg, val_interval=100, stop_at=3))
    assert first["status"] == "stopped" and first["iteration"] == 3
    assert torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["iteration"] == 3
    second = trainer.train(replace(cfg, val_interval=100, resume=True))
    assert second["iteration"] == 6 and len(second["losses"]) == 3
    torch.testing.assert_close(torch.tensor(first["losses"] + second["losses"]), torch.tensor(full["losses"]))
    log = [json.loads(line)["iter"] for line in (Path(cfg.out_dir) / "train_log.jsonl").open()]
    assert log == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice


def test_wall_time_sums_the_calls_and_leaves_out_the_pause_between(cfg):
    import time

    def wall_in_latest():
        return torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["wall_seconds"]

    start = time.monotonic()
    trainer.train(replace(cfg, val_interval=100, stop_at=3))
    first = time.monotonic() - start
    after_first = wall_in_latest()
    assert 0.5 * first < after_first <= first  # the call, from its setup to its last save
    time.sleep(2)  # the run waits, killed, before someone resumes it
    start = time.monotonic()
    summary = trainer.train(replace(cfg, val_interval=100, resume=True))
    second = time.monotonic() - start
    # the second call adds its own time to the first's, and not the 2 s between them
    assert after_first < wall_in_latest() <= summary["wall_seconds"] <= after_first + second


def test_atomic_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_atomic({"iteration": 3}, path)

    def save_then_die(obj, f):
        Path(f).write_bytes(b"half a checkpoi")  # the kill comes mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"iteration": 6}, path)
    assert torch.load(path, weights_only=True) == {"iteration": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left behind


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cfg, monkeypatch):
    calls = []

    def loss_turning_nan(logits, labels, **options):
        calls.append(1)
        loss = segmentation_loss(logits, labels, **options)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(trainer, "segmentation_loss", loss_turning_nan)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 5.*iteration 3\) is kept"):
        trainer.train(cfg)
    state = torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_sigterm_saves_latest_and_stops(cfg, monkeypatch):
    calls = []

    def loss_with_a_kill(logits, labels, **options):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the step finishes, then the run stops
        return segmentation_loss(logits, labels, **options)

    monkeypatch.setattr(trainer, "segmentation_loss", loss_with_a_kill)
    result = trainer.train(replace(cfg, val_interval=100))
    assert result["status"] == "interrupted" and result["iteration"] == 2
    assert torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["iteration"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_bad_label_stops_the_run_before_its_first_step(cfg, tiny_dataset, tmp_path, monkeypatch, in_memory):
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    trainer.train(replace(cfg, max_iters=3, val_interval=3))
    latest = Path(cfg.out_dir) / "latest.pt"
    before = latest.read_bytes()
    path = tiny_dataset / "trainannot" / "train_005.png"  # drawn late, if ever, in a short run
    label = np.array(Image.open(path))
    label[0, 0] = 99
    Image.fromarray(label).save(path)
    steps = []
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda *a, **kw: steps.append(1) or segmentation_loss(*a, **kw))
    with pytest.raises(ValueError, match=r"train_005\.png holds values \[99\]"):
        trainer.train(replace(cfg, max_iters=6, resume=True, in_memory=in_memory))
    assert steps == [] and latest.read_bytes() == before  # nothing trained on it, the checkpoint untouched


def test_an_error_in_a_data_loading_worker_is_one_line(cfg, tiny_dataset):
    path = tiny_dataset / "train" / "train_001.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated: found only when a worker decodes it
    done = run_cli("-m", "segformer_edu.train", "--data-root", cfg.data_root, "--out-dir", cfg.out_dir,
                   "--crop-size", "64", "64", "--scale", "128", "64", "--batch-size", "2", "--max-iters", "20",
                   "--num-workers", "1", "--no-in-memory", "--no-progress")
    assert done.returncode == 1
    assert done.stderr.startswith("error: corrupt or unreadable image") and "train_001.jpg" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def run_cli(*args, env_extra=None, timeout=120):
    env = os.environ | {"OMP_NUM_THREADS": "1"} | (env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_on_two_cpu_processes_only_rank0_writes(cfg):
    out = Path(cfg.out_dir)
    done = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "segformer_edu.train",
                   "--data-root", cfg.data_root, "--out-dir", str(out), "--crop-size", "64", "64",
                   "--scale", "128", "64", "--batch-size", "1", "--max-iters", "3", "--val-interval", "3",
                   "--val-images", "2", "--log-interval", "1", "--num-workers", "0", "--amp", "fp32",
                   "--no-progress")  # fp32: the check below evaluates in fp32 (a CPU with AMX picks bf16)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "latest.pt", "metrics.jsonl",
                                                     "predictions.png", "summary.json", "train_log.jsonl"]
    assert [json.loads(line)["iter"] for line in (out / "train_log.jsonl").open()] == [1, 2, 3]  # one writer
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    state = torch.load(out / "latest.pt", weights_only=True)
    assert len(state["rng"]) == 2  # every rank's RNG state
    # the logged metrics are those of the saved weights: rank 0's BatchNorm statistics reached rank 1 first
    model = SegFormer.from_config("b0", num_classes=11)
    model.load_state_dict(state["model"])
    val = trainer.Subset(data.camvid(cfg.data_root, "val"), range(2))
    saved = trainer.evaluate(model, val, 11, torch.device("cpu"))
    logged = json.loads((out / "metrics.jsonl").read_text())
    assert saved["acc"] == pytest.approx(logged["acc"], abs=1e-12)
    assert saved["miou"] == pytest.approx(logged["miou"], abs=1e-12)


def test_cli_help_and_missing_data_message(tmp_path):
    shown = run_cli("-m", "segformer_edu.train", "--help")
    assert shown.returncode == 0 and "--max-iters" in shown.stdout and "--pretrained" in shown.stdout
    missing = run_cli("-m", "segformer_edu.train", "--data-root", str(tmp_path / "nowhere"),
                      "--out-dir", str(tmp_path / "run"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("error:") and "Traceback" not in missing.stderr


def test_ade20k_test_split_is_refused_before_any_training(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for kind in ("images", "annotations"):
            (root / kind / split).mkdir(parents=True)
    cfg = TrainConfig(dataset="ade20k", data_root=str(root), out_dir=str(tmp_path / "run"), test=True,
                      max_iters=2, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="without labels.*drop --test"):
        trainer.train(cfg)
    assert not (tmp_path / "run" / "latest.pt").exists()
