"""The decoder's two orders (decoder.py, chapter 9): fusing at each stage's resolution before upsampling
computes the paper's function, forward and backward, in float32 and under bf16 autocast."""

import copy

import pytest
import torch

from segformer_edu import SegFormer
from segformer_edu.flops import count_macs

SIZE = (2, 3, 97, 130)  # not multiples of 32: every upsampling is by an uneven factor


def pair(variant: str = "b0", num_classes: int = 11) -> tuple[SegFormer, SegFormer]:
    """The same weights (BatchNorm statistics perturbed), in the paper's order and fused first."""
    torch.manual_seed(0)
    paper = SegFormer.from_config(variant, num_classes=num_classes)
    with torch.no_grad():
        paper.decoder.fuse[1].running_mean.normal_()
        paper.decoder.fuse[1].running_var.uniform_(0.5, 1.5)
    fused = copy.deepcopy(paper)
    fused.decoder.fuse_first = True
    return paper, fused


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_the_same_logits_in_eval_mode(variant):
    paper, fused = (model.eval() for model in pair(variant))
    images = torch.randn(SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, logits = paper(images), fused(images)
    assert logits.shape == expected.shape == (2, 11, 25, 33)
    assert (logits - expected).abs().max() < 1e-4 * expected.abs().max()


def test_the_same_gradients_and_batchnorm_statistics_in_training():
    paper, fused = pair()
    images = torch.randn(SIZE, generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (paper, fused):
        model.train()
        torch.manual_seed(2)  # the same dropout and stochastic depth draws
        model(images).square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    scale = max(g.abs().max() for g in grads[0].values())  # parameters whose gradient cancels to ~0
    for name, expected in grads[0].items():  # are held to the largest gradient's rounding
        assert (grads[1][name] - expected).norm() <= 1e-4 * expected.norm() + 1e-6 * scale, name
    for stat in ("running_mean", "running_var"):
        assert torch.allclose(getattr(fused.decoder.fuse[1], stat), getattr(paper.decoder.fuse[1], stat),
                              rtol=1e-4, atol=1e-6)


def test_the_same_logits_under_bf16_autocast_to_bf16_rounding():
    paper, fused = (model.eval() for model in pair())
    images = torch.randn(SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, logits = paper(images).float(), fused(images).float()
    assert (logits - expected).abs().max() < 0.05 * expected.abs().max()


def test_the_counted_macs_are_the_papers_order():
    """The package's counter (chapter 9) counts the paper's decoder, whichever order runs."""
    paper, fused = (model.eval() for model in pair(num_classes=150))
    assert count_macs(fused, 512, 512) == count_macs(paper, 512, 512)
