"""Efficient self-attention with sequence reduction (paper Sec. 3.1, Eq. 1-2; book chapter 3).

Plain self-attention costs O(N^2) for N tokens, too much at 1/4 resolution. SegFormer keeps
all N queries but computes keys and values from a shorter sequence: a conv with kernel =
stride = ``sr_ratio`` shrinks the map by ``sr_ratio`` on each side, so the sequence is
R = sr_ratio**2 times shorter and the cost drops to O(N^2 / R). The paper's reduction
ratios R = [64, 16, 4, 1] are these sequence ratios; the code's sr = [8, 4, 2, 1] are the
conv strides.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import to_map, to_tokens


class EfficientSelfAttention(nn.Module):
    """Multi-head attention of N queries over N / sr_ratio**2 reduced keys and values.

    Names follow the official code: ``q``, ``kv`` (keys and values in one linear), ``sr`` and
    ``norm`` (the reduction), ``proj`` (the output projection).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_eps: float = 1e-5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def reduce(self, x: Tensor, height: int, width: int) -> Tensor:
        """Eq. 2: ``(B, N, C)`` -> ``(B, N / R, C)`` with R = sr_ratio**2 (floor on odd sides)."""
        if self.sr_ratio == 1:
            return x
        return self.norm(to_tokens(self.sr(to_map(x, height, width))))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).view(batch, length, self.num_heads, head_dim).transpose(1, 2)  # (B, h, N, d)
        kv = self.kv(self.reduce(x, height, width))  # (B, N/R, 2C)
        # 2 x (B, h, N/R, d)
        k, v = kv.view(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d)) v, Eq. 1, without materialising the (N, N/R) matrix
        # when a fused kernel exists
        dropout = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, length, dim)  # (B, N, C)
        return self.proj_drop(self.proj(out))
