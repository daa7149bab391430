"""The paper's 16 corruptions (segformer_edu.corruptions) and the robustness script
(scripts/camvid_robustness.py) on the stored CamVid SegFormer."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

from segformer_edu import corruptions
from segformer_edu.cnn import DeepLabV3Plus
from segformer_edu.corruptions import (CORRUPTIONS, GROUPS, corrupt, corrupt_frames, frame_seed,
                                      severities)

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / "book" / "assets" / "camvid_0001TP_006690.jpg"  # a CamVid frame, 480x360
STORED_B0 = ROOT / "book" / "results" / "camvid_b0_cpu"
# the ones whose output depends on random draws (the others are fixed filters and curves)
RANDOM = {"motion_blur", "glass_blur", "gaussian_noise", "impulse_noise", "shot_noise",
          "speckle_noise", "snow", "spatter", "fog", "frost"}

spec = importlib.util.spec_from_file_location("camvid_robustness",
                                              ROOT / "scripts" / "camvid_robustness.py")
robustness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(robustness)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.asarray(Image.open(FRAME).convert("RGB"))  # (360, 480, 3) uint8


def test_the_papers_16_in_four_groups_noise_at_three_severities():
    assert {group: len(names) for group, names in GROUPS.items()} == {
        "blur": 4, "noise": 4, "digital": 4, "weather": 4}
    assert len(set(CORRUPTIONS)) == 16
    from imagecorruptions import get_corruption_names

    assert set(CORRUPTIONS) <= set(get_corruption_names("all"))
    assert {name: severities(name) for name in GROUPS["noise"]} == dict.fromkeys(GROUPS["noise"],
                                                                                (1, 2, 3))
    assert all(severities(name) == (1, 2, 3, 4, 5) for name in CORRUPTIONS
               if name not in GROUPS["noise"])


def test_every_corruption_runs_at_480x360_at_every_severity(frame):
    for name in CORRUPTIONS:
        for severity in severities(name):
            out = corrupt(frame, name, severity, seed=severity)
            assert out.shape == (360, 480, 3) and out.dtype == np.uint8, (name, severity)
            assert not np.array_equal(out, frame), (name, severity)


def test_corrupted_frames_depend_on_the_seed_only(frame):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for name in CORRUPTIONS:
        first, again = corrupt(frame, name, 2, seed=7), corrupt(frame, name, 2, seed=7)
        assert np.array_equal(first, again), name
        other = corrupt(frame, name, 2, seed=8)
        assert np.array_equal(first, other) == (name not in RANDOM), name
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's generator untouched


def test_each_frame_and_setting_draws_its_own_seed():
    seeds = {frame_seed(0, name, severity, index) for name in CORRUPTIONS
             for severity in severities(name) for index in range(3)}
    assert len(seeds) == 3 * sum(len(severities(name)) for name in CORRUPTIONS)
    assert frame_seed(0, "fog", 2, 5) == frame_seed(0, "fog", 2, 5) != frame_seed(1, "fog", 2, 5)


def test_corrupt_frames_gives_each_frame_its_own_seeded_corruption(frame):
    class TwoFrames:  # a dataset's load: (image, label)
        def load(self, index):
            return frame, np.full(frame.shape[:2], index, np.uint8)

    pairs = corrupt_frames(TwoFrames(), [0, 5], "gaussian_noise", 2, seed=3)
    for (image, label), index in zip(pairs, [0, 5]):
        expected = corrupt(frame, "gaussian_noise", 2, frame_seed(3, "gaussian_noise", 2, index))
        assert np.array_equal(image, expected) and (label == index).all()
    assert not np.array_equal(pairs[0][0], pairs[1][0])


def test_bad_requests_get_one_line(frame):
    with pytest.raises(ValueError, match="unknown corruption 'zoom_blur'"):
        corrupt(frame, "zoom_blur", 1, 0)
    with pytest.raises(ValueError, match=r"severities \(1, 2, 3\), not 4"):
        corrupt(frame, "shot_noise", 4, 0)
    with pytest.raises(ValueError, match="at least 32x32"):
        corrupt(frame[:20], "fog", 1, 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(frame.astype(np.float32), "fog", 1, 0)


def run(tmp_path, camvid_root, *extra):
    out = tmp_path / "robustness.json"
    argv = ["--frames", "2", "--corruptions", "gaussian_noise", "motion_blur",
            "--data-root", str(camvid_root), "--out", str(out), *extra]
    return robustness.main(argv), out


def test_the_script_end_to_end_on_two_frames(tmp_path, camvid_root, capsys):
    status, out = run(tmp_path, camvid_root)
    assert status == 0
    record = json.loads(out.read_text())
    assert record["settings"]["frames"] == [0, 116]  # 2 of the 233, evenly spaced
    entry = record["models"]["segformer-b0"]
    assert entry["folder"] == "book/results/camvid_b0_cpu" and entry["eval_scale"] == [240, 180]
    assert sorted(record["results"]) == ["gaussian_noise", "motion_blur"]
    assert list(record["results"]["gaussian_noise"]) == ["1", "2", "3"]
    assert list(record["results"]["motion_blur"]) == ["1", "2", "3", "4", "5"]
    noisy = [record["results"]["gaussian_noise"][s]["segformer-b0"]["miou"] for s in "123"]
    assert all(0 <= miou <= 1 for miou in noisy) and noisy[2] < entry["clean"]["miou"]

    # the clean reference is what the trainer's own test pipeline gives on those frames
    from segformer_edu.datasets import build_split
    from segformer_edu.evaluation import evaluate
    from segformer_edu.train import TrainConfig

    test_set, names = build_split(TrainConfig(data_root=str(camvid_root), val_scale=(240, 180)),
                               "test")
    model = robustness.load_model(STORED_B0)
    reference = evaluate(model, Subset(test_set, [0, 116]), 11, torch.device("cpu"))
    assert entry["clean"]["miou"] == reference["miou"]

    # a second run finds everything done; other settings are refused and change nothing
    stored = out.read_text()
    capsys.readouterr()
    assert run(tmp_path, camvid_root)[0] == 0
    assert "mIoU" not in capsys.readouterr().out and out.read_text() == stored
    assert run(tmp_path, camvid_root, "--seed", "1")[0] == 1
    assert "other settings (seed)" in capsys.readouterr().err and out.read_text() == stored


def stored_cnn(folder, seed: int = 0):
    """A CNN with random weights (``seed``) stored as a test run stores it, with its test scale."""
    torch.manual_seed(seed)
    DeepLabV3Plus.from_config(num_classes=11).save_pretrained(folder)
    (folder / "test_metrics.json").write_text(json.dumps({"eval_scale": [240, 180]}))
    return folder


def test_the_script_adds_the_cnn_beside_and_refuses_other_weights(tmp_path, camvid_root, capsys):
    cnn_folder = stored_cnn(tmp_path / "cnn")
    models = ["--model", f"segformer-b0={STORED_B0}", "--model", f"cnn={cnn_folder}"]
    status, out = run(tmp_path, camvid_root, "--frames", "1", "--corruptions", "contrast", *models)
    assert status == 0
    record = json.loads(out.read_text())
    assert set(record["results"]["contrast"]["5"]) == {"segformer-b0", "cnn"}
    assert record["models"]["cnn"]["folder"] == "cnn"  # outside the repository: its name only
    stored_cnn(cnn_folder, seed=1)  # other weights
    assert run(tmp_path, camvid_root, "--frames", "1", "--corruptions", "contrast", *models)[0] == 1
    assert "other weights named 'cnn'" in capsys.readouterr().err


def test_the_script_refuses_a_folder_without_its_test_scale(tmp_path, camvid_root, capsys):
    DeepLabV3Plus.from_config(num_classes=11).save_pretrained(tmp_path / "cnn")
    assert run(tmp_path, camvid_root, "--model", f"cnn={tmp_path / 'cnn'}")[0] == 1
    assert "eval_scale" in capsys.readouterr().err
    assert not (tmp_path / "robustness.json").exists()


def test_versions_name_the_corruption_package():
    assert corruptions.versions()["imagecorruptions-imaug"] == "1.1.5"


def test_the_script_adapts_batchnorm_on_each_set_of_frames(tmp_path, camvid_root, capsys):
    """--adapt-batchnorm: the CNN's statistics re-estimated on the very frames it is scored on."""
    from segformer_edu.adaptation import with_batchnorm_statistics_of

    cnn_folder = stored_cnn(tmp_path / "cnn")
    models = ["--model", f"cnn={cnn_folder}", "--adapt-batchnorm", f"cnn-adapted={cnn_folder}"]
    status, out = run(tmp_path, camvid_root, "--frames", "2", "--corruptions", "contrast", *models)
    assert status == 0
    record = json.loads(out.read_text())
    assert record["models"]["cnn-adapted"]["batchnorm_adapted"] is True
    assert record["models"]["cnn"]["batchnorm_adapted"] is False
    # the adapted score is the plain evaluation of the model adapted on those two frames
    frames = robustness.Frames(corruptions.corrupt_frames(robustness.data.camvid(camvid_root, "test"),
                                                          [0, 116], "contrast", 5, 0),
                               robustness.EvalTransform(scale=(240, 180)))
    model = robustness.load_model(cnn_folder)
    adapted = with_batchnorm_statistics_of(model, torch.stack([frames[0][0], frames[1][0]]))
    expected = robustness.evaluate(adapted, frames, 11, torch.device("cpu"))["miou"]
    assert record["results"]["contrast"]["5"]["cnn-adapted"]["miou"] == expected
    # the same name again without adaptation is refused, before any work
    stored = out.read_text()
    capsys.readouterr()
    assert run(tmp_path, camvid_root, "--frames", "2", "--corruptions", "contrast",
               "--model", f"cnn-adapted={cnn_folder}")[0] == 1
    assert "'cnn-adapted' with BatchNorm adaptation" in capsys.readouterr().err
    assert out.read_text() == stored


