"""What a user of ``python -m segformer_edu.train`` and ``train(cfg)`` meets (issue: runs never destroy each
other, mistakes are one line before any work, Ctrl-C is said and resumable, the end says what to do next)."""

import inspect
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segformer_edu import train as trainer
from segformer_edu.schedule import lr_factor
from segformer_edu.train import TrainConfig, check_config, segmentation_loss

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture
def cfg(tiny_dataset, tmp_path):
    """B0 on 64x64 crops of the tiny dataset: a few iterations take a second."""
    return TrainConfig(dataset="camvid", data_root=str(tiny_dataset), out_dir=str(tmp_path / "run"),
                       crop_size=(64, 64), scale=(128, 64), batch_size=2, max_iters=4, lr=6e-4,
                       warmup_iters=1, val_interval=2, val_images=2, log_interval=1, num_workers=0,
                       amp="fp32", progress=False)


def count_steps(monkeypatch) -> list:
    steps = []
    monkeypatch.setattr(trainer, "segmentation_loss",
                        lambda *a, **kw: steps.append(1) or segmentation_loss(*a, **kw))
    return steps


def cli(*args, timeout=240, **popen):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "segformer_edu.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **popen)


def cli_flags(cfg: TrainConfig) -> list[str]:
    return ["--data-root", cfg.data_root, "--out-dir", cfg.out_dir, "--crop-size", "64", "64",
            "--scale", "128", "64", "--batch-size", "2", "--warmup-iters", "1", "--val-images", "2",
            "--log-interval", "1", "--num-workers", "0", "--amp", "fp32", "--no-progress"]


# ----------------------------------------------------------------------------- 1. a run never destroys another

def test_a_second_run_into_a_used_folder_is_refused_and_keeps_the_first(cfg, monkeypatch):
    trainer.train(cfg)
    out = Path(cfg.out_dir)
    before = {name: (out / name).read_bytes() for name in ("best.pt", "latest.pt", "train_log.jsonl")}
    steps = count_steps(monkeypatch)
    with pytest.raises(FileExistsError, match=r"holds a run \(latest\.pt at iteration 4 of 4\): continue it "
                                              r"with --resume, start it again with --overwrite"):
        trainer.train(replace(cfg, lr=1e-2))
    assert steps == [] and before == {name: (out / name).read_bytes() for name in before}


