"""segformer_edu: SegFormer (Xie et al., NeurIPS 2021) built to match the official code, for the
book."""

from .config import VARIANTS, SegFormerConfig
from .model import SegFormer
from .models import load
from .transforms import preprocess

__all__ = ["SegFormer", "SegFormerConfig", "VARIANTS", "load", "preprocess"]
__version__ = "0.1.0"
