"""The loader's faster colour conversions and crop search compute what the per-pixel formulas did: the same
bytes for every input, so the recipe's augmentations are unchanged (the same output for the same seed)."""

import numpy as np
import pytest
import torch

from segformer_edu.transforms import (TrainTransform, _convert, hsv_to_rgb, normalize, photometric_distortion,
                                      rgb_to_hsv)


# ------------------------------------------------------------------ the formulas as written before, per pixel

def reference_rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    chroma = value - rgb.min(-1)
    safe = np.maximum(chroma, 1e-6)
    sector = np.select([chroma == 0, value == r, value == g],
                       [0, (g - b) / safe, 2 + (b - r) / safe], 4 + (r - g) / safe)
    hue = np.round(sector * 30) % 180
    saturation = np.round(255 * chroma / np.maximum(value, 1e-6))
    return np.stack([hue, saturation, value], -1).astype(np.uint8)


def reference_hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    hue = hsv[..., 0].astype(np.float32) / 30
    saturation, value = hsv[..., 1].astype(np.float32) / 255, hsv[..., 2].astype(np.float32)
    sector = np.floor(hue)
    fraction = hue - sector
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    index = sector.astype(np.int64) % 6
    r = np.choose(index, [value, q, p, p, t, value])
    g = np.choose(index, [t, value, value, q, p, p])
    b = np.choose(index, [p, p, t, value, value, q])
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def every_triple(first: int) -> np.ndarray:
    """All 65,536 byte triples (first, y, z), as an image (256, 256, 3)."""
    y, z = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return np.stack([np.full_like(y, first), y, z], -1).astype(np.uint8)


def test_rgb_to_hsv_gives_the_formulas_bytes_for_all_2_to_the_24_colours():
    for red in range(256):
        colours = every_triple(red)[..., [1, 0, 2]]  # (g, r, b) orders too: every colour once per red
        assert np.array_equal(rgb_to_hsv(colours), reference_rgb_to_hsv(colours)), red


def test_hsv_to_rgb_gives_the_formulas_bytes_for_every_hsv_byte_triple():
    for hue in range(256):  # OpenCV's hues stop at 179; the bytes above wrap as the formula does
        hsv = every_triple(hue)
        assert np.array_equal(hsv_to_rgb(hsv), reference_hsv_to_rgb(hsv)), hue


def reference_photometric_distortion(image, rng, brightness_delta=32, contrast_range=(0.5, 1.5),
                                     saturation_range=(0.5, 1.5), hue_delta=18):
    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.integers(2):
        image = convert(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = rng.integers(2)
    if contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(*contrast_range))
    if rng.integers(2):
        hsv = reference_rgb_to_hsv(image)
        hsv[..., 1] = convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        image = reference_hsv_to_rgb(hsv)
    if rng.integers(2):
        hsv = reference_rgb_to_hsv(image)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + rng.integers(-hue_delta, hue_delta)) % 180
        image = reference_hsv_to_rgb(hsv)
    if not contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(*contrast_range))
    return image


@pytest.mark.parametrize("seed", range(16))  # 16 seeds: every branch of the distortion, taken and not
def test_photometric_distortion_is_unchanged_for_a_seed(seed):
    image = np.random.default_rng(100 + seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    fast = photometric_distortion(image, np.random.default_rng(seed))
    assert np.array_equal(fast, reference_photometric_distortion(image, np.random.default_rng(seed)))


def reference_crop(transform, label, rng):
    """mmseg's RandomCrop search as it was written, with np.unique."""
    top, bottom, left, right = transform.crop_box(label.shape, rng)
    for _ in range(10):
        values, counts = np.unique(label[top:bottom, left:right], return_counts=True)
        counts = counts[values != transform.ignore_index]
        if len(counts) > 1 and counts.max() / counts.sum() < transform.cat_max_ratio:
            break
        top, bottom, left, right = transform.crop_box(label.shape, rng)
    return top, left


@pytest.mark.parametrize("seed", range(20))
def test_the_crop_search_picks_the_same_window(seed):
    rng = np.random.default_rng(seed)
    label = np.zeros((90, 120), np.uint8)  # mostly class 0, so that many windows fail the 0.75 rule
    label[rng.integers(90):, rng.integers(120):] = rng.integers(1, 4)
    label[: rng.integers(30)] = 255
    transform = TrainTransform(crop_size=(40, 50), cat_max_ratio=0.75)
    marker = np.arange(90 * 120).reshape(90, 120)  # the crop's top-left corner can be read back from it
    crop, _ = transform.random_crop(marker, label, np.random.default_rng(seed))
    assert divmod(int(crop[0, 0]), 120) == reference_crop(transform, label, np.random.default_rng(seed))


def reference_normalize(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (x - mean[:, None, None]) / std[:, None, None]


def test_normalize_gives_the_formulas_floats_for_every_byte_of_every_channel():
    image = every_triple(0)  # channels 1 and 2 take every byte; then rolled so that channel 0 does too
    for shift in range(3):
        shifted = np.roll(image, shift, axis=-1)
        assert torch.equal(normalize(shifted), reference_normalize(shifted))


def test_convert_gives_the_formulas_bytes():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for alpha, beta in ((1.0, 17.3), (1.0, -31.9), (0.61, 0.0), (1.47, 0.0)):
        expected = np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
        assert np.array_equal(_convert(values, alpha, beta), expected)


def test_normalize_keeps_the_memory_layout_models_were_fed():
    image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    assert normalize(image).stride() == reference_normalize(image).stride()  # channels-last, as before
    assert torch.equal(normalize(image, channels_last=False), reference_normalize(image))
    assert normalize(image, channels_last=False).is_contiguous()  # what a batch stacks without a transpose
