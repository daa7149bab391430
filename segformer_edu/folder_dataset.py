"""Your own dataset (book appendix B): ``folder(root, split)`` reads ``root/<split>/images`` and
``root/<split>/masks`` (paired by file stem), the classes from ``root/classes.json`` or the command
line; masks as class indices (any ignore value, ADE20K's reduce_zero_label) or RGB palette colours.
Every definition is checked before the first step: one line naming the file and what to fix.
"""

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .data import (IGNORE_INDEX, IMAGE_SUFFIXES, LOSSY_SUFFIXES, SegmentationFolder,
                   _files_by_stem, check_label, displayed)

FOLDER_SPLITS = ("train", "val", "test")


def read_mask(path: str | Path) -> np.ndarray:
    """The mask at ``path``: (H, W) values for a single-channel or palette-mode PNG (its indices),
    (H, W, 3) uint8 for an RGB(A) one (its colours; alpha dropped)."""
    try:
        with Image.open(path) as image:
            image = displayed(image)
            return np.array(image.convert("RGB") if image.mode in ("RGB", "RGBA") else image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"corrupt or unreadable mask {path}: {error}") from error


def _colour_codes(colours) -> np.ndarray:
    """RGB triples (..., 3) -> one int64 per colour, 0xRRGGBB: colours compared as numbers."""
    colours = np.asarray(colours, np.int64)
    return (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]


