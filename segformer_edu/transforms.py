"""The paper's data pipeline: mmseg's training augmentation and test-time resize,
in numpy + torch (book chapter 8).

SegFormer's ADE20K config (``local_configs/_base_/datasets/ade20k_repeat.py`` in
NVlabs/SegFormer) trains with
    Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0)) -> RandomCrop(512x512, cat_max_ratio=0.75)
    -> RandomFlip(0.5) -> PhotoMetricDistortion -> Normalize(ImageNet)
    -> Pad(512x512, image 0, label 255)
and tests with AlignedResize (keep-ratio to (2048, 512), sides rounded up to multiples of 32) of the
image alone: the prediction is resized to the label. Images are resized bilinearly, labels by
nearest neighbour, so a label only ever holds values it had (or 255). Resizing goes through
``F.interpolate`` without antialiasing, which samples as OpenCV's INTER_LINEAR/NEAREST
(mmcv's backend) do. Checked against OpenCV 5.0 on a random 480x360 image: nearest labels identical;
bilinear images and the HSV conversions of the photometric distortion within one level
(of 255; of 180 for hue).
"""

import functools
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # mmseg's (123.675, 116.28, 103.53) / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # mmseg's (58.395, 57.12, 57.375) / 255


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest (w, h) with long side <= max(scale) and
    short side <= min(scale)."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of a contiguous copy when needed: a read-only array
    (np.asarray of a PIL image) is copied, since torch warns on sharing read-only memory."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3), bilinear with half-pixel centres
    (OpenCV INTER_LINEAR)."""
    x = as_tensor(image).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8, channels-last
    resized = F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False)  # (1, 3, h, w)
    return resized[0].permute(1, 2, 0).numpy()


def resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) -> uint8 (h, w) by nearest neighbour: no new values appear at class borders."""
    x = as_tensor(label)[None, None]  # (1, 1, H, W)
    return F.interpolate(x, size=size_hw, mode="nearest")[0, 0].numpy()


@functools.cache
def _normalized_bytes() -> np.ndarray:
    """(256, 3) float32: each byte of each channel, normalised."""
    x = torch.arange(256, dtype=torch.float32)[:, None] / 255  # (256, 1)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return ((x - mean) / std).numpy()


