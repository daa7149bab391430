"""Colours for label maps: CamVid's SegNet palette, a fixed ADE20K palette,
and ``colorize`` (book chapter 8)."""

import numpy as np
import torch

# SegNet-Tutorial's colours, in the order of data.CAMVID_CLASSES; void/ignore
# is drawn black by colorize
CAMVID_PALETTE = (
    (128, 128, 128),  # Sky
    (128, 0, 0),  # Building
    (192, 192, 128),  # Pole
    (128, 64, 128),  # Road
    (60, 40, 222),  # Pavement
    (128, 128, 0),  # Tree
    (192, 128, 128),  # SignSymbol
    (64, 64, 128),  # Fence
    (64, 0, 128),  # Car
    (64, 64, 0),  # Pedestrian
    (0, 128, 192),  # Bicyclist
)


def ade20k_palette(num_classes: int = 150) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours: the PASCAL VOC colour map
    (bits of the index spread over R, G, B).

    Class k gets VOC colour k + 1, so no class is black: black stays the ignore colour.
    """
    colours = []
    for index in range(1, num_classes + 1):
        r = g = b = 0
        # the index's bits 0, 1, 2 go to the top bit of R, G, B; then 3, 4, 5...
        for shift in range(7, -1, -1):
            r |= (index & 1) << shift
            g |= ((index >> 1) & 1) << shift
            b |= ((index >> 2) & 1) << shift
            index >>= 3
        colours.append((r, g, b))
    return tuple(colours)


ADE20K_PALETTE = ade20k_palette()


def colorize(label: np.ndarray | torch.Tensor, palette=CAMVID_PALETTE) -> np.ndarray:
    """Class indices (H, W) -> uint8 RGB (H, W, 3);
    values without a colour (the ignore index 255, void) are black."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label).astype(np.int64)
    # (values, 3), black by default
    lut = np.zeros((max(256, int(label.max(initial=0)) + 1), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[np.clip(label, 0, None)]  # (H, W, 3)