class FolderLabels:
    """A folder dataset's raw masks -> class indices 0..num_classes-1 or IGNORE_INDEX.

    Index masks: the value ``ignore_index`` is ignored; ``reduce_zero_label`` (ADE20K's convention)
    also ignores 0 and shifts class k to k - 1. Colour masks (RGB): class k is the colour
    ``palette[k]``; ``ignore_colours`` are ignored; any other colour is an error naming the file.
    ``__name__`` spells out the options: it keys SegmentationFolder.check_labels' manifest, so
    changing an option checks every mask again.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 reduce_zero_label: bool = False,
                 palette=None, ignore_colours=()):
        first_class = 1 if reduce_zero_label else 0
        if first_class <= ignore_index < first_class + num_classes:
            hint = "" if reduce_zero_label else " (or --reduce-zero-label if 0 means 'other')"
            raise ValueError(f"the ignore value {ignore_index} is one of the classes' mask values "
                             f"{first_class}..{first_class + num_classes - 1}: pick another "
                             f"--ignore-index{hint}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.palette = [tuple(int(c) for c in colour) for colour in palette] if palette else None
        self.ignore_colours = [tuple(int(c) for c in colour) for colour in ignore_colours]
        self.__name__ = (f"folder(ignore={ignore_index}, reduce_zero_label={reduce_zero_label}, "
                         f"palette={self.palette}, ignore_colours={self.ignore_colours})")

    def __call__(self, mask: np.ndarray, path: str | Path = "mask") -> np.ndarray:
        """A raw mask (H, W) or (H, W, 3) -> class indices (H, W), int64, not yet range-checked."""
        if mask.ndim == 3:
            return self.from_colours(mask, path)
        label = mask.astype(np.int64)
        ignored = label == self.ignore_index
        if self.reduce_zero_label:
            ignored |= label == 0
            label = label - 1
        label[ignored] = IGNORE_INDEX
        return label

    def from_colours(self, mask: np.ndarray, path: str | Path) -> np.ndarray:
        """An RGB mask (H, W, 3) -> class indices (H, W) through the palette; a colour outside it
        raises."""
        if self.palette is None:
            raise ValueError(f"mask {path} is an RGB colour image but the dataset has no palette: "
                             "add one to classes.json, or save masks as single-channel class "
                             "indices")
        codes = _colour_codes(mask)  # (H, W)
        ignored = _colour_codes(self.ignore_colours or np.zeros((0, 3)))
        known = np.concatenate([_colour_codes(self.palette), ignored])
        values = np.concatenate([np.arange(len(self.palette)),
                                 np.full(len(self.ignore_colours), IGNORE_INDEX)])
        order = np.argsort(known)
        position = np.clip(np.searchsorted(known[order], codes), 0, len(known) - 1)
        found = known[order][position] == codes
        if not found.all():
            missing = np.unique(codes[~found])[:5]
            shown = ", ".join(str(((c >> 16) & 255, (c >> 8) & 255, c & 255))
                              for c in missing.tolist())
            raise ValueError(f"mask {path} holds colours missing from the palette (first: "
                             f"{shown}); add them to classes.json's palette or ignore_colours")
        return values[order][position]


def read_classes_json(path: Path, names_given: bool) -> dict:
    """``classes.json`` as {"names", "palette", "ignore_colours"} (a bare list: the names); {} when
    there is none. A file that is not JSON or not of that form is one line; without "names" it
    needs ``names_given`` (--class-names or --num-classes)."""
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    spec = {"names": spec} if isinstance(spec, list) else spec
    expected = '{"names": [...], "palette": [...]} (palette optional) or a list of class names'
    if not isinstance(spec, dict):
        raise ValueError(f"{path} holds a {type(spec).__name__}; expected {expected}")
    if "names" not in spec and not names_given:
        keys = ", ".join(repr(key) for key in spec) or "no keys"
        raise ValueError(f"{path} holds {keys} but no \"names\": expected {expected}")
    if not isinstance(spec.get("names", []), list):
        raise ValueError(f"{path}'s \"names\" is a {type(spec['names']).__name__}; expected "
                         f"{expected}")
    return spec


def folder_classes(root: str | Path, num_classes: int | None = None, class_names=None) -> dict:
    """The classes of the folder dataset at ``root``: {"names", "palette", "ignore_colours"}.

    From ``root/classes.json`` if present: a list of names, or {"names": [...], "palette": [[r, g,
    b], ...], "ignore_colours": [[r, g, b], ...]} (palette and ignore_colours optional).
    ``class_names`` replaces its names; ``num_classes`` alone names them class_0, class_1...; both
    given must agree. No palette: VOC colours for drawing.
    """
    from .palette import ade20k_palette

    path = Path(root) / "classes.json"
    spec = read_classes_json(path, names_given=class_names is not None or num_classes is not None)
    names = list(class_names) if class_names else spec.get("names")
    if not names and num_classes is None:
        raise ValueError(f"no classes for {root}: write {path} (class names, optional palette) "
                         f"or pass --num-classes N or --class-names A B ...")
    names = [str(name) for name in names] if names else [f"class_{k}" for k in range(num_classes)]
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"--num-classes {num_classes} but {len(names)} class names "
                         f"({', '.join(names[:5])}...)")
    if not 1 <= len(names) <= IGNORE_INDEX:
        raise ValueError(f"{len(names)} classes: between 1 and {IGNORE_INDEX} are supported "
                         "(labels are uint8)")
    _check_distinct(names, "--class-names" if class_names else f"{path}'s \"names\"", "name")
    palette = spec.get("palette")
    if palette is not None and class_names and isinstance(palette, list) and \
            len(palette) != len(names):
        # the command line's names replace the file's; its colours cannot be matched to them
        warnings.warn(f"{path}'s palette ({len(palette)} colours) is not used: --class-names gives "
                      f"{len(names)} classes; colour masks need one colour per class in "
                      "classes.json")
        palette = None
    if palette is not None:
        check_colours(palette, f"{path}'s palette")
        if len(palette) != len(names):
            raise ValueError(f"{path}'s palette has {len(palette)} entries for {len(names)} "
                             "classes: one [r, g, b] per class, in the order of the names")
    ignore_colours = spec.get("ignore_colours", [])
    check_colours(ignore_colours, f"{path}'s ignore_colours", distinct=False)
    both = [c for c in map(tuple, ignore_colours) if palette and c in map(tuple, palette)]
    if both:
        raise ValueError(f"{path}: colour {list(both[0])} is both a class's in \"palette\" and in "
                         "\"ignore_colours\"; keep it in one of them")
    return {"names": names, "palette": [tuple(c) for c in palette] if palette else None,
            "ignore_colours": [tuple(c) for c in ignore_colours],
            "draw_palette": ([tuple(c) for c in palette] if palette
                             else list(ade20k_palette(len(names))))}


def _check_distinct(items: list, where: str, what: str) -> None:
    """One line naming the first item of ``items`` listed twice in ``where``."""
    seen = set()
    for item in items:
        if item in seen:
            shown = list(item) if isinstance(item, tuple) else repr(item)
            raise ValueError(f"{where} lists {shown} twice: give each class its own {what}")
        seen.add(item)


def check_colours(colours, where: str, distinct: bool = True) -> None:
    """One line naming the first colour of ``where`` that is not three whole numbers 0..255, or
    (``distinct``) that is listed twice: checked before training, not by a crash when the colours
    are drawn."""
    if not isinstance(colours, list):
        raise ValueError(f"{where} is a {type(colours).__name__}: write a list of [r, g, b]")
    for index, colour in enumerate(colours):
        values = colour if isinstance(colour, list) else [colour]
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        if len(values) != 3 or not whole or not all(0 <= v <= 255 for v in values):
            raise ValueError(f"{where}: entry {index} is {json.dumps(colour)}; each colour is "
                             "[r, g, b], three whole numbers 0..255")
    if distinct:
        _check_distinct([tuple(c) for c in colours], where, "colour")


class FolderDataset(SegmentationFolder):
    """``<root>/<split>/images`` paired by stem with ``<root>/<split>/masks`` (.png),
    classes from ``folder_classes``.

    ``names`` and ``palette`` (one RGB per class, for drawing) travel with the dataset. Masks may be
    class indices or RGB colours; ``labels`` (a FolderLabels) turns either into class indices.
    """

    def __init__(self, root, split: str, labels: FolderLabels, names: list[str], palette,
                 transform=None):
        image_dir, mask_dir = Path(root) / split / "images", Path(root) / split / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} not found: a folder dataset has "
                                        f"<root>/{split}/images and <root>/{split}/masks")
        _check_pairs(image_dir, mask_dir)
        super().__init__(image_dir, mask_dir, labels.num_classes, transform, labels)
        self.names, self.palette = names, palette

    def load_label(self, index: int) -> np.ndarray:
        path = self.label_paths[index]
        return check_label(self.label_map(read_mask(path), path), self.num_classes, path)


def _check_pairs(image_dir: Path, mask_dir: Path) -> None:
    """One line naming the first image without a mask, or mask without an image."""
    images, masks = _files_by_stem(image_dir, IMAGE_SUFFIXES), _files_by_stem(mask_dir, (".png",))
    without_mask = sorted(images.keys() - masks.keys())
    without_image = sorted(masks.keys() - images.keys())
    counts = (f"({len(without_mask)} images without a mask, {len(without_image)} masks without an "
              "image)")
    if without_mask:
        lossy = sorted(p.name for p in mask_dir.iterdir() if p.suffix.lower() in LOSSY_SUFFIXES)
        if lossy:
            raise ValueError(f"{mask_dir} holds {len(lossy)} masks saved as JPEG (first: "
                             f"{lossy[0]}), which are not used: lossy compression changes the "
                             "class values and colours along every edge; save the masks as PNG "
                             f"{counts}")
        raise ValueError(f"image {images[without_mask[0]]} has no mask {without_mask[0]}.png in "
                         f"{mask_dir} {counts}")
    if without_image:
        raise ValueError(f"mask {masks[without_image[0]]} has no image in {image_dir} {counts}")


def folder(root, split: str = "train", transform=None, num_classes: int | None = None,
           class_names=None,
           reduce_zero_label: bool = False, ignore_index: int = IGNORE_INDEX) -> FolderDataset:
    """Your own dataset: ``<root>/{train,val[,test]}/{images,masks}``, classes from
    ``<root>/classes.json`` or the arguments (see folder_classes). Masks are .png class indices
    (``ignore_index`` ignored, ``reduce_zero_label`` as ADE20K) or RGB colours of
    classes.json's palette."""
    if split not in FOLDER_SPLITS:
        raise ValueError(f"a folder dataset's split is train, val or test, not {split!r}")
    if root is None:
        raise ValueError("a folder dataset needs its folder: --data-root PATH (holding train/ and "
                         "val/)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    classes = folder_classes(root, num_classes, class_names)
    labels = FolderLabels(len(classes["names"]), ignore_index, reduce_zero_label,
                          classes["palette"], classes["ignore_colours"])
    return FolderDataset(root, split, labels, classes["names"], classes["draw_palette"], transform)
