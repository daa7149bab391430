"""The CNN the paper compares against: DeepLabV3+ with a MobileNetV2 encoder (book chapter 11).

The paper's Table 2 sets SegFormer-B0 beside "DeepLabV3+ / MobileNetV2" on ADE20K at
512x512, a model of mmsegmentation
(``configs/mobilenet_v2/deeplabv3plus_m-v2-d8_512x512_160k_ade20k.py``), built here as that
config builds it:

* encoder, MobileNetV2 (Sandler et al., 2018): a stride-2 stem and seven layers of inverted
  residual blocks. The config's strides (1, 2, 2, 1, 1, 1, 1) stop the downsampling at 1/8,
  and its dilations (1, 1, 1, 2, 2, 4, 4) widen the kernels of layers 4-7 instead: output
  stride 8 ("d8"). As in mmseg, a layer's stride and dilation apply to its first block only.
  BatchNorm after every conv, ReLU6.
* decoder, DeepLabV3+ (Chen et al., 2018; mmseg's ``DepthwiseSeparableASPPHead``) on layer 7
  (320 channels, 1/8): atrous spatial pyramid pooling (an image-pooling branch, a 1x1 conv,
  depth-wise separable 3x3 convs at rates 12, 24 and 36; 512 channels each) merged by a full
  3x3 conv; upsampled to layer 2's 1/4 map (24 channels, reduced to 48 by a 1x1 conv) and
  fused with it by two separable 3x3 convs; dropout 0.1, a 1x1 classifier. BatchNorm, ReLU.
* auxiliary head (mmseg's ``FCNHead``; training only, loss weight 0.4) on layer 5 (96
  channels, 1/8).

Like ``SegFormer``, ``forward`` gives logits at 1/4 of the input and ``predict`` runs the
same test-time protocols. As in mmseg, every conv starts from Kaiming's normal (fan-out)
rule and the classifiers from a normal of std 0.01; the paper's encoder starts from ImageNet
weights instead.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import check_image_shape, check_normalised
from .inference import Segmenter

NAME = "deeplabv3plus-mobilenetv2"
# MobileNetV2's seven layers, (expansion t, output channels c, blocks n) of its paper's Table 2
MOBILENET_V2_LAYERS = (
    (1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass(frozen=True)
class DeepLabV3PlusConfig:
    """mmseg's DeepLabV3+ M-V2-D8 as data. Defaults: ADE20K's 150 classes."""

    num_classes: int = 150
    in_channels: int = 3
    stem_channels: int = 32
    strides: tuple[int, ...] = (1, 2, 2, 1, 1, 1, 1)  # of each layer's first block
    dilations: tuple[int, ...] = (1, 1, 1, 2, 2, 4, 4)  # of each layer's first block
    # the layers the heads read: [0] low level (1/4), [2] auxiliary head, [3] ASPP
    out_indices: tuple[int, ...] = (1, 2, 4, 6)
    aspp_channels: int = 512
    aspp_dilations: tuple[int, ...] = (1, 12, 24, 36)  # rate 1 is a 1x1 conv
    low_level_channels: int = 48  # mmseg's c1_channels
    dropout: float = 0.1  # Dropout2d before each classifier
    auxiliary_head: bool = True
    aux_channels: int = 256
    aux_loss_weight: float = 0.4

    def __post_init__(self):
        layers = len(MOBILENET_V2_LAYERS)
        if len(self.strides) != layers or len(self.dilations) != layers:
            raise ValueError(f"strides and dilations need one entry per MobileNetV2 layer "
                             f"({layers}), got {len(self.strides)} and {len(self.dilations)}")
        if len(self.out_indices) != 4 or not all(0 <= i < layers for i in self.out_indices):
            raise ValueError(f"out_indices must name 4 of the layers 0..{layers - 1}, "
                             f"got {self.out_indices}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")

    @property
    def min_side(self) -> int:
        """Every conv is padded to keep its input's side (or halve it, rounding up): any side
        >= 1 goes through."""
        return 1

    def layer_channels(self, index: int) -> int:
        return MOBILENET_V2_LAYERS[index][1]

    @classmethod
    def from_dict(cls, values: dict) -> "DeepLabV3PlusConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}; "
                             f"valid ones: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BatchNorm follows) -> BatchNorm -> activation: mmcv's ``ConvModule``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, dilation: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU):
        padding = dilation * (kernel_size // 2)  # the side kept at stride 1, halved at 2
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias=False)
        act = [activation()] if activation else []
        super().__init__(conv, nn.BatchNorm2d(out_channels), *act)


class SeparableConv(nn.Sequential):
    """A depth-wise 3x3 conv (one filter per channel), then a point-wise 1x1 conv, each with
    BatchNorm and ReLU (mmcv's ``DepthwiseSeparableConvModule``): about 1 / 9 + 1 / C_out of
    a full 3x3 conv's weights and MACs."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            ConvBNAct(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
            ConvBNAct(in_channels, out_channels, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 (x t, ReLU6) -> depth-wise 3x3 (stride, dilation;
    ReLU6) -> project 1x1 (linear: no activation on the narrow output), plus the input when
    the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 dilation: int = 1):
        super().__init__()
        hidden = in_channels * expansion
        expand = [ConvBNAct(in_channels, hidden, activation=nn.ReLU6)] if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand,
            ConvBNAct(hidden, hidden, 3, stride, dilation, groups=hidden, activation=nn.ReLU6),
            ConvBNAct(hidden, out_channels, activation=None))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H / s, W / s)
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """images (B, 3, H, W) -> the maps of the layers in ``out_indices``."""

    def __init__(self, config: DeepLabV3PlusConfig):
        super().__init__()
        self.out_indices = config.out_indices
        self.stem = ConvBNAct(config.in_channels, config.stem_channels, 3, stride=2,
                              activation=nn.ReLU6)
        layers, channels = [], config.stem_channels
        for (expansion, out_channels, blocks), stride, dilation in zip(
                MOBILENET_V2_LAYERS, config.strides, config.dilations):
            layers.append(nn.Sequential(*(
                InvertedResidual(channels if j == 0 else out_channels, out_channels,
                                 stride if j == 0 else 1, expansion, dilation if j == 0 else 1)
                for j in range(blocks))))
            channels = out_channels
        self.layers = nn.ModuleList(layers)

    def forward(self, images: Tensor) -> list[Tensor]:
        x, features = self.stem(images), []  # (B, 32, H/2, W/2)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.out_indices:
                features.append(x)
        # defaults: (B, 24, H/4, W/4), (B, 32, H/8, W/8), (B, 96, H/8, W/8), (B, 320, H/8, W/8)
        return features