def test_a_folder_with_other_files_is_refused_unless_overwrite(cfg):
    out = Path(cfg.out_dir)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"is not empty \(notes\.txt\)"):
        trainer.train(cfg)
    trainer.train(replace(cfg, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine" and (out / "best.pt").exists()


def test_overwrite_starts_afresh_and_its_logs_hold_one_run(cfg):
    trainer.train(cfg)
    trainer.train(replace(cfg, overwrite=True, max_iters=3, val_interval=3))
    log = [json.loads(line)["iter"] for line in (Path(cfg.out_dir) / "train_log.jsonl").open()]
    assert log == [1, 2, 3]
    assert [json.loads(line)["iter"] for line in (Path(cfg.out_dir) / "metrics.jsonl").open()] == [3]


def test_overwrite_keeps_the_old_run_when_a_check_fails_before_training(cfg, tiny_dataset):
    trainer.train(cfg)
    best = (Path(cfg.out_dir) / "best.pt").read_bytes()
    with pytest.raises(FileNotFoundError):
        trainer.train(replace(cfg, overwrite=True, data_root=str(tiny_dataset.parent / "nowhere")))
    assert (Path(cfg.out_dir) / "best.pt").read_bytes() == best


def test_resume_with_nothing_to_resume_starts_a_new_run_and_says_so(cfg, capsys):
    result = trainer.train(replace(cfg, resume=True))
    assert result["status"] == "finished" and result["iteration"] == 4
    assert f"nothing to resume in {cfg.out_dir}: starting a new run" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 1b. one run per folder

def start_long_run(cfg: TrainConfig) -> subprocess.Popen:
    """A command-line run that trains for hours, once it has logged its first step."""
    run = subprocess.Popen([sys.executable, "-m", "segformer_edu.train", *cli_flags(cfg), "--max-iters",
                            "100000", "--val-interval", "100000"], cwd=REPO, text=True,
                           env=os.environ | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    log = Path(cfg.out_dir) / "train_log.jsonl"
    deadline = time.monotonic() + 180
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return run


def test_a_second_run_into_a_folder_in_use_is_one_line_and_a_killed_run_blocks_nothing(cfg):
    first = start_long_run(cfg)
    try:
        second = cli(*cli_flags(cfg), "--max-iters", "4", "--resume")
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr[-2000:]
        assert lines[0].startswith(f"error: --out-dir {cfg.out_dir} is in use by another run (pid {first.pid} "
                                   f"on {socket.gethostname()} since ")
        assert lines[0].endswith("): wait for it to finish, or pass another --out-dir")
        assert "data:" not in second.stdout  # refused before the data was read
        assert first.poll() is None  # the first run trains on
    finally:
        first.kill()  # SIGKILL: no clean-up; the kernel drops its lock
        first.communicate()
    out = Path(cfg.out_dir)
    assert (out / ".lock").exists() and not (out / "latest.pt").exists()
    result = trainer.train(replace(cfg, resume=True))  # nothing to resume: a new run, not blocked
    assert result["status"] == "finished" and not (out / ".lock").exists()


def test_a_lock_file_alone_leaves_a_folder_empty(cfg):
    out = Path(cfg.out_dir)
    out.mkdir()
    (out / ".lock").write_text('{"pid": 1, "host": "elsewhere", "since": "yesterday"}')  # not locked
    assert trainer.train(cfg)["status"] == "finished"


def test_a_run_holds_its_folder_while_it_trains_even_with_overwrite(cfg, monkeypatch):
    import fcntl

    trainer.train(cfg)
    held = []

    def loss_while_checking_the_lock(*args, **kwargs):
        with open(Path(cfg.out_dir) / ".lock") as other:  # another open file: flock sees another owner
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return segmentation_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "segmentation_loss", loss_while_checking_the_lock)
    trainer.train(replace(cfg, overwrite=True))  # removes the old run's files, never the lock
    assert held == [True] * 4


def test_the_default_folder_is_named_after_dataset_and_model():
    assert check_config(TrainConfig(), CPU)[0].out_dir == str(Path("runs/camvid_b0"))
    folder = TrainConfig(dataset="folder", data_root="data/my_photos", model="b2")
    assert check_config(folder, CPU)[0].out_dir == str(Path("runs/my_photos_b2"))


# ----------------------------------------------------------------------------- 2. checks before the first step

@pytest.mark.parametrize("change, message", [
    ({"max_iters": 0}, "--max-iters must be positive, not 0"),
    ({"max_iters": -5}, "--max-iters must be positive, not -5"),
    ({"batch_size": 0}, "--batch-size must be positive"),
    ({"val_interval": 0}, "--val-interval must be positive"),
    ({"crop_size": (16, 64)}, r"--crop-size 16 64 is under the model's smallest side, 29 px"),
    ({"amp": "fp16"}, "--amp fp16 needs a GPU"),
    ({"model": "b9"}, "--model 'b9' is not a model"),
    ({"resume": True, "overwrite": True}, "pass one of them"),
    ({"ohem_thresh": 1.5}, r"--ohem-thresh is a probability in \(0, 1\]"),
    ({"class_weights": "inverse"}, "--class-weights must be one of enet, median"),
], ids=lambda x: str(x)[:30])
def test_a_bad_setting_is_one_line_before_anything_is_written(cfg, change, message):
    with pytest.raises(ValueError, match=message):
        trainer.train(replace(cfg, **change))
    assert not Path(cfg.out_dir).exists()


def test_a_warmup_longer_than_the_run_is_cut_to_a_tenth_and_said(capsys):
    resolved, _ = check_config(TrainConfig(max_iters=50), CPU)
    assert resolved.warmup_iters == 5
    assert "--warmup-iters 1500 would not end before --max-iters 50: warming up for 5" in capsys.readouterr().out
    assert check_config(TrainConfig(max_iters=5000), CPU)[0].warmup_iters == 1500


def test_a_too_small_validation_image_is_named_before_the_first_step(cfg, tiny_dataset, monkeypatch):
    small = tiny_dataset / "val" / "val_000.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(small)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tiny_dataset / "valannot" / "val_000.png")
    steps = count_steps(monkeypatch)
    with pytest.raises(ValueError, match=r"val image .*val_000\.png is 20x24, under the model's smallest "
                                         r"side 29: .*--val-scale"):
        trainer.train(cfg)
    assert steps == [] and not (Path(cfg.out_dir) / "latest.pt").exists()
    trainer.train(replace(cfg, val_scale=(64, 48)))  # resized (and aligned to 32) it is big enough


def test_an_out_dir_that_is_a_file_or_cannot_be_written_is_refused_first(cfg, tmp_path, monkeypatch):
    steps = count_steps(monkeypatch)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="a_file is a file, not a folder"):
        trainer.train(replace(cfg, out_dir=str(tmp_path / "a_file")))
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        trainer.train(replace(cfg, out_dir=str(tmp_path / "a_file" / "run")))
    with pytest.raises(PermissionError, match="cannot write to --out-dir /proc/segformer_run"):
        trainer.train(replace(cfg, out_dir="/proc/segformer_run"))  # /proc takes no new folders, even as root
    assert steps == []


def test_resume_with_another_model_or_past_the_end_is_one_line(cfg, capsys):
    trainer.train(replace(cfg, stop_at=2))
    with pytest.raises(ValueError, match=r"--model b1 but .*latest\.pt was trained with --model b0: resume "
                                         r"with --model b0"):
        trainer.train(replace(cfg, model="b1", resume=True))
    with pytest.raises(ValueError, match=r"latest\.pt is at iteration 2, past --max-iters 1"):
        trainer.train(replace(cfg, max_iters=1, resume=True))
    trainer.train(replace(cfg, resume=True))
    capsys.readouterr()
    again = trainer.train(replace(cfg, resume=True))
    assert again["status"] == "already finished" and again["losses"] == []
    assert "finished already, at iteration 4: nothing to train" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 2b. resume with changed settings

def logged_lrs(cfg: TrainConfig) -> dict:
    """{iteration: (lr, decoder lr)} of train_log.jsonl: the lrs each step used."""
    lines = [json.loads(line) for line in (Path(cfg.out_dir) / "train_log.jsonl").open()]
    return {line["iter"]: (line["lr"], line["head_lr"]) for line in lines}


def test_resume_with_a_new_lr_and_decay_trains_with_them_and_says_so(cfg, capsys):
    trainer.train(replace(cfg, stop_at=2))  # lr 6e-4, weight decay 0.01, 4 iterations, warm-up 1
    capsys.readouterr()
    result = trainer.train(replace(cfg, resume=True, lr=1e-3, weight_decay=0.05))
    expected = 1e-3 * lr_factor(2, 4, warmup_iters=1)  # the new schedule at iteration 2: 5e-4
    assert ("resumed with changed settings: --lr 0.0006 -> 0.001, --weight-decay 0.01 -> 0.05; the schedule "
            "continues from iteration 2 with them (next step: lr 0.0005, decoder 0.005)") in capsys.readouterr().out
    assert logged_lrs(cfg)[3] == pytest.approx((expected, 10 * expected))  # 3e-4 before: the old lr's schedule
    optimizer = torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["optimizer"]
    decays = {group["name"]: group["weight_decay"] for group in optimizer["param_groups"]}
    assert decays == {"encoder": 0.05, "encoder_norm": 0.0, "decoder": 0.05}  # 0.01 before
    recorded = [{"iteration": 2, "changed": {"lr": [6e-4, 1e-3], "weight_decay": [0.01, 0.05]}}]
    assert json.loads((Path(cfg.out_dir) / "summary.json").read_text())["resume_changes"] == recorded


def test_extending_a_finished_run_continues_its_schedule_with_the_new_length(cfg, capsys):
    trainer.train(cfg)  # finished at iteration 4, where the poly decay reached lr 0
    result = trainer.train(replace(cfg, resume=True, max_iters=8))
    assert result["status"] == "finished" and result["iteration"] == 8
    assert "--max-iters 4 -> 8; the schedule continues from iteration 4 with them" in capsys.readouterr().out
    expected = 6e-4 * lr_factor(4, 8, warmup_iters=1)  # 3e-4; the first step after the end ran at lr 0.0
    assert logged_lrs(cfg)[5] == pytest.approx((expected, 10 * expected))


def test_a_recipe_change_on_resume_is_one_line_that_says_how_to_start_from_the_weights(cfg, tmp_path, capsys,
                                                                                       caplog, monkeypatch):
    flags = [*cli_flags(cfg), "--lr", "6e-4", "--val-interval", "2"]
    assert trainer.main([*flags, "--max-iters", "4", "--stop-at", "2"]) == 0
    steps = count_steps(monkeypatch)
    capsys.readouterr()
    assert trainer.main([*flags, "--max-iters", "4", "--resume", "--head-lr-mult", "1", "--batch-size", "4"]) == 1
    latest = Path(cfg.out_dir) / "latest.pt"
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: --resume cannot change --batch-size (2 -> 4), --head-lr-mult (10.0 -> 1.0): a "
                     "resumed run keeps its recipe and applies new --lr, --weight-decay, --max-iters, --min-lr, "
                     "--power, --warmup-iters, --warmup-ratio, --amp only; resume with the run's values, or start "
                     f"a new run from its weights: --pretrained {latest} --out-dir NEW_DIR, without --resume"]
    assert steps == []  # refused before any data was read (torch's "different number of parameter groups" before)
    # the advice works: a training checkpoint is a --pretrained source, its decoder kept
    new_dir = str(tmp_path / "new")
    advice = error[0].split("start a new run from its weights: ")[1].split(", without")[0]
    new_flags = [word.replace("NEW_DIR", new_dir) for word in advice.split()]
    assert trainer.main([*flags, "--max-iters", "4", "--head-lr-mult", "1", "--batch-size", "4",
                         *new_flags]) == 0
    assert len(steps) == 4 and "newly initialised" not in caplog.text
    assert torch.load(Path(new_dir) / "latest.pt", weights_only=True)["config"]["pretrained"] == str(latest)


