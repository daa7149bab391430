"""SegFormer = Mix Transformer encoder + All-MLP decoder (paper Fig. 2; book chapter 1)."""

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import SegFormerConfig
from .decoder import AllMLPDecoder
from .encoder import MixTransformer, check_images, check_normalised
from .inference import Segmenter


def init_weights(module: nn.Module) -> None:
    """The official encoder's initialisation: truncated normal (std 0.02) for linears, fan-out
    normal for convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        fan_out = kernel_h * kernel_w * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SegFormer(Segmenter):
    """images (B, 3, H, W) -> logits (B, num_classes, ceil(H / 4), ceil(W / 4))."""

    def __init__(self, config: SegFormerConfig):
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # from_pretrained, where a checkpoint has them
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config.embed_dims, config.decoder_dim, config.num_classes,
                                     config.decoder_dropout)
        # As the official code: the encoder initialises itself; in the decoder only the fuse
        # ConvModule does (mmcv's kaiming fan-out, the same rule). linear_c and the classifier
        # (official ``linear_pred``) keep PyTorch's default init: mmseg's normal_init(std=0.01) hits
        # its unused ``conv_seg``, not them.
        self.encoder.apply(init_weights)
        self.decoder.fuse.apply(init_weights)

    @classmethod
    def from_config(cls, name: str = "b0", num_classes: int = 150, **overrides) -> "SegFormer":
        """A randomly initialised SegFormer-``name`` (``"b0"`` ... ``"b5"``) with the official
        settings."""
        return cls(SegFormerConfig.from_name(name, num_classes, **overrides))

    @classmethod
    def from_pretrained(cls, source: str | Path, num_classes: int | None = None,
                        config: str | None = None, **overrides) -> "SegFormer":
        """Load a checkpoint, in eval mode: a training run's folder (its ``best.pt``) or ``.pt``, a
        Hugging Face folder or hub id, or a single official/mmseg file (``.pth``).

        ``num_classes`` different from the checkpoint's (or given for an encoder-only checkpoint
        such as ``nvidia/mit-b0``) keeps the pretrained encoder and starts a new decoder (a warning
        names it). ``config`` names the variant for single files without a ``config.json`` (inferred
        if omitted). ``model.class_names`` holds the checkpoint's class names, where it has them.
        """
        from .checkpoint import load_pretrained

        model, _ = load_pretrained(cls, source, num_classes=num_classes, config_name=config,
                                   **overrides)
        return model

    def save_pretrained(self, folder: str | Path, class_names: list[str] | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` in the Hugging Face layout, which
        ``from_pretrained`` here and in transformers (``SegformerForSemanticSegmentation``) read;
        the class names (default: ``self.class_names``) become its labels."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, folder, class_names=class_names, dtype=dtype)

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))

    def check_input(self, images: Tensor) -> None:
        check_images(images, self.config)
        check_normalised(images)
