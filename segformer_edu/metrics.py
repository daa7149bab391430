"""Semantic-segmentation metrics from a confusion matrix: IoU per class, mIoU,
pixel accuracy (book chapter 8).

As mmseg's ``mean_iou``: pixels whose label is the ignore index do not count; a class that appears
neither in the labels nor in the predictions has IoU NaN and is left out of the mean (``nanmean``).
"""

import math

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class t predicted as p,
    summed over every ``update``."""

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 device: torch.device | str | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        # (K, K)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are class indices of the same shape, any shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                             "shape")
        keep = target != self.ignore_index
        pred = pred[keep].to(self.matrix.device, torch.int64)
        target = target[keep].to(self.matrix.device, torch.int64)
        k = self.num_classes
        if target.numel() and (min(target.min(), pred.min()) < 0
                               or max(target.max(), pred.max()) >= k):
            raise ValueError(f"class indices must lie in 0..{k - 1} (or be the ignore index "
                             f"{self.ignore_index})")
        # one bincount over pair codes t * K + p fills the whole matrix at once
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def reduce_(self) -> "ConfusionMatrix":
        """Sum the matrices of all ranks (in place) when torch.distributed runs;
        counts add exactly."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict:
        """mIoU, IoU per class (NaN where a class is absent), pixel accuracy, and the accuracy of
        each class (its recall: the share of its pixels predicted as it,
        which ENet and SegNet tabulate) and their mean."""
        matrix = self.matrix.double().cpu()
        true_positive = matrix.diag()  # (K,)
        labelled = matrix.sum(1)  # pixels of each true class (K,)
        predicted = matrix.sum(0)  # pixels predicted as each class (K,)
        # 0 / 0 = NaN: class absent from both
        iou = true_positive / (labelled + predicted - true_positive)
        class_acc = true_positive / labelled  # NaN for classes absent from the labels
        total = matrix.sum()
        return {
            "miou": float(iou.nanmean()),
            "iou": iou.tolist(),
            "acc": float(true_positive.sum() / total) if total else math.nan,
            "mean_acc": float(class_acc.nanmean()),
            "class_acc": class_acc.tolist(),
        }
