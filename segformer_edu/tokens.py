"""Moving between the two views of a feature map that SegFormer uses everywhere.

Transformers work on token sequences ``(B, N, C)``; convolutions and resizing work on
maps ``(B, C, H, W)``. SegFormer switches between them in every block (Mix-FFN's depthwise
conv, the attention's spatial reduction, each stage's end), so the switch must be cheap.

A contiguous ``(B, N, C)`` tensor *is* a ``(B, C, H, W)`` map in channels-last memory
order, so both directions below are views, never copies (chapter 1 measures why this
matters; the popular implementation copies with ``rearrange`` at every switch).
"""

from torch import Tensor


def to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, H, W)`` map
    (a channels-last view when tokens are contiguous)."""
    batch, _, channels = tokens.shape
    # (B, H, W, C) then permute: the strides are exactly channels-last ones, so conv, interpolate
    # and cat recognise the format and keep it instead of copying back to (B, C, H, W) order
    return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def to_tokens(feature_map: Tensor) -> Tensor:
    """``(B, C, H, W)`` map -> ``(B, H*W, C)`` tokens, row-major over (H, W) as in the paper."""
    return feature_map.flatten(2).transpose(1, 2)