def normalize(image: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float (3, H, W) with ImageNet mean and std,
    as the pretrained encoder expects. Each byte's value is computed once (a frame is a look-up).
    ``channels_last``: the (3, H, W) view of an (H, W, 3) array, the layout models were always fed;
    else three contiguous planes, which a batch stacks without a transposing copy."""
    table = _normalized_bytes()  # (256, 3)
    planes = [table[:, c].take(image[..., c]) for c in range(3)]  # 3 x (H, W) float32
    if channels_last:
        return torch.from_numpy(np.stack(planes, -1)).permute(2, 0, 1)
    return torch.from_numpy(np.stack(planes))


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Normalised float (3, H, W) -> uint8 RGB (H, W, 3) for plotting."""
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    x = image.detach().float().cpu() * std[:, None, None] + mean[:, None, None]
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _as_arrays(image, label) -> tuple[np.ndarray, np.ndarray]:
    """PIL or numpy in; uint8 RGB (H, W, 3) and uint8 label (H, W) out
    (labels hold 0..K-1 and 255)."""
    from .data import as_rgb  # data imports this module

    rgb = as_rgb(image) if isinstance(image, Image.Image) else image
    image = np.array(rgb, dtype=np.uint8)  # a writable copy
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    return image, label.astype(np.uint8)


# ---------------------------------------------------------------------- colour (OpenCV's 8-bit HSV)

# OpenCV's conversions are per pixel; their float32 formulas are evaluated once, for every input
# that matters, into small tables, so that a frame costs a few passes and a look-up rather than a
# dozen full-frame float passes (tests/test_loader_speedups.py checks all 2^24 colours against the
# formulas written out per pixel).

@functools.cache
def _hue_table() -> np.ndarray:
    """(3, 511, 256) uint8: the hue of a pixel whose largest channel is R, G or B (in that order of
    precedence), from the difference of the other two (-255..255, offset by 255) and the chroma."""
    difference = np.arange(-255, 256, dtype=np.float32)[:, None]  # (511, 1)
    chroma = np.arange(256, dtype=np.float32)  # (256,)
    safe = np.maximum(chroma, 1e-6)
    # 60-degree sectors: (g - b) / c after R, 2 + (b - r) / c after G, 4 + (r - g) / c after B
    sector = np.stack([offset + difference / safe for offset in (0, 2, 4)])  # (3, 511, 256)
    hue = np.round(sector * 30) % 180  # 60 degrees per sector, stored halved to fit a byte
    hue[..., 0] = 0  # grey: no hue
    return hue.astype(np.uint8)


@functools.cache
def _saturation_table() -> np.ndarray:
    """(256, 256) uint8: the saturation of (chroma, value)."""
    chroma = np.arange(256, dtype=np.float32)[:, None]
    value = np.arange(256, dtype=np.float32)
    return np.round(255 * chroma / np.maximum(value, 1e-6)).clip(0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 HSV in OpenCV's units
    (hue in degrees / 2, 0..179; S, V 0..255), as mmcv.bgr2hsv."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    value = np.maximum(np.maximum(r, g), b)
    chroma = value - np.minimum(np.minimum(r, g), b)
    r, g, b = r.astype(np.int32), g.astype(np.int32), b.astype(np.int32)
    # the hue table's flat index: (largest channel, difference + 255, chroma), R before G before B
    index = np.where(value == image[..., 0], g - b + 255,
                     np.where(value == image[..., 1], b - r + 255 + 511, r - g + 255 + 2 * 511))
    index = (index << 8) | chroma
    hsv = np.empty_like(image)
    hsv[..., 0] = _hue_table().ravel().take(index)
    hsv[..., 1] = _saturation_table().ravel().take((chroma.astype(np.int32) << 8) | value)
    hsv[..., 2] = value
    return hsv


@functools.cache
def _rgb_factors() -> np.ndarray:
    """(256 * 256, 3) float32: per (hue, saturation), what R, G and B are of the value: 1, p, q or
    t / value of the HSV hexcone (hue 180..255, outside OpenCV's range, wraps as its formula)."""
    hue = np.arange(256, dtype=np.float32)[:, None] / 30  # sector in [0, 8.5)
    saturation = np.arange(256, dtype=np.float32) / 255
    sector = np.floor(hue)
    fraction = hue - sector
    one = np.ones((256, 256), np.float32)
    p = one * (1 - saturation)
    q = 1 - saturation * fraction
    t = 1 - saturation * (1 - fraction)
    index = np.broadcast_to(sector.astype(np.int64) % 6, (256, 256))
    r = np.choose(index, [one, q, p, p, t, one])
    g = np.choose(index, [t, one, one, q, p, p])
    b = np.choose(index, [p, p, t, one, one, q])
    return np.stack([r, g, b], -1).reshape(256 * 256, 3)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV in OpenCV's units -> uint8 RGB, as mmcv.hsv2bgr."""
    index = (hsv[..., 0].astype(np.int32) << 8) | hsv[..., 1]
    rgb = _rgb_factors().take(index, axis=0)  # (..., 3) float32, times the value below
    rgb *= hsv[..., 2:]
    # truncates, as OpenCV's 8-bit conversion
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's PhotoMetricDistortion.convert: scale and shift, clip to 0..255, truncate to uint8;
    on uint8 ``x``, computed for the 256 bytes once and looked up."""
    table = np.arange(256, dtype=np.float32) * alpha + beta
    return np.clip(table, 0, 255).astype(np.uint8).take(x)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                           hue_delta: int = 18) -> np.ndarray:
    """mmseg's PhotoMetricDistortion: each of brightness, contrast, saturation and hue with
    probability 1/2; contrast comes first or last (a coin decides), on uint8 RGB (H, W, 3)."""
    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = rng.integers(2)  # mmseg's mode == 1
    if contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*contrast_range))
    if rng.integers(2):
        hsv = rgb_to_hsv(image)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        image = hsv_to_rgb(hsv)
    if rng.integers(2):
        hsv = rgb_to_hsv(image)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + rng.integers(-hue_delta, hue_delta)) % 180
        image = hsv_to_rgb(hsv)
    if not contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*contrast_range))
    return image


# ----------------------------------------------------------------------------- the two pipelines

def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and numpy's global generators
    from the worker's torch seed.

    Without it, workers forked from one process would share one numpy state and apply the same
    augmentations (recent torch seeds numpy itself; this makes it explicit and version-proof).
    """
    seed = torch.initial_seed() % 2**32  # base_seed + worker_id, drawn by the DataLoader
    np.random.seed(seed)
    random.seed(seed)


class TrainTransform:
    """Random rescale, crop (cat_max_ratio), flip, photometric distortion,
    normalise, pad: the paper's recipe.

    ``scale`` is mmseg's img_scale (long side, short side) before the random ratio; ``crop_size`` is
    (h, w). Randomness: with ``seed`` a private numpy Generator
    (re-seeded from the DataLoader's per-worker seed inside workers, so workers differ); without it
    numpy's global generator, as in mmseg, so ``np.random.seed`` and a saved
    ``np.random.get_state()`` reproduce the augmentations.
    """

    def __init__(self, crop_size=(512, 512), scale=(2048, 512), ratio_range=(0.5, 2.0),
                 cat_max_ratio=0.75, ignore_index=255, flip_prob=0.5, photometric=True, seed=None):
        self.crop_size, self.scale = tuple(crop_size), tuple(scale)
        self.ratio_range, self.cat_max_ratio = tuple(ratio_range), cat_max_ratio
        self.ignore_index, self.flip_prob = ignore_index, flip_prob
        self.photometric, self.seed = photometric, seed
        self._rng, self._worker_seed = None, None

    def _generator(self) -> np.random.Generator:
        worker = get_worker_info()
        if self.seed is None:
            # draws from (and advances) the global state
            return np.random.Generator(np.random.get_bit_generator())
        worker_seed = None if worker is None else worker.seed
        # first call, or first call in a new worker
        if self._rng is None or worker_seed != self._worker_seed:
            seed = self.seed if worker_seed is None else [self.seed, worker_seed]
            self._rng = np.random.default_rng(seed)
            self._worker_seed = worker_seed
        return self._rng

    def random_rescale(self, image, label, rng):
        """mmseg Resize with ratio_range: scale x ratio, ratio ~ U(ratio_range),
        then a keep-ratio rescale."""
        ratio = rng.random() * (self.ratio_range[1] - self.ratio_range[0]) + self.ratio_range[0]
        scale = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        width, height = rescale_size(image.shape[1], image.shape[0], scale)
        return resize_image(image, (height, width)), resize_label(label, (height, width))

    def crop_box(self, shape, rng) -> tuple[int, int, int, int]:
        """A random (top, bottom, left, right) window of crop_size
        (or the whole side where it is shorter)."""
        top = rng.integers(max(shape[0] - self.crop_size[0], 0) + 1)
        left = rng.integers(max(shape[1] - self.crop_size[1], 0) + 1)
        return top, top + self.crop_size[0], left, left + self.crop_size[1]

    def random_crop(self, image, label, rng):
        """mmseg RandomCrop: up to 10 re-draws until no class (ignore excluded)
        fills >= cat_max_ratio of the crop and it holds at least two classes;
        after 10 failures the 11th window is kept as it is."""
        top, bottom, left, right = self.crop_box(label.shape, rng)
        if self.cat_max_ratio < 1:
            for _ in range(10):
                # pixels per label value (one pass; np.unique sorts the crop)
                counts = np.bincount(label[top:bottom, left:right].ravel(), minlength=256)
                counts[self.ignore_index] = 0
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, bottom, left, right = self.crop_box(label.shape, rng)
        return image[top:bottom, left:right], label[top:bottom, left:right]

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        """PIL/uint8 image (H, W, 3) and label (H, W) -> float image (3, h, w) and long label
        (h, w), (h, w) = crop."""
        rng = self._generator()
        image, label = _as_arrays(image, label)
        image, label = self.random_rescale(image, label, rng)
        image, label = self.random_crop(image, label, rng)
        if rng.random() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(image, rng)
        pad_h = max(self.crop_size[0] - label.shape[0], 0)
        pad_w = max(self.crop_size[1] - label.shape[1], 0)
        image = normalize(image, channels_last=False)  # (3, h, w)
        if pad_h or pad_w:  # padded bottom and right
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        return image, torch.from_numpy(label.astype(np.int64))


class EvalTransform:
    """Test time: optionally a keep-ratio resize of the image to ``scale``
    (long, short side), then normalise.

    With a ``scale``, the official SegFormer test pipeline (its ``AlignedResize``) resizes a second
    time so that both sides are multiples of ``size_divisor`` (ADE20K 683x512 -> 704x512). The label
    keeps its size: the prediction is resized to it, so the metric is computed at
    the label's full resolution.
    """

    def __init__(self, scale=None, size_divisor: int | None = 32):
        self.scale = tuple(scale) if scale else None
        self.size_divisor = size_divisor

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = _as_arrays(image, label)
        if self.scale:
            width, height = rescale_size(image.shape[1], image.shape[0], self.scale)
            image = resize_image(image, (height, width))
            if self.size_divisor:
                divisor = self.size_divisor
                # rounded up
                aligned = (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
                if aligned != (height, width):
                    image = resize_image(image, aligned)
        return normalize(image), torch.from_numpy(label.astype(np.int64))


def eval_input_size(height: int, width: int, scale=None, size_divisor: int = 32) -> tuple[int, int]:
    """The (height, width) that ``EvalTransform(scale)`` gives an image of (height, width), without
    resizing it: what the model will see."""
    if not scale:
        return height, width
    width, height = rescale_size(width, height, scale)
    return -(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor


def preprocess(image, scale: tuple[int, int] | None = None, config=None) -> torch.Tensor:
    """An RGB image (a PIL image, or an array (H, W, 3) uint8) -> the model's input (1, 3, h, w)
    float32, as ``predict`` and ``train.evaluate`` feed it: resized to ``scale`` (long, short side;
    sides then rounded up to multiples of 32) if given, ImageNet-normalised. With a model's
    ``config``, an image too small for it is refused with a clear message, not a shape error inside
    the model."""
    from .data import as_rgb  # data imports this module
    from .encoder import check_images

    if isinstance(image, Image.Image):
        image = as_rgb(image)  # as displayed: EXIF orientation, 16-bit by its range
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB image (H, W, 3) uint8, got {image.shape} {image.dtype}")
    tensor, _ = EvalTransform(scale=scale)(image, np.zeros(image.shape[:2], np.uint8))  # (3, h, w)
    if config is not None:
        check_images(tensor[None], config)
    return tensor[None]
