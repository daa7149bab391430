"""Overlapping patch merging (paper Sec. 3.1; book chapter 2).

ViT cuts an image into non-overlapping 16x16 patches. SegFormer instead uses a strided
convolution whose kernel is larger than its stride (K=7, S=4, P=3 for stage 1 and K=3, S=2,
P=1 afterwards), so neighbouring patches share pixels and local continuity survives.
With padding K // 2 the output side is ceil(side / S) for any side, odd ones included.
"""

from torch import Tensor, nn

from .tokens import to_tokens


class OverlapPatchEmbed(nn.Module):
    """Strided conv + LayerNorm: ``(B, C_in, H, W)`` -> tokens
    ``(B, H' * W', C)``, H' = ceil(H / S)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)  # (B, C, H', W')
        height, width = x.shape[2:]
        return self.norm(to_tokens(x)), height, width  # (B, N, C), N = H' * W'
