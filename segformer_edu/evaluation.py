"""Scoring a model on a dataset: mIoU, per-class IoU and pixel accuracy (chapters 8, 10, 11).

``evaluate`` is what a training run validates with, what ``--test`` reports, and what the
deployment and robustness scripts measure.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE_INDEX


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, device: torch.device,
             dtype: torch.dtype | None = None, rank: int = 0, world: int = 1,
             names: list[str] | None = None, protocol: dict | None = None) -> dict:
    """mIoU, per-class IoU and pixel accuracy over whole images; predictions resized to the label
    size.

    ``protocol``: keyword arguments of ``inference.segment`` (sliding window, scales, flip) instead
    of one pass. Each rank takes every world-th image; the confusion matrices are summed over ranks
    before computing. ``model_seconds`` is the time spent in the model (and protocol), without
    reading the data.
    """
    from .inference import segment
    from .metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    model_seconds = 0.0
    for index in range(rank, len(dataset), world):
        image, label = dataset[index]  # (3, h, w), (H, W)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if protocol is None:
                scores = model(image[None].to(device))  # (1, K, h/4, w/4)
            else:
                scores = segment(model, image[None].to(device), **protocol)  # (1, K, h, w)
        scores = F.interpolate(scores.float(), size=label.shape[-2:], mode="bilinear",
                               align_corners=False)
        prediction = scores.argmax(1)[0]
        model_seconds += time.perf_counter() - start
        matrix.update(prediction, label.to(device))
    if world > 1:
        matrix.reduce_()
    model.train(was_training)
    metrics = matrix.compute()
    metrics["iou"] = [float(x) for x in metrics["iou"]]
    metrics["model_seconds"] = model_seconds
    if names:
        metrics["classes"] = names
    return metrics
