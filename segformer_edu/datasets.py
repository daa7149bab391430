"""The datasets a run trains on, by name (book chapter 8 and appendix B): each split with its
transform and class names, the colour of each class, the checks of the evaluated images' sizes,
and the order in which training draws samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Sampler, Subset

from . import data, folder_dataset
from .data import IGNORE_INDEX, SegmentationFolder
from .palette import CAMVID_PALETTE, ade20k_palette
from .system import free_memory
from .transforms import eval_input_size

if TYPE_CHECKING:  # for the annotations only: train imports this module
    from .train import TrainConfig


def camvid_split(cfg: TrainConfig, split: str, transform) -> SegmentationFolder:
    return data.camvid(cfg.data_root, split=split, transform=transform)


def ade20k_split(cfg: TrainConfig, split: str, transform) -> SegmentationFolder:
    if split == "test":
        raise ValueError("ADE20K's test images come without labels: evaluate on its val split "
                         "(drop --test)")
    ade_split = {"train": "training", "val": "validation"}[split]
    return data.ade20k(cfg.data_root, split=ade_split, transform=transform)


def folder_split(cfg: TrainConfig, split: str, transform) -> SegmentationFolder:
    return folder_dataset.folder(cfg.data_root, split, transform, cfg.num_classes, cfg.class_names,
                       cfg.reduce_zero_label, cfg.ignore_index)


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset a run names with --dataset: how to build a split (cfg, split, transform), its
    class names and their colours (None: the dataset's own, from its classes.json)."""

    build: Callable
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None


# --dataset NAME -> its entry: a new dataset is one line here (and its reading in data.py)
DATASETS = {
    "camvid": DatasetEntry(camvid_split, data.CAMVID_CLASSES, CAMVID_PALETTE),
    "ade20k": DatasetEntry(ade20k_split, data.ADE20K_CLASSES, ade20k_palette(150)),
    "folder": DatasetEntry(folder_split),
}


def entry_of(dataset: str | None, names=None) -> DatasetEntry | None:
    """A checkpoint's entry: by the dataset it names (a training checkpoint), else by its class
    names (a stored folder keeps only those); None for a dataset the registry does not know."""
    if dataset in DATASETS:
        return DATASETS[dataset]
    known = [entry for entry in DATASETS.values()
             if names and entry.classes and list(entry.classes) == list(names)]
    return known[0] if known else None


def build_split(cfg: TrainConfig, split: str):
    """The dataset of ``split`` ("train", "val", "test") with its transform, and its class names."""
    from .transforms import EvalTransform, TrainTransform

    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown --dataset {cfg.dataset!r}: one of {', '.join(DATASETS)}")
    entry = DATASETS[cfg.dataset]
    if split == "train":
        transform = TrainTransform(crop_size=tuple(cfg.crop_size), scale=tuple(cfg.scale),
                                   ratio_range=tuple(cfg.ratio_range), ignore_index=IGNORE_INDEX,
                                   photometric=cfg.photometric)
    else:
        transform = EvalTransform(scale=tuple(cfg.val_scale) if cfg.val_scale else None)
    folder_only = {"num_classes": None, "class_names": None, "reduce_zero_label": False,
                   "ignore_index": IGNORE_INDEX}
    given = [name for name, default in folder_only.items() if getattr(cfg, name) != default]
    if entry.classes is not None and given:
        raise ValueError(f"--{given[0].replace('_', '-')} applies to --dataset folder only; "
                         f"{cfg.dataset} has its own classes and label encoding")
    dataset = entry.build(cfg, split, transform)
    return dataset, list(entry.classes or dataset.names)


def palette_of(dataset, dataset_name: str) -> list[tuple[int, int, int]]:
    """The colour of each class: a folder dataset's own (classes.json, else VOC colours), else the
    registry's (CamVid's, ADE20K's)."""
    folder = dataset.dataset if isinstance(dataset, Subset) else dataset
    if getattr(folder, "palette", None) is not None:
        return [tuple(int(c) for c in colour) for colour in folder.palette]
    return list(DATASETS[dataset_name].palette)