def test_a_failure_after_a_few_minutes_of_training_keeps_a_checkpoint_and_says_where(cfg, monkeypatch):
    calls = []

    def loss_then_failure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise MemoryError("out of memory")
        return segmentation_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "segmentation_loss", loss_then_failure)
    with pytest.raises(MemoryError) as failure:  # save_minutes ~0: latest.pt after every step
        trainer.train(replace(cfg, val_interval=100, save_minutes=1e-9))
    latest = Path(cfg.out_dir) / "latest.pt"
    assert torch.load(latest, weights_only=True)["iteration"] == 3
    assert failure.value.__notes__ == [f"{latest} (iteration 3) is kept: continue with --resume"]


# ----------------------------------------------------------------------------- 3. Ctrl-C, exit codes, summary

def test_ctrl_c_during_validation_is_said_and_the_run_stops_after_it(cfg, monkeypatch, capsys):
    evaluate = trainer.evaluate

    def evaluate_with_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-validation
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", evaluate_with_ctrl_c)
    result = trainer.train(cfg)
    assert result["status"] == "interrupted" and result["iteration"] == 2 and result["signal"] == signal.SIGINT
    assert torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["iteration"] == 2
    assert "Ctrl-C: stopping after this step or validation, once latest.pt is saved" in capsys.readouterr().err


