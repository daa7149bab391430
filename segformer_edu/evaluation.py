"""Scoring a model on a dataset: mIoU, per-class IoU and pixel accuracy (chapters 8, 10, 11).

``evaluate`` is what a training run validates with, what ``--test`` reports, and what the
deployment and robustness scripts measure.
"""

import time

import torch
from torch import nn

from .data import IGNORE_INDEX
from .inference import predict_labels


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, device: torch.device,
             dtype: torch.dtype | None = None, rank: int = 0, world: int = 1,
             names: list[str] | None = None, protocol: dict | None = None) -> dict:
    """mIoU, per-class IoU and pixel accuracy over whole images; predictions resized to the label
    size.

    ``protocol``: keyword arguments of ``inference.segment_scores`` (sliding window, scales, flip)
    instead of one pass. Each rank takes every world-th image; the confusion matrices are summed
    over ranks before computing. ``model_seconds`` is the time spent in the model (and protocol),
    without reading the data.
    """
    from .metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    model_seconds = 0.0
    for index in range(rank, len(dataset), world):
        image, label = dataset[index]  # (3, h, w), (H, W)
        start = time.perf_counter()
        prediction = predict_labels(model, image[None].to(device), label.shape[-2:], dtype,
                                    protocol)[0]  # (H, W)
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
