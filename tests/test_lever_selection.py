"""Which levers of chapter 8's sweep (scripts/cpu_camvid_sweep.py levers) join the combined run:
those whose mean over the seeds beats the base's by more than twice the standard error."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cpu_camvid_sweep",
                                              ROOT / "scripts" / "cpu_camvid_sweep.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)
RUNS = sweep.lever_runs(300)


def rows(**mious):
    """Rows as the sweep stores them: one per (run, seed)."""
    return [{"name": name, "seed": seed, "miou": miou}
            for name, values in mious.items() for seed, miou in enumerate(values)]


def test_a_gain_inside_the_noise_is_left_out():
    # OHEM's mean is 0.6 points over the base's, but the base's own seeds spread 1 point
    found = rows(base=[0.28, 0.29, 0.30], **{"OHEM 0.7": [0.285, 0.295, 0.317]})
    assert sweep.combined_changes(found, RUNS) == ([], {})


def test_clear_gains_join_one_per_group_but_regularisation():
    found = rows(base=[0.280, 0.285, 0.282],
                 **{"ENet class weights": [0.33, 0.335, 0.328],        # loss, best
                    "median-frequency weights": [0.31, 0.305, 0.309],  # loss, second: left out
                    "stochastic depth 0": [0.30, 0.298, 0.301],        # regularisation
                    "EMA 0.99": [0.29, 0.299, 0.300],                  # regularisation
                    "native frames": [0.19, 0.18, 0.20]})              # worse
    names, changes = sweep.combined_changes(found, RUNS)
    assert names == ["ENet class weights", "stochastic depth 0", "EMA 0.99"]
    assert changes == {"class_weights": "enet", "drop_path_rate": 0.0, "ema_decay": 0.99}


def test_a_diverged_run_counts_as_zero_and_one_seed_is_refused():
    found = rows(base=[0.28, 0.285, 0.282], **{"OHEM 0.7": [None, None, None]})
    assert sweep.combined_changes(found, RUNS) == ([], {})
    with pytest.raises(ValueError, match="at least two seeds"):
        sweep.combined_changes(rows(base=[0.28], **{"OHEM 0.7": [0.4]}), RUNS)


def test_the_sweep_runs_seed_by_seed_resumes_and_combines(tmp_path, monkeypatch):
    """lever_sweep with training replaced by a made-up score: ENet's weights gain 5 points."""
    calls = []

    def fake_run(name, cfg):
        calls.append((name, cfg.seed))
        gain = 0.05 if cfg.class_weights == "enet" else 0.0
        return {"name": name, "seed": cfg.seed, "miou": 0.28 + gain + 0.002 * cfg.seed}

    monkeypatch.setattr(sweep, "run", fake_run)
    args = type("Args", (), {"iters": 300, "seeds": [0, 1], "runs_dir": str(tmp_path)})
    found = sweep.lever_sweep(args)
    assert calls[:len(RUNS)] == [(name, 0) for name in RUNS]  # every lever at seed 0 first
    assert calls[len(RUNS):2 * len(RUNS)] == [(name, 1) for name in RUNS]
    assert calls[2 * len(RUNS):] == []  # one lever beat the base: nothing to combine
    assert {row["name"] for row in found} == set(RUNS) and len(found) == 2 * len(RUNS)

    calls.clear()
    args.seeds = [0, 1, 2]  # a third seed: only its runs are new
    found = sweep.lever_sweep(args)
    assert calls == [(name, 2) for name in RUNS] and len(found) == 3 * len(RUNS)


def test_two_winners_make_a_combined_run_at_every_seed(tmp_path, monkeypatch):
    def fake_run(name, cfg):
        gain = 0.05 * (cfg.class_weights == "enet") + 0.02 * (cfg.drop_path_rate == 0.0)
        return {"name": name, "seed": cfg.seed, "miou": 0.28 + gain + 0.002 * cfg.seed}

    monkeypatch.setattr(sweep, "run", fake_run)
    args = type("Args", (), {"iters": 300, "seeds": [0, 1, 2], "runs_dir": str(tmp_path)})
    combined = [row for row in sweep.lever_sweep(args) if row["name"] == "combined"]
    assert [row["seed"] for row in combined] == [0, 1, 2]
    assert all(row["combines"] == ["ENet class weights", "stochastic depth 0"] for row in combined)
    assert all(row["miou"] == pytest.approx(0.35 + 0.002 * row["seed"]) for row in combined)


def test_a_killed_run_stops_the_sweep_and_is_not_kept(tmp_path, monkeypatch):
    """train() returns 'interrupted' when the sweep is killed (SIGTERM): that run is no result, so
    it stays out of rows.json, the sweep stops, and the same command runs it again."""
    def fake_train(cfg):
        status = "interrupted" if cfg.class_weights == "enet" else "finished"
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        return {"status": status, "metrics": {"miou": 0.28}, "precision": "bf16",
                "images_seen": 8 * cfg.max_iters, "load_average": None}

    monkeypatch.setattr(sweep, "train", fake_train)
    args = type("Args", (), {"iters": 300, "seeds": [0, 1], "runs_dir": str(tmp_path)})
    with pytest.raises(SystemExit, match="ENet class weights: interrupted"):
        sweep.lever_sweep(args)
    kept = json.loads((tmp_path / "rows.json").read_text())
    assert [(row["name"], row["seed"]) for row in kept] == [("base", 0)]