def test_the_command_line_ends_with_what_to_do_next(cfg):
    done = cli(*cli_flags(cfg), "--max-iters", "2", "--val-interval", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("finished at iteration 2; best.pt: val mIoU ") and " at iteration 2, in " in last
    assert last.endswith(f"next: python -m segformer_edu.predict --model {cfg.out_dir} --images IMAGES "
                         "--out PREDICTIONS")
    assert "iter 2: mIoU " in done.stdout and " %, pixel acc " in done.stdout  # percentages, as the summary
    assert "might freeze" not in done.stderr  # the default workers fit this machine's cores


def test_ctrl_c_on_the_command_line_exits_130_with_the_command_that_continues(cfg):
    run = start_long_run(cfg)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr[-2000:]
    iteration = torch.load(Path(cfg.out_dir) / "latest.pt", weights_only=True)["iteration"]
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"interrupted (Ctrl-C) at iteration {iteration:,}: latest.pt saved in ")
    assert last.endswith("--max-iters 100000 --val-interval 100000 --resume")
    assert "continue with: python -m segformer_edu.train --data-root" in last


def test_the_command_printed_after_stop_at_continues_the_run(cfg):
    stopped = cli(*cli_flags(cfg), "--max-iters", "4", "--val-interval", "2", "--stop-at=2")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    command = stopped.stdout.strip().splitlines()[-1].split("continue with: ")[1]
    assert "--stop-at" not in command and command.endswith("--val-interval 2 --resume")
    program, module, *flags = shlex.split(command)
    assert (program, module) == ("python", "-m")
    continued = cli(*flags[1:])  # flags[0]: segformer_edu.train
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert continued.stdout.strip().splitlines()[-1].startswith("finished at iteration 4; ")