def preload_if_it_fits(splits: list, progress: bool = False) -> bool:
    """Decode every frame of ``splits`` into memory (see SegmentationFolder.preload) if they take
    under a quarter of the free memory; returns whether it did. CamVid's train + val frames take
    ~320 MB; ADE20K's ~25 GB do not."""
    folders = [split.dataset if isinstance(split, Subset) else split for split in splits]
    if sum(folder.decoded_bytes() for folder in folders) > free_memory() / 4:
        return False
    for folder in folders:
        folder.preload(progress)
    return True


def check_image_sizes(split: str, dataset, scale, min_side: int) -> None:
    """Every image of ``split`` at least ``min_side`` on each side as the model will see it, or one
    line naming the first that is not (found now, not at the first validation)."""
    subset = isinstance(dataset, Subset)
    folder = dataset.dataset if subset else dataset
    sizes = folder.image_sizes()
    for index in dataset.indices if subset else range(len(sizes)):
        height, width = eval_input_size(*sizes[index], scale)
        if min(height, width) < min_side:
            resized = " after --val-scale" if scale else ""
            raise ValueError(f"{split} image {folder.image_paths[index]} is "
                             f"{height}x{width}{resized}, under the model's smallest side "
                             f"{min_side}: remove it, or pass --val-scale LONG SHORT to resize "
                             "every evaluated image")


class InfiniteSampler(Sampler[int]):
    """Shuffled epochs back to back; each rank takes a disjoint slice of every shuffle
    (DistributedSampler's job).

    Infinite, so data loading workers never restart at an epoch boundary, and it starts at sample
    ``start``: a run resumed at iteration i draws exactly the samples the uninterrupted run would
    have drawn.
    """

    def __init__(self, size: int, rank: int = 0, world: int = 1, seed: int = 0, start: int = 0):
        self.size, self.rank, self.world, self.seed, self.start = size, rank, world, seed, start
        self.per_rank = size // world

    def __iter__(self):
        epoch, skip = divmod(self.start, self.per_rank)
        while True:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=generator)
            yield from order[self.rank: self.per_rank * self.world: self.world][skip:].tolist()
            epoch, skip = epoch + 1, 0


def _wrap(items: list[str], width: int = 110) -> list[str]:
    """``items`` joined by ", " into indented lines of at most ``width`` columns,
    never splitting an item."""
    lines = [[]]
    for item in items:
        if lines[-1] and len("  " + ", ".join(lines[-1] + [item])) > width:
            lines.append([])
        lines[-1].append(item)
    return ["  " + ", ".join(line) + ("," if index < len(lines) - 1 else "")
            for index, line in enumerate(lines)]


def data_report(splits: dict, names: list[str]) -> tuple[str, list[str]]:
    """(a short report, warnings) before training: images per split; the class pixel shares and
    ignore share of each split in ``splits`` that has counts. ``splits`` maps a split name to
    (images, pixel counts or None), counts as SegmentationFolder.pixel_counts: (num_classes + 1,),
    the ignore index last."""
    lines = ["data: " + ", ".join(f"{name} {images} images"
                                  for name, (images, _) in splits.items())]
    warnings = []
    for split, (_, counts) in splits.items():
        if counts is None:
            continue
        counts = np.asarray(counts, np.float64)
        total = max(counts.sum(), 1.0)
        lines.append(f"{split} pixels: ignore {100 * counts[-1] / total:.1f}%; by class:")
        shares = [f"{name} {100 * share / total:.1f}%" for name, share in zip(names, counts[:-1])]
        lines += _wrap(shares)
        if split == "train":
            warnings += [f"warning: class {k} ({name}) never appears in the training masks"
                         for k, (name, count) in enumerate(zip(names, counts[:-1])) if count == 0]
    return "\n".join(lines), warnings
