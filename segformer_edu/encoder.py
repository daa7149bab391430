"""The Mix Transformer encoder, MiT (paper Sec. 3.1; book chapter 5).

Four stages, each: overlapping patch merging -> ``depth`` transformer blocks -> LayerNorm,
producing maps at 1/4, 1/8, 1/16 and 1/32 of the input with growing channel counts. Blocks
are pre-norm (LayerNorm before attention and before Mix-FFN) with stochastic depth on both
residual branches.
"""

import torch
from torch import Tensor, nn

from .attention import EfficientSelfAttention
from .config import SegFormerConfig
from .mix_ffn import MixFFN
from .patch_embed import OverlapPatchEmbed
from .tokens import to_map


def check_images(images: Tensor, config: SegFormerConfig) -> None:
    """Raise ``ValueError`` saying what was expected if ``images`` cannot go through the encoder."""
    check_image_shape(images, config.in_channels, config.min_side)


def check_image_shape(images: Tensor, in_channels: int, min_side: int) -> None:
    """``check_images`` for a model known by its input only
    (an exported file: ``export.OnnxRuntimeModel``)."""
    if not isinstance(images, Tensor):
        raise ValueError(f"expected images as a torch.Tensor of shape (B, {in_channels}, H, W), "
                         f"got {type(images).__name__}")
    if images.dim() != 4:
        hint = " (add a batch dimension with images.unsqueeze(0))" if images.dim() == 3 else ""
        raise ValueError(f"expected images of shape (B, {in_channels}, H, W), got {images.dim()}-D "
                         f"shape {tuple(images.shape)}{hint}")
    if images.shape[1] != in_channels:
        channels_last = images.shape[-1] == in_channels
        hint = " (channels-last input? use images.permute(0, 3, 1, 2))" if channels_last else ""
        raise ValueError(f"expected {in_channels} channels in dim 1, got shape "
                         f"{tuple(images.shape)}{hint}")
    if min(images.shape[2:]) < min_side:
        raise ValueError(f"images must be at least {min_side}x{min_side} pixels (the smallest side "
                         f"every stage's spatial reduction accepts), got "
                         f"{images.shape[2]}x{images.shape[3]}; resize or pad them")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images, got dtype {images.dtype}; convert with "
                         "images.float() / 255 and normalise with the ImageNet mean and std")


def check_dtype(images: Tensor, weights: Tensor) -> None:
    """Images of the weights' dtype, or under autocast (which casts both, float64 aside): else one
    message, not the convolution's "Input type and bias type should be the same"."""
    if images.dtype == weights.dtype:
        return
    try:
        autocast = torch.is_autocast_enabled(images.device.type)
    except TypeError:  # torch < 2.4 asks per device kind
        autocast = torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    except RuntimeError:  # a device kind autocast does not know: meta
        autocast = False
    if not (autocast and images.dtype != torch.float64):
        raise ValueError(f"images are {images.dtype} but the model's weights are {weights.dtype}: "
                         f"pass images.to({weights.dtype}), convert the model with "
                         "model.to(images.dtype), or run under torch.autocast")


# the ImageNet-normalised range: (0 - 0.485) / 0.229 to (1 - 0.406) / 0.225, about -2.1 to 2.6
NORMALISED_MAX = 10.0  # far above it: pixel values 0..255 that were never normalised


def check_normalised(images: Tensor) -> None:
    """Refuse images that hold raw pixel values (0..255): the model would segment them silently
    wrong. (Values 0..1 that skipped the mean and std cannot be told apart from normalised ones.)"""
    largest = float(images.detach().abs().amax()) if images.numel() else 0.0
    if largest > NORMALISED_MAX:
        raise ValueError(f"images hold values up to {largest:.0f}: the model expects "
                         "ImageNet-normalised images (RGB / 255, minus the mean, divided by the "
                         "std: about -2.1 to 2.6); prepare them with segformer_edu.preprocess")


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's whole residual branch
    with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep  # rescale so that the expectation matches eval mode

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MixFFN(LN(x)), on tokens (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float,
                 config: SegFormerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.block_norm_eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, config.qkv_bias,
                                           config.attn_drop, config.drop, norm_eps=config.norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=config.block_norm_eps)
        self.ffn = MixFFN(dim, dim * mlp_ratio, config.drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.ffn(self.norm2(x), height, width))


class Stage(nn.Module):
    """Patch merging, ``depth`` blocks and a LayerNorm:
    map (B, C_in, H, W) -> map (B, C, H / S, W / S)."""

    def __init__(self, index: int, in_channels: int, drop_paths: list[float],
                 config: SegFormerConfig):
        super().__init__()
        dim = config.embed_dims[index]
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, config.patch_sizes[index],
                                             config.strides[index], norm_eps=config.norm_eps)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads[index], config.mlp_ratios[index], config.sr_ratios[index],
                  p, config)
            for p in drop_paths
        )
        self.norm = nn.LayerNorm(dim, eps=config.block_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x, height, width = self.patch_embed(x)  # (B, N, C)
        for block in self.blocks:
            x = block(x, height, width)
        return to_map(self.norm(x), height, width)  # (B, C, H', W')


class MixTransformer(nn.Module):
    """MiT encoder: images (B, 3, H, W) -> four maps at strides 4, 8, 16, 32."""

    def __init__(self, config: SegFormerConfig):
        super().__init__()
        self.config = config
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        starts = [sum(config.depths[:i]) for i in range(config.num_stages)]
        in_dims = (config.in_channels,) + config.embed_dims[:-1]
        self.stages = nn.ModuleList(
            Stage(i, in_dims[i], rates[starts[i]:starts[i] + config.depths[i]], config)
            for i in range(config.num_stages)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        check_images(images, self.config)
        check_dtype(images, self.stages[0].patch_embed.proj.weight)
        features, x = [], images
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        # [(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16), (B, C4, H/32, W/32)]
        return features