def test_the_continuing_command_drops_stop_at_and_overwrite_however_they_are_typed():
    argv = ["--out-dir", "runs/x", "--stop-at", "2", "--overwrite", "--stop-at=3", "--stop", "4", "--lr=1e-3"]
    assert trainer.resume_command(argv, 1) == "python -m segformer_edu.train --out-dir runs/x --lr=1e-3 --resume"
    assert trainer.resume_command(["--no-resume", "--st=5"], 2) == (
        "torchrun --nproc_per_node=2 -m segformer_edu.train --resume")


def test_help_shows_defaults_and_a_mistyped_flag_is_one_line():
    shown = cli("--help")
    assert shown.returncode == 0
    assert "(default: 160000)" in shown.stdout and "(default: 512 512)" in shown.stdout
    typo = cli("--max-itres", "5")
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --max-itres 5 (did you mean --max-iters?); see "
        "python -m segformer_edu.train --help"]


def test_the_default_data_workers_fit_the_cores():
    assert 0 < TrainConfig().num_workers <= min(4, trainer.available_cpus())


# ----------------------------------------------------------------------------- pretrained sources

def test_a_mistyped_local_path_is_not_sent_to_the_hub(cfg, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: pytest.fail("hub asked"))
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at 'runs/mnie' \(runs holds mine\)"):
        trainer.train(replace(cfg, pretrained="runs/mnie"))


def test_an_unreachable_hub_is_one_line_at_once(cfg, monkeypatch):
    import huggingface_hub

    from segformer_edu import checkpoint

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: pytest.fail("retried"))
    monkeypatch.setattr(checkpoint, "_cached", lambda hub_id: None)
    monkeypatch.setattr(checkpoint, "hub_reachable", lambda: False)
    start = time.monotonic()
    with pytest.raises(OSError, match="could not download 'nvidia/mit-b0': the Hugging Face hub cannot be "
                                      "reached"):
        trainer.train(replace(cfg, pretrained="nvidia/mit-b0"))
    assert time.monotonic() - start < 5 and not Path(cfg.out_dir).exists()


def test_a_model_that_disagrees_with_the_pretrained_weights_is_refused(cfg, tmp_path):
    from segformer_edu import SegFormer

    SegFormer.from_config("b0", num_classes=3).save_pretrained(tmp_path / "b0")
    with pytest.raises(ValueError, match=r"--model b2 but --pretrained .* is a b0: drop --model"):
        trainer.train(replace(cfg, model="b2", pretrained=str(tmp_path / "b0")))
    assert check_config(replace(cfg, pretrained=str(tmp_path / "b0")), CPU)[0].model == "b0"


# ----------------------------------------------------------------------------- 6. train reads as its steps

def test_train_is_a_table_of_contents_of_named_steps():
    source = inspect.getsource(trainer.train)
    assert len(source.splitlines()) <= 110
    steps = ("check_config", "claim_run_folder", "prepare_data", "build", "restore",
             "training_loop", "finish")
    assert all(f"{step}(" in source for step in steps)
    loop = inspect.getsource(trainer.training_loop)
    assert all(f"{step}(" in loop for step in ("train_step", "validate_and_save"))
    assert all(len(inspect.getsource(getattr(trainer, step)).splitlines()) <= 70
               for step in (*steps, "train_step", "validate_and_save"))
