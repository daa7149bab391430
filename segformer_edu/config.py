"""SegFormer-B0 ... B5 as data (paper Table 6 and the official configs; book chapter 5).

All six variants share one architecture and differ only in widths, depths and the decoder
width, so they are rows of a table rather than six classes.

Where the paper and the released code disagree we follow the code, because that is what
the published weights were trained with:

* Mix-FFN expansion: the paper's Table 6 lists 8, 8, 4, 4; the code and weights use 4 in
  every stage (``mlp_ratios``).
* LayerNorm eps: 1e-6 inside blocks and at each stage's end (``block_norm_eps``), PyTorch's
  default 1e-5 after each patch embedding and in the attention's spatial reduction
  (``norm_eps``). Hugging Face transformers uses 1e-5 everywhere.
* The decoder's dropout is ``Dropout2d`` (whole channels), as in mmsegmentation.
"""

from dataclasses import dataclass, fields, replace

# name: (embed_dims per stage, blocks per stage, decoder width C)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


@dataclass(frozen=True)
class SegFormerConfig:
    """Everything that fixes a SegFormer's shape. Defaults are MiT-B0 with 150 (ADE20K) classes."""

    num_classes: int = 150
    in_channels: int = 3
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # conv strides; sequence reduction R = sr**2
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    qkv_bias: bool = True
    decoder_dim: int = 256
    drop_path_rate: float = 0.1  # stochastic depth, rising linearly over all blocks
    attn_drop: float = 0.0
    drop: float = 0.0
    decoder_dropout: float = 0.1
    norm_eps: float = 1e-5
    block_norm_eps: float = 1e-6

    def __post_init__(self):
        per_stage = ("embed_dims", "depths", "num_heads", "sr_ratios", "mlp_ratios", "patch_sizes",
                     "strides")
        lengths = {name: len(getattr(self, name)) for name in per_stage}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"per-stage settings must all have one entry per stage, got lengths "
                             f"{lengths}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")

    @property
    def num_stages(self) -> int:
        return len(self.embed_dims)

    @classmethod
    def from_name(cls, name: str, num_classes: int = 150, **overrides) -> "SegFormerConfig":
        """The official settings of ``name`` (``"b0"`` ... ``"b5"``),
        with optional field overrides."""
        key = name.lower().removeprefix("mit-").removeprefix("mit_").removeprefix("segformer-")
        if key not in VARIANTS:
            raise ValueError(f"unknown SegFormer variant {name!r}; expected one of "
                             f"{sorted(VARIANTS)}")
        embed_dims, depths, decoder_dim = VARIANTS[key]
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid ones: "
                             f"{[f.name for f in fields(cls)]}")
        base = cls(num_classes=num_classes, embed_dims=embed_dims, depths=depths,
                   decoder_dim=decoder_dim)
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return replace(base, **overrides)

    def stage_sides(self, side: int) -> list[int]:
        """The side of each stage's map for an input side: each patch embedding is a conv with
        padding ``patch_size // 2``, so stage 1 is ceil(side / 4) and every later stage
        halves it, rounding up."""
        sides = []
        for kernel, stride in zip(self.patch_sizes, self.strides):
            side = (side + 2 * (kernel // 2) - kernel) // stride + 1
            sides.append(side)
        return sides

    @property
    def min_side(self) -> int:
        """The smallest input side every stage's spatial reduction accepts: a stage of side s with
        reduction ``sr`` needs s >= sr. B0-B5: 29 px, because stage 1 at ceil(29 / 4) = 8 is
        just enough for sr = 8."""
        side = 1
        while any(s < sr for s, sr in zip(self.stage_sides(side), self.sr_ratios)):
            side += 1
        return side

    def variant_name(self) -> str | None:
        """``"b0"`` ... ``"b5"`` if the widths, depths and decoder match an official variant."""
        for name, row in VARIANTS.items():
            if row == (self.embed_dims, self.depths, self.decoder_dim):
                return name
        return None
