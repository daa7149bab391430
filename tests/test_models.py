"""One way to load any model (segformer_edu.load) and one way from images to class indices (inference.predict_labels),
which SegFormer, the CNN, predict, the book's assets, evaluate and the prediction grids all take."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segformer_edu
from segformer_edu import SegFormer, assets, cnn, inference, plots, predict
from segformer_edu.evaluation import evaluate
from segformer_edu.inference import predict_labels

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["road", "vehicle", "person", "other"]


@pytest.fixture
def small_cnn() -> cnn.DeepLabV3Plus:
    torch.manual_seed(0)
    return cnn.DeepLabV3Plus.from_config(num_classes=4).eval()


@pytest.fixture
def small_segformer() -> SegFormer:
    torch.manual_seed(0)
    return SegFormer.from_config("b0", num_classes=4).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_load_returns_the_cnn_from_its_folder(tmp_path, small_cnn):
    small_cnn.save_pretrained(tmp_path / "cnn", class_names=NAMES)
    model = segformer_edu.load(tmp_path / "cnn")
    assert isinstance(model, cnn.DeepLabV3Plus) and not model.training
    assert same_weights(model, small_cnn) and model.class_names == NAMES


def test_load_returns_segformer_from_its_folder(tmp_path, small_segformer):
    small_segformer.save_pretrained(tmp_path / "segformer", class_names=NAMES)
    model = segformer_edu.load(tmp_path / "segformer")
    assert isinstance(model, SegFormer) and same_weights(model, small_segformer)
    assert model.class_names == NAMES


def test_load_returns_the_cnn_from_a_training_checkpoint(tmp_path, small_cnn):
    """A run's folder of the CNN (its best.pt, as train writes it) loads as the CNN, its averaged weights first."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {k: torch.zeros_like(v) for k, v in small_cnn.state_dict().items()},
                "ema": small_cnn.state_dict(), "config": {"model": cnn.NAME, "dataset": "camvid", "val_scale": None},
                "classes": NAMES, "palette": [[0, 0, 0]] * 4}, run / "best.pt")
    model, info = predict.load_model(str(run), torch.device("cpu"))
    assert isinstance(model, cnn.DeepLabV3Plus) and same_weights(model, small_cnn)
    assert info["names"] == NAMES


def test_predict_is_one_implementation_for_both_models(small_cnn, small_segformer):
    assert cnn.DeepLabV3Plus.predict is SegFormer.predict is inference.Segmenter.predict
    images = torch.randn(1, 3, 64, 96)
    for model in (small_cnn, small_segformer):
        assert torch.equal(model.predict(images), predict_labels(model, images))
    with pytest.raises(ValueError, match="at least"):
        small_segformer.predict(torch.randn(1, 3, 16, 16))


def test_every_image_to_mask_path_goes_through_predict_labels(monkeypatch, small_segformer):
    """predict's mask, the book's segment_frame, evaluate and the prediction grid call the one function, and
    give its class indices."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return predict_labels(*args, **kwargs)

    frame = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = predict.segment_image(small_segformer, frame)
    assert mask.dtype == np.uint8 and mask.shape == (60, 80)
    images = segformer_edu.preprocess(frame)
    assert np.array_equal(mask, predict_labels(small_segformer, images, (60, 80))[0].numpy())
    monkeypatch.setattr(inference, "predict_labels", counted)  # assets imports it when called
    monkeypatch.setattr(predict, "predict_labels", counted)
    monkeypatch.setattr("segformer_edu.evaluation.predict_labels", counted)
    predict.segment_image(small_segformer, frame)
    assets.segment_frame(small_segformer, frame, scale=None)
    evaluate(small_segformer, [(images[0], torch.zeros(60, 80, dtype=torch.long))], 4, torch.device("cpu"))
    assert len(calls) == 3


def test_the_prediction_grid_shows_what_evaluate_scores(tmp_path, monkeypatch, small_segformer):
    """The grid's prediction is predict_labels' at the label's size, in eval mode, and the model's mode is kept."""
    seen = []

    def recorded(model, images, size=None, *args, **kwargs):
        seen.append((model.training, tuple(size)))
        return predict_labels(model, images, size, *args, **kwargs)

    monkeypatch.setattr(inference, "predict_labels", recorded)  # plots imports it when called
    label = torch.zeros(50, 70, dtype=torch.long)
    small_segformer.train()
    plots.save_prediction_grid(small_segformer, [(torch.randn(3, 64, 96), label)], "camvid", tmp_path / "p.png",
                               count=1)
    assert seen == [(False, (50, 70))] and small_segformer.training
    assert (tmp_path / "p.png").exists()


def test_predict_command_line_loads_the_stored_cnn(tmp_path):
    """python -m segformer_edu.predict --model book/results/camvid_cnn_cpu: the stored CNN segments a frame."""
    out = tmp_path / "out"
    frame = ROOT / "book" / assets.FRAME
    assert predict.main(["--model", str(ROOT / "book" / assets.TRAINED_CAMVID_CNN), "--images", str(frame),
                         "--out", str(out), "--no-progress"]) == 0
    mask = np.asarray(Image.open(out / "masks" / f"{frame.stem}.png"))
    assert mask.shape == (360, 480) and mask.max() < 11
