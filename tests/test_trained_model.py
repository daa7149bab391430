"""The CamVid model trained on a CPU and stored in book/results/camvid_b0_cpu (book chapters 1, 3, 7, 8):
both loaders give the same logits, and its stored test mIoU is what a fresh evaluation gives."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segformer_edu import SegFormer
from segformer_edu.data import CAMVID_CLASSES
from segformer_edu.datasets import build_split
from segformer_edu.evaluation import evaluate
from segformer_edu.train import TrainConfig
from segformer_edu.transforms import normalize

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "book" / "results" / "camvid_b0_cpu"
FRAME = REPO / "book" / "assets" / "camvid_0001TP_006690.jpg"


@pytest.fixture(scope="module")
def model():
    return SegFormer.from_pretrained(STORED).eval()


def test_stored_weights_are_small_and_labelled():
    assert (STORED / "model.safetensors").stat().st_size < 8 * 2**20
    config = json.loads((STORED / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(11)] == list(CAMVID_CLASSES)


def test_both_loaders_give_the_same_logits_on_a_real_frame(model):
    transformers = pytest.importorskip("transformers")
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(STORED).eval()
    images = normalize(np.asarray(Image.open(FRAME).convert("RGB")))[None]  # (1, 3, 360, 480)
    with torch.no_grad():
        ours, theirs = model(images), hf(pixel_values=images).logits
    assert ours.shape == theirs.shape == (1, 11, 90, 120)
    assert (ours - theirs).abs().max().item() < 1e-3  # LayerNorm eps 1e-6 vs transformers' 1e-5 on trained weights
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_stored_test_miou_is_what_a_fresh_evaluation_gives(model, camvid_root):
    stored = json.loads((STORED / "test_metrics.json").read_text())
    cfg = TrainConfig(dataset="camvid", data_root=str(camvid_root),
                      val_scale=tuple(stored["eval_scale"]) if stored["eval_scale"] else None)
    test_set, names = build_split(cfg, "test")
    assert len(test_set) == stored["frames"] == 233
    fresh = evaluate(model, test_set, len(names), torch.device("cpu"), names=names)
    # equal up to a few pixels whose argmax may flip with another thread count; another model, protocol or split
    # would move the numbers by far more
    assert fresh["miou"] == pytest.approx(stored["miou"], abs=1e-4)
    assert fresh["iou"] == pytest.approx(stored["iou"], abs=1e-4)
