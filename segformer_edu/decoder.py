"""The All-MLP decoder (paper Sec. 3.2, Eq. 4; book chapter 6).

Four steps, each cheap:
  1. unify: a linear layer maps every stage's C_i channels to the decoder width C;
  2. upsample: bilinear to 1/4 of the input (the size of the first stage's map);
  3. fuse: concatenate (official order: c4, c3, c2, c1) and mix 4C -> C with a 1x1 conv
     without bias, then BatchNorm and ReLU (the paper's "MLP" is this ConvModule);
  4. predict: dropout, then a 1x1 conv to the class logits at 1/4 resolution.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import to_map, to_tokens


class AllMLPDecoder(nn.Module):
    """Four maps [(B, C_i, H_i, W_i)] -> logits (B, num_classes, H_1, W_1)."""

    def __init__(self, in_dims: tuple[int, ...], dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, dim) for c in in_dims)
        self.fuse = nn.Sequential(nn.Conv2d(len(in_dims) * dim, dim, 1, bias=False),
                                  nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[2:]
        unified = []
        for feature, linear in zip(features, self.linear_c):
            x = to_map(linear(to_tokens(feature)), *feature.shape[2:])  # step 1: (B, C, H_i, W_i)
            if x.shape[2:] != size:
                # step 2: (B, C, H_1, W_1)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            unified.append(x)
        # step 3: (B, 4C, H_1, W_1) -> (B, C, H_1, W_1)
        x = self.fuse(torch.cat(unified[::-1], dim=1))
        return self.classifier(self.dropout(x))  # step 4: (B, num_classes, H_1, W_1)
