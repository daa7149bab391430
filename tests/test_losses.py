"""The loss levers (segformer_edu.losses) against their definitions, computed here another way."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segformer_edu.losses import (IGNORE_INDEX, class_weights, enet_weights, median_frequency_weights, ohem_mask,
                                  segmentation_loss)

# 3 images x 3 classes: class 2 only in the last image
PIXELS = np.array([[60, 40, 0], [80, 20, 0], [50, 30, 20]])


def test_enet_weights_follow_one_over_log_of_share():
    shares = PIXELS.sum(0) / PIXELS.sum()  # 190/300, 90/300, 20/300
    expected = [1 / math.log(1.02 + p) for p in shares]
    assert enet_weights(PIXELS) == pytest.approx(expected)
    assert enet_weights(PIXELS.sum(0)) == pytest.approx(expected)  # totals give the same
    assert enet_weights(np.array([[0, 10]]))[0] == pytest.approx(1 / math.log(1.02))  # absent: the largest


def test_median_frequency_counts_only_images_where_the_class_appears():
    # f_k = pixels of k / pixels of the images holding k: class 2 appears in one image of 100 pixels
    frequency = np.array([190 / 300, 90 / 300, 20 / 100])
    expected = np.median(frequency) / frequency
    assert median_frequency_weights(PIXELS) == pytest.approx(expected)
    assert class_weights("median", PIXELS) == pytest.approx(expected)
    with pytest.raises(ValueError, match="per-image"):
        median_frequency_weights(PIXELS.sum(0))
    with pytest.raises(ValueError, match="enet, median"):
        class_weights("inverse", PIXELS)


def test_weighted_loss_is_pytorchs_weighted_mean_over_labelled_pixels():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 8, 8))
    labels[0, :2] = IGNORE_INDEX
    weight = torch.tensor([1.0, 2.0, 5.0])
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    per_pixel = -up.log_softmax(1).gather(1, labels.clamp(max=2)[:, None])[:, 0]
    valid = labels != IGNORE_INDEX
    w = weight[labels.clamp(max=2)] * valid
    torch.testing.assert_close(segmentation_loss(logits, labels, weight=weight), (per_pixel * w).sum() / w.sum())
    plain = segmentation_loss(logits, labels)
    torch.testing.assert_close(plain, per_pixel[valid].mean())
    assert segmentation_loss(logits, labels, label_smoothing=0.1) != plain


def test_ohem_keeps_pixels_under_the_threshold_and_at_least_min_kept():
    torch.manual_seed(0)
    logits, labels = torch.randn(1, 4, 10, 10) * 3, torch.randint(0, 4, (1, 10, 10))
    labels[0, 0] = IGNORE_INDEX
    probability = logits.softmax(1).gather(1, labels.clamp(max=3)[:, None])[0, 0]
    valid = labels[0] != IGNORE_INDEX
    hard = valid & (probability < 0.7)
    assert torch.equal(ohem_mask(logits, labels, thresh=0.7, min_kept=1)[0], hard)
    # more pixels asked for than are hard: the min_kept hardest (and the ones tied with the last) count
    kept = ohem_mask(logits, labels, thresh=0.0, min_kept=50)[0]
    assert kept.sum() == 50 and not (kept & ~valid).any()
    assert probability[kept].max() <= probability[valid & ~kept].min()


def test_ohem_loss_averages_the_kept_pixels_over_all_labelled_pixels():
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    keep = ohem_mask(logits, labels, thresh=0.7, min_kept=5)
    per_pixel = F.cross_entropy(logits, labels, reduction="none")
    expected = (per_pixel * keep).sum() / labels.numel()
    torch.testing.assert_close(segmentation_loss(logits, labels, ohem_thresh=0.7, ohem_min_kept=5), expected)
