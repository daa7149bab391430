"""Mix-FFN (paper Sec. 3.1, Eq. 3; book chapter 4).

    x_out = MLP(GELU(Conv3x3(MLP(x_in)))) + x_in

SegFormer has no positional encoding. A 3x3 depthwise conv between the two linear layers
mixes each token with its neighbours, and its zero padding tells tokens near the border
where they are, which is enough positional information and works at any resolution.
(The residual is added by the block, see ``encoder.Block``.)
"""

from torch import Tensor, nn

from .tokens import to_map, to_tokens


class MixFFN(nn.Module):
    """linear -> 3x3 depthwise conv -> GELU -> linear on tokens ``(B, N, C)``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = self.fc1(x)  # (B, N, 4C)
        # (B, N, 4C), each token mixed with its 3x3 neighbours
        x = to_tokens(self.dwconv(to_map(x, height, width)))
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))  # (B, N, C)
