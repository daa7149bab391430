"""The datasets by name (segformer_edu.datasets.DATASETS): one entry gives a run its splits, classes and colours."""

import pytest

from segformer_edu import data, datasets
from segformer_edu.palette import CAMVID_PALETTE, ade20k_palette
from segformer_edu.train import TrainConfig


def test_each_named_dataset_has_one_entry():
    assert set(datasets.DATASETS) == {"camvid", "ade20k", "folder"}
    assert datasets.DATASETS["camvid"].classes == data.CAMVID_CLASSES
    assert datasets.DATASETS["ade20k"].classes == data.ADE20K_CLASSES
    assert datasets.DATASETS["folder"].classes is None  # the folder names its own (classes.json)


def test_an_unknown_dataset_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown --dataset 'voc': one of camvid, ade20k, folder"):
        datasets.build_split(TrainConfig(dataset="voc"), "train")


def test_the_palette_comes_from_the_entry_when_the_dataset_has_none():
    """ADE20K's colours for an ADE20K run (this raised AttributeError before the registry)."""
    unpainted = object()
    assert datasets.palette_of(unpainted, "camvid") == list(CAMVID_PALETTE)
    assert datasets.palette_of(unpainted, "ade20k") == list(ade20k_palette(150))


def test_camvid_splits_come_with_its_classes(tiny_dataset):
    split, names = datasets.build_split(TrainConfig(dataset="camvid", data_root=str(tiny_dataset)), "val")
    assert names == list(data.CAMVID_CLASSES) and len(split) == 3


def test_a_stored_camvid_model_is_drawn_in_camvid_colours(tmp_path):
    """A folder keeps only its class names: predict finds CamVid's colours by them (it drew ADE20K's before)."""
    import torch

    from segformer_edu import SegFormer, predict

    SegFormer.from_config("b0", num_classes=11).save_pretrained(tmp_path / "m", class_names=list(data.CAMVID_CLASSES))
    _, info = predict.load_model(str(tmp_path / "m"), torch.device("cpu"))
    assert info["palette"] == list(CAMVID_PALETTE) and info["names"] == list(data.CAMVID_CLASSES)
    assert datasets.entry_of(None, ["a", "b"]) is None



@pytest.mark.parametrize("photometric", [True, False])
def test_no_photometric_trains_on_the_frames_own_colours(tiny_dataset, photometric):
    """--no-photometric (chapter 11's ablation): the whole frame, unscaled and unflipped, keeps its colours."""
    import numpy as np

    from segformer_edu.transforms import normalize

    cfg = TrainConfig(dataset="camvid", data_root=str(tiny_dataset), photometric=photometric)
    split, _ = datasets.build_split(cfg, "train")
    image, _ = split.load(0)
    h, w = np.asarray(image).shape[:2]
    transform = split.transform
    transform.crop_size, transform.scale, transform.ratio_range = (h, w), (max(h, w), min(h, w)), (1.0, 1.0)
    transform.flip_prob, transform.cat_max_ratio = 0.0, 1.0
    unchanged = []
    for seed in range(4):
        np.random.seed(seed)
        x, _ = split[0]
        unchanged.append(np.allclose(x.numpy(), normalize(np.asarray(image), channels_last=False).numpy()))
    assert all(unchanged) is not photometric and any(unchanged) is not photometric
