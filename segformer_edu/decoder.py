"""The All-MLP decoder (paper Sec. 3.2, Eq. 4; book chapter 6).

Four steps, each cheap:
  1. unify: a linear layer maps every stage's C_i channels to the decoder width C;
  2. upsample: bilinear to 1/4 of the input (the size of the first stage's map);
  3. fuse: concatenate (official order: c4, c3, c2, c1) and mix 4C -> C with a 1x1 conv
     without bias, then BatchNorm and ReLU (the paper's "MLP" is this ConvModule);
  4. predict: dropout, then a 1x1 conv to the class logits at 1/4 resolution.

Steps 1 to 3 (up to the BatchNorm) are linear, and so is bilinear upsampling, whose weights sum to 1
and so carry a bias through unchanged. They can therefore run in another order with the same result:
with ``fuse_first``, each stage's map is unified and fused at its own resolution by one (C, C_i)
matrix, the product of its linear layer and its block of the fuse, and only the C-channel results
are upsampled and summed. The (B, 4C, H_1, W_1) concatenation is never made (chapter 9 counts what
that saves; training uses it with ``--fuse-first``).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import to_map, to_tokens


class AllMLPDecoder(nn.Module):
    """Four maps [(B, C_i, H_i, W_i)] -> logits (B, num_classes, H_1, W_1)."""

    def __init__(self, in_dims: tuple[int, ...], dim: int, num_classes: int, dropout: float = 0.1,
                 fuse_first: bool = False):
        super().__init__()
        self.fuse_first = fuse_first  # the order of the computation, not of the weights
        self.linear_c = nn.ModuleList(nn.Linear(c, dim) for c in in_dims)
        self.fuse = nn.Sequential(nn.Conv2d(len(in_dims) * dim, dim, 1, bias=False),
                                  nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.fuse_first:
            x = self.fuse[1:](self.fused_at_each_scale(features))  # BatchNorm, ReLU
        else:
            x = self.fuse(torch.cat(self.unified(features)[::-1], dim=1))  # step 3
        return self.classifier(self.dropout(x))  # step 4: (B, num_classes, H_1, W_1)

    def unified(self, features: list[Tensor]) -> list[Tensor]:
        """Steps 1 and 2, the paper's order: [(B, C, H_1, W_1)] per stage."""
        size = features[0].shape[2:]
        unified = []
        for feature, linear in zip(features, self.linear_c):
            x = to_map(linear(to_tokens(feature)), *feature.shape[2:])  # step 1: (B, C, H_i, W_i)
            if x.shape[2:] != size:
                # step 2: (B, C, H_1, W_1)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            unified.append(x)
        return unified

    def fused_at_each_scale(self, features: list[Tensor]) -> Tensor:
        """Steps 1 to 3 up to the BatchNorm, fused before upsampling: (B, C, H_1, W_1), equal to
        ``self.fuse[0](torch.cat(self.unified(features)[::-1], dim=1))`` up to float rounding."""
        size = features[0].shape[2:]
        dim = self.fuse[0].out_channels
        blocks = self.fuse[0].weight.flatten(1).split(dim, dim=1)[::-1]  # (C, C) each, c1 first
        fused = None
        for feature, linear, block in zip(features, self.linear_c, blocks):
            weight, bias = block @ linear.weight, block @ linear.bias  # (C, C_i), (C,)
            x = F.conv2d(feature, weight[:, :, None, None], bias)  # (B, C, H_i, W_i)
            if x.shape[2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        return fused
