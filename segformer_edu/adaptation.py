"""Test-time BatchNorm adaptation (chapter 11): re-estimating a trained model's BatchNorm statistics
on the frames it is tested on, with no labels and no training (Schneider et al., "Improving
robustness against common corruptions by covariate shift adaptation", NeurIPS 2020).

A BatchNorm layer normalises with the mean and variance it kept while training, so a corruption
that shifts the features (fog lowers the contrast, noise raises the variance) reaches the next
layer unnormalised. A LayerNorm (SegFormer's) computes its statistics from each token at test time
too. ``with_batchnorm_statistics_of`` gives the BatchNorm model that advantage: its layers'
statistics become those of the test frames ("full adaptation", the paper's N = infinity).
"""

import copy

import torch
from torch import Tensor, nn


@torch.no_grad()
def with_batchnorm_statistics_of(model: nn.Module, images: Tensor, batch_size: int = 8
                                 ) -> nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm layers normalise with the mean and variance
    of ``images`` (N, 3, H, W), averaged over batches of ``batch_size`` (at least 2: a pooled
    1x1 map has one value per channel in a batch of one). ``model`` is not changed."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    adapted = copy.deepcopy(model).eval()
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer to adapt")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches, not a moving one
        norm.train()  # only the BatchNorms: dropout and the rest stay in eval mode
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        if len(batch) > 1:  # a last lone frame would fail in the pooled branch; it is left out
            adapted(batch)
    return adapted.eval()
