"""Gradient-based effective receptive fields
(Luo et al., NeurIPS 2016; paper Fig. 3; book chapter 7).

The theoretical receptive field of a unit is every input pixel that *can* change it. The
effective receptive field (ERF) is how much each pixel *does* change it: backpropagate a
signal placed at the centre of a feature map, take |gradient| at the input, average over
images. SegFormer's Figure 3 compares these maps for the four encoder stages and the decoder
head of a trained B2.
"""

import torch
from torch import Tensor


def effective_receptive_field(feature_fn, images: Tensor, direction: Tensor | None = None,
                              normalise: bool = True) -> Tensor:
    """ERF of the centre unit of ``feature_fn(images)``: an (H, W) map that sums to 1.

    ``feature_fn`` maps images (B, 3, H, W) to a feature map (B, C, h, w); call it in eval mode so
    that BatchNorm and dropout do not mix the images of the batch. The signal backpropagated
    from the centre unit (h // 2, w // 2) is ``direction`` over its C channels: ones (Luo et al.:
    the sum over channels) by default. ``normalise=False`` returns the raw mean |gradient|, which
    shows when there is (almost) no gradient to normalise.
    """
    images = images.detach().clone().requires_grad_(True)
    features = feature_fn(images)  # (B, C, h, w)
    centre = features[:, :, features.shape[2] // 2, features.shape[3] // 2]  # (B, C)
    if direction is None:
        direction = torch.ones(centre.shape[1], dtype=centre.dtype, device=centre.device)
    # images are independent in eval mode, so one backward of the batch sum
    # gives every image's gradient
    (gradient,) = torch.autograd.grad((centre @ direction).sum(), images)  # (B, 3, H, W)
    # (H, W): |grad| over colour channels, mean over images
    erf = gradient.abs().sum(dim=1).mean(dim=0)
    if not normalise:
        return erf
    return erf / erf.sum().clamp_min(torch.finfo(erf.dtype).tiny)


def mass_radius(erf: Tensor, fraction: float, centre: tuple[float, float] | None = None) -> float:
    """Smallest Euclidean radius (in input pixels) around ``centre`` holding
    ``fraction`` of the ERF's mass.

    ``centre`` defaults to the ERF's centre of mass.
    """
    height, width = erf.shape
    rows = torch.arange(height, dtype=erf.dtype, device=erf.device)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=erf.dtype, device=erf.device)[None, :].expand(height, width)
    mass = erf / erf.sum()
    if centre is None:
        centre = ((mass * rows).sum().item(), (mass * cols).sum().item())
    distance = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2).sqrt().flatten()
    order = distance.argsort()
    inside = mass.flatten()[order].cumsum(0)  # mass within the k nearest pixels
    target = torch.tensor(fraction, dtype=inside.dtype, device=inside.device)
    first = int(torch.searchsorted(inside, target))
    return distance[order][min(first, distance.numel() - 1)].item()
