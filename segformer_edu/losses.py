"""The training loss and the options that reweight it for rare, thin classes (book chapter 8).

mIoU averages the classes, so a class of 0.3 % of the pixels (CamVid's Pole, SignSymbol) counts as
much as Road's 30 %. Plain cross-entropy averages the pixels instead, and barely hears the rare
classes. The options:

* ``class_weights``: a weight per class, from the training labels' pixel counts. ``"enet"`` is
  ENet's w = 1 / ln(1.02 + p) (Paszke et al., 2016); ``"median"`` is median-frequency balancing,
  w = median(f) / f with f = pixels of the class / pixels of the images where it appears (Eigen &
  Fergus, 2015; SegNet's CamVid weights).
* ``ohem``: online hard example mining as mmseg's ``OHEMPixelSampler``: only the pixels whose
  predicted probability of the true class is under ``thresh`` are kept, and at least ``min_kept``
  per image.
* ``label_smoothing``: PyTorch's cross-entropy target smoothing.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import IGNORE_INDEX  # padding and CamVid's void

CLASS_WEIGHTINGS = ("enet", "median")


def enet_weights(pixels: np.ndarray, c: float = 1.02) -> np.ndarray:
    """ENet's class weights 1 / ln(c + p_k), p_k the share of class k among the labelled pixels.

    ``pixels``: (N, K) pixels of each class in each training image (or (K,) totals); returns (K,).
    Weights lie in (0, 1 / ln(c)]: about 50 for a class that never appears, 1.4 for one that
    covers everything."""
    totals = np.asarray(pixels, dtype=np.float64).reshape(-1, np.shape(pixels)[-1]).sum(0)
    return 1.0 / np.log(c + totals / totals.sum())


def median_frequency_weights(pixels: np.ndarray) -> np.ndarray:
    """Median-frequency balancing: median(f) / f_k, with f_k = pixels of class k / pixels of the
    images that hold k.

    ``pixels``: (N, K) pixels of each class in each training image; returns (K,). A class absent
    from every image gets the largest weight of the others (it has no frequency to invert)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 2:
        raise ValueError(f"median-frequency weights need per-image pixel counts (N, K), got "
                         f"shape {pixels.shape}")
    present = pixels > 0  # (N, K)
    image_pixels = pixels.sum(1, keepdims=True)  # labelled pixels of each image, (N, 1)
    frequency = pixels.sum(0) / np.maximum((present * image_pixels).sum(0), 1)  # (K,)
    seen = frequency > 0
    weights = np.full(frequency.shape, np.nan)
    weights[seen] = np.median(frequency[seen]) / frequency[seen]
    weights[~seen] = weights[seen].max() if seen.any() else 1.0
    return weights


def class_weights(method: str, pixels: np.ndarray) -> np.ndarray:
    """``method`` ("enet" or "median") applied to per-image class pixels (N, K): weights (K,)."""
    if method == "enet":
        return enet_weights(pixels)
    if method == "median":
        return median_frequency_weights(pixels)
    raise ValueError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTINGS)}, "
                     f"not {method!r}")


@torch.no_grad()
def ohem_mask(logits: Tensor, labels: Tensor, thresh: float = 0.7,
              min_kept: int = 100_000) -> Tensor:
    """mmseg's ``OHEMPixelSampler`` (with ``thresh``): which pixels count, (B, H, W) bool.

    A labelled pixel is kept when the softmax probability of its true class is below
    max(thresh, the probability of the (min_kept x B)-th hardest labelled pixel): the hard pixels,
    and never fewer than ``min_kept`` per image. ``logits`` (B, K, H, W) at the labels'
    resolution, ``labels`` (B, H, W)."""
    valid = labels != IGNORE_INDEX
    target = labels.masked_fill(~valid, 0)[:, None]  # (B, 1, H, W)
    probability = logits.float().softmax(1).gather(1, target)[:, 0]  # (B, H, W)
    valid_probability = probability[valid].sort().values
    if valid_probability.numel() == 0:
        return valid
    kept = min(min_kept * labels.shape[0], valid_probability.numel() - 1)
    threshold = max(float(valid_probability[kept]), thresh)
    return valid & (probability < threshold)


def segmentation_loss(logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                      ohem_thresh: float | None = None, ohem_min_kept: int = 100_000,
                      label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy on logits (B, K, H/4, W/4) upsampled bilinearly to the labels (B, H, W), as
    mmseg.

    ``weight`` (K,) weights the classes (PyTorch's weighted mean: the sum over pixels divided by
    the sum of their classes' weights); ``ohem_thresh`` keeps the hard pixels only
    (``ohem_mask``), averaged over all the labelled pixels as mmseg does; ``label_smoothing`` as
    ``F.cross_entropy``. All off: plain cross-entropy.
    """
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear",
                           align_corners=False)
    if weight is not None:
        weight = weight.to(logits.device)
    if ohem_thresh is None:
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX,
                               label_smoothing=label_smoothing)
    keep = ohem_mask(logits, labels, ohem_thresh, ohem_min_kept)  # (B, H, W)
    per_pixel = F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX,
                                label_smoothing=label_smoothing, reduction="none")  # (B, H, W)
    return (per_pixel * keep).sum() / (labels != IGNORE_INDEX).sum().clamp(min=1)