def resize(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SeparableASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3) with separable atrous branches: five views
    of the 1/8 map at once (the image's mean, a 1x1 conv, separable 3x3 convs at rates 12, 24,
    36), concatenated and merged by a full 3x3 conv. mmseg's head keeps ASPPHead's full
    bottleneck: 11.8 M of the decoder's 13.3 M weights."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...]):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNAct(in_channels, channels))
        self.branches = nn.ModuleList(
            ConvBNAct(in_channels, channels) if rate == 1
            else SeparableConv(in_channels, channels, rate) for rate in dilations)
        self.bottleneck = ConvBNAct((len(dilations) + 1) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, h, w) -> (B, channels, h, w)
        pooled = resize(self.image_pool(x), x.shape[2:])  # (B, channels, 1, 1) -> (h, w)
        views = [pooled, *(branch(x) for branch in self.branches)]  # 5 x (B, channels, h, w)
        return self.bottleneck(torch.cat(views, dim=1))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+'s decoder: ASPP on the 1/8 map, upsampled to the 1/4 map and fused with its
    details."""

    def __init__(self, config: DeepLabV3PlusConfig):
        super().__init__()
        low, _, _, high = (config.layer_channels(i) for i in config.out_indices)
        channels = config.aspp_channels
        self.aspp = SeparableASPP(high, channels, config.aspp_dilations)
        self.low_level = ConvBNAct(low, config.low_level_channels)
        self.fuse = nn.Sequential(SeparableConv(channels + config.low_level_channels, channels),
                                  SeparableConv(channels, channels))
        self.dropout = nn.Dropout2d(config.dropout)
        self.classifier = nn.Conv2d(channels, config.num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        low = self.low_level(features[0])  # (B, 48, H/4, W/4)
        high = resize(self.aspp(features[3]), low.shape[2:])  # (B, 512, H/8, W/8) -> 1/4
        x = self.fuse(torch.cat([high, low], dim=1))  # (B, 512, H/4, W/4)
        return self.classifier(self.dropout(x))  # (B, K, H/4, W/4)


class FCNHead(nn.Module):
    """The auxiliary classifier on layer 5 (mmseg's ``FCNHead`` with one conv): a second loss
    deeper in the encoder, during training only."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = ConvBNAct(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, 96, H/8, W/8) -> (B, K, H/8, W/8)
        return self.classifier(self.dropout(self.conv(x)))


def init_weights(module: nn.Module) -> None:
    """mmcv's defaults, as mmseg's MobileNetV2 and heads use them: Kaiming normal (fan-out)
    convs, BatchNorm at identity."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class DeepLabV3Plus(Segmenter):
    """images (B, 3, H, W) -> logits (B, num_classes, ceil(H / 4), ceil(W / 4)), as SegFormer."""

    def __init__(self, config: DeepLabV3PlusConfig):
        super().__init__()
        self.config = config
        self.encoder = MobileNetV2(config)
        self.decoder = DeepLabV3PlusHead(config)
        aux_in = config.layer_channels(config.out_indices[2])
        self.aux_head = (FCNHead(aux_in, config.aux_channels, config.num_classes, config.dropout)
                         if config.auxiliary_head else None)
        self.apply(init_weights)
        for head in (self.decoder, self.aux_head):
            if head is not None:  # mmseg's BaseDecodeHead: normal(std 0.01) for its conv_seg
                nn.init.normal_(head.classifier.weight, std=0.01)

    @classmethod
    def from_config(cls, name: str = NAME, num_classes: int = 150, **overrides) -> "DeepLabV3Plus":
        """A randomly initialised DeepLabV3+ M-V2-D8 (the one ``name``) with mmseg's settings."""
        if name != NAME:
            raise ValueError(f"unknown CNN {name!r}; this module builds {NAME!r}")
        return cls(DeepLabV3PlusConfig.from_dict({"num_classes": num_classes, **overrides}))

    def forward(self, images: Tensor, aux: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, K, H/4, W/4); with ``aux=True`` also the auxiliary head's (B, K, H/8, W/8)
        for the training loss (through ``forward``, so that DistributedDataParallel sees both)."""
        check_images(images, self.config)
        if aux and self.aux_head is None:
            raise ValueError("aux=True needs a model built with auxiliary_head=True")
        features = self.encoder(images)
        logits = self.decoder(features)
        return (logits, self.aux_head(features[2])) if aux else logits

    def check_input(self, images: Tensor) -> None:
        check_images(images, self.config)
        check_normalised(images)

    def save_pretrained(self, folder: str | Path, class_names: list[str] | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """``config.json`` (the config, ``model_type``, class names) + ``model.safetensors``;
        ``dtype`` (e.g. torch.float16) stores the weights smaller, read back as float32.
        BatchNorm's running statistics stay float32: a variance of this CNN trained from scratch
        reached 7.9e5, beyond float16's 65504, and would read back as inf."""
        from safetensors.torch import save_file

        classes = self.config.num_classes
        names = list(class_names or (f"class_{i}" for i in range(classes)))
        if len(names) != classes:
            raise ValueError(f"{len(names)} class names for a model with {classes} classes")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        kept = {f"{name}.{stat}" for name, module in self.named_modules()
                if isinstance(module, nn.BatchNorm2d) for stat in ("running_mean", "running_var")}
        state = {k: v.detach().to(dtype if dtype and v.is_floating_point() and k not in kept
                                  else v.dtype)
                 for k, v in self.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS))
        config = {"model_type": NAME, **asdict(self.config), "id2label": dict(enumerate(names)),
                  "dtype": "float32"}
        (folder / CONFIG).write_text(json.dumps(config, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "DeepLabV3Plus":
        """The model that ``save_pretrained`` wrote to ``folder``, in eval mode."""
        from safetensors.torch import load_file

        from .checkpoint import check_and_load

        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"{folder} needs {CONFIG} and {WEIGHTS}, as save_pretrained "
                                    "writes them")
        values = json.loads((folder / CONFIG).read_text())
        if values.pop("model_type", None) != NAME:
            raise ValueError(f"{folder / CONFIG} does not describe a {NAME} (its model_type)")
        for key in ("id2label", "dtype"):
            values.pop(key, None)
        model = cls(DeepLabV3PlusConfig.from_dict(values))
        check_and_load(model, load_file(str(folder / WEIGHTS)), str(folder / WEIGHTS))
        return model.eval()


def check_images(images: Tensor, config: DeepLabV3PlusConfig) -> None:
    """SegFormer's checks of type, shape, channels and dtype, then the side rule with the
    CNN's own reason (SegFormer's message names its spatial reduction)."""
    check_image_shape(images, config.in_channels, min_side=0)
    if min(images.shape[2:]) < config.min_side:
        raise ValueError(f"images must be at least {config.min_side}x{config.min_side} pixels, "
                         f"got {images.shape[2]}x{images.shape[3]}")