def test_a_model_added_later_reads_the_cached_frames(tmp_path, camvid_root, monkeypatch):
    """--frames-cache: the second run tests a new model on the stored pixels, making none again,
    and scores exactly what a run without the cache scores."""
    cnn_folder = stored_cnn(tmp_path / "cnn")
    cache = ["--frames-cache", str(tmp_path / "cache")]
    subset = ["--frames", "2", "--corruptions", "contrast"]
    assert run(tmp_path, camvid_root, *subset, *cache)[0] == 0
    (stored,) = (tmp_path / "cache").iterdir()
    assert sorted(path.name for path in stored.iterdir()) == [
        "contrast_1.npy", "contrast_2.npy", "contrast_3.npy", "contrast_4.npy", "contrast_5.npy",
        "settings.json"]

    def refuse(*args):
        raise AssertionError("made the corrupted frames again")

    with monkeypatch.context() as patched:
        patched.setattr(corruptions, "corrupt_frames", refuse)
        models = ["--model", f"segformer-b0={STORED_B0}", "--model", f"cnn={cnn_folder}"]
        assert run(tmp_path, camvid_root, *subset, *cache, *models)[0] == 0
    cached = json.loads((tmp_path / "robustness.json").read_text())["results"]["contrast"]
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    assert run(fresh_dir, camvid_root, *subset, "--model", f"cnn={cnn_folder}")[0] == 0
    fresh = json.loads((fresh_dir / "robustness.json").read_text())["results"]["contrast"]
    assert all(cached[s]["cnn"] == fresh[s]["cnn"] for s in "12345")
