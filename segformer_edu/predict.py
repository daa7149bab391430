"""Segment images with a trained model: class-index PNGs and colour overlays (book chapter 8).

    python -m segformer_edu.predict --model runs/my_run --images photos/ --out predictions/
    python -m segformer_edu.predict --model runs/my_run --images photo.jpg --out predictions/

``--model`` is a training run's ``out_dir`` (its ``best.pt``, or that file itself), a Hugging Face
layout folder (``config.json`` + ``model.safetensors``), a hub id, or any checkpoint file
``SegFormer.from_pretrained`` reads. ``OUT/masks/<stem>.png`` holds the class indices (a
palette-mode PNG: viewers show the classes' colours, numpy reads the indices);
``OUT/overlays/<stem>.jpg`` the image with the classes' colours blended in. Two inputs with one stem
(``a.jpg``, ``a.png``) keep their whole names (``a.jpg.png``, ``a.png.png``); an existing output is
replaced only with ``--overwrite``. An image that cannot be read, or is too small for the model, is
skipped and named, and the others are segmented.

Without ``--scale``, images are segmented at the model's own scale: the run's validation scale if
the checkpoint records one (every image resized to it, as the run validated), else the scale it
trained at or, for a checkpoint without either, the paper's 2048x512, for images larger than it
(smaller ones keep their size). The mask is upsampled to the image's full size. A scale that would
need more memory than is available is refused before the first image, with one that fits.

In Python, ``preprocess`` turns a PIL image or an array into the model's input the way this command
does.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from . import cli
from .data import IMAGE_SUFFIXES, as_rgb, read_image
from .folder_dataset import check_colours
from .datasets import entry_of
from .inference import SCORE_CHUNK_BYTES, predict_labels
from .models import load_with_info
from .palette import ade20k_palette, colorize
from .transforms import preprocess

OVERLAY_ALPHA = 0.5  # weight of the class colours over the image
PAPER_SCALE = (2048, 512)  # mmseg's test scale for ADE20K: a checkpoint that records none gets it
# bytes per full-size pixel beside the scores: the decoded image, the best score and its class,
# the mask and the overlay's float copies
FULL_PIXEL_BYTES = 64


def load_model(source: str, device: torch.device) -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``: SegFormer or the CNN, whichever ``source`` holds;
    {"names", "palette", "scale"}) from anything ``models.load`` takes: a run folder, a training
    checkpoint, a Hugging Face folder, a hub id, an official file. Names and colours a checkpoint
    lacks come from its dataset (CamVid's, ADE20K's; a stored folder's by its class names), else
    ``class_k`` and ADE20K's."""
    model, info = load_with_info(source)
    num_classes = model.config.num_classes
    entry = entry_of(info.get("dataset"), info["names"])
    default_names = entry.classes if entry is not None else None
    names = info["names"] or default_names or [f"class_{k}" for k in range(num_classes)]
    default_palette = (entry.palette if entry is not None else None) or ade20k_palette(num_classes)
    palette = info["palette"] or default_palette
    try:  # a model trained before palettes were checked may hold a colour that cannot be drawn
        check_colours([list(colour) for colour in palette], f"{source}'s palette", distinct=False)
    except ValueError as error:
        print(f"warning: {error}; drawing with the default colours instead", file=sys.stderr)
        palette = default_palette
    model.class_names = list(names)
    return model.to(device).eval(), {"names": list(names), "palette": [tuple(c) for c in palette],
                                     "scale": info["scale"], "own_scale": own_scale(info)}


def own_scale(info: dict) -> tuple[tuple[int, int], str, bool]:
    """(scale (long, short), what it is, shrink_only): what predict segments at without
    ``--scale``. The run's validation scale, as it validated (every image resized to it); else the
    scale it trained at, else the paper's ADE20K scale, for the images larger than it (smaller ones
    keep their size, as a run without a validation scale validated them)."""
    if info.get("scale"):
        return tuple(info["scale"]), "the run's validation scale", False
    if info.get("train_scale"):
        return tuple(info["train_scale"]), "the scale the run trained at", True
    return PAPER_SCALE, "the paper's scale", True


def usable_device(name: str | None) -> torch.device:
    """The device ``name`` (default: cuda if this torch sees a GPU, else cpu), or a ValueError that
    says why this torch cannot use it, before anything is loaded or written."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name}: not a device ({cli.one_line(error)})") from error
    build = f"this torch ({torch.__version__})"
    if device.type == "cuda" and not torch.cuda.is_available():
        why = ("is built without CUDA: install a CUDA build of torch" if torch.version.cuda is None
               else "sees no CUDA GPU")
        raise ValueError(f"--device {name}: {build} {why}, or pass --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: {build} sees {torch.cuda.device_count()} GPUs, "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        why = "is built without MPS" if not torch.backends.mps.is_built() else "cannot use MPS here"
        raise ValueError(f"--device {name}: {build} {why} (MPS needs Apple silicon and macOS 12.3 "
                         "or later); pass --device cpu")
    try:  # any other kind (xpu...): one allocation says whether it works
        torch.empty(0, device=device)
    except Exception as error:  # torch raises RuntimeError, AssertionError... by backend
        raise ValueError(f"--device {name}: {build} cannot use it ({cli.one_line(error)}); "
                         "pass --device cpu") from error
    return device


def image_files(source: Path) -> list[Path]:
    """``source`` itself if it is an image file, else the images (IMAGE_SUFFIXES) directly in the
    folder ``source``, sorted; an error naming the path if there are none."""
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{source} is not an image ({', '.join(IMAGE_SUFFIXES)}): pass an "
                             "image or a folder")
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"no image or folder at {source}: pass an image file or a folder "
                                "of images")
    files = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    return files


def other_files(source: Path) -> list[Path]:
    """The files in the folder ``source`` that ``image_files`` leaves out (hidden files aside):
    named, so that no photo is passed over without a word."""
    if not source.is_dir():
        return []
    return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in IMAGE_SUFFIXES)


def output_names(files: list[Path]) -> dict[Path, str]:
    """The name each input's outputs take: its stem, or its whole name where two inputs share a
    stem."""
    stems = [path.stem for path in files]
    names = {path: path.stem if stems.count(path.stem) == 1 else path.name for path in files}
    # e.g. a.jpg beside a.jpg.png: no name keeps them apart
    if len(set(names.values())) != len(names):
        clash = sorted(name for name in names.values() if list(names.values()).count(name) > 1)
        raise ValueError(f"inputs that would share an output name ({clash[0]}): rename one of them")
    return names


def prepare_output(out: Path, names: list[str], overwrite: bool = False) -> tuple[Path, Path]:
    """OUT/masks and OUT/overlays, created and tried with a write now rather than after the first
    image; an output that exists already is refused unless ``overwrite``."""
    masks, overlays = out / "masks", out / "overlays"
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise NotADirectoryError(f"cannot write to {out}: {blocker} is a file, not a folder; pass "
                                 "another --out")
    existing = [masks / f"{name}.png" for name in names if (masks / f"{name}.png").exists()]
    existing += [overlays / f"{name}.jpg" for name in names if (overlays / f"{name}.jpg").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} outputs would be replaced): "
                              "pass another --out, or --overwrite to replace them")
    try:
        for folder in (masks, overlays):
            cli.try_writing(folder)
    except OSError as error:
        raise PermissionError(f"cannot write to {out}: {error.strerror or error}; pass another "
                              "--out") from error
    return masks, overlays


def segment_image(model: nn.Module, image, scale=None) -> np.ndarray:
    """An RGB image (PIL, or (H, W, 3) uint8) -> its mask, class indices (H, W) uint8, as
    evaluation.evaluate scores it (``inference.predict_labels``): the image resized to ``scale``
    (long, short) if given, logits upsampled bilinearly to (H, W), argmax."""
    image = np.asarray(as_rgb(image) if isinstance(image, Image.Image) else image)
    device = next(model.parameters()).device
    labels = predict_labels(model, preprocess(image, scale, model.config).to(device),
                            image.shape[:2])  # (1, H, W)
    return labels[0].to(torch.uint8).cpu().numpy()


def floats_per_token(config) -> int:
    """Activation floats per 1/4-resolution token at the forward pass's peak: SegFormer's from its
    widths (``memory_needed``); the CNN's (DeepLabV3+ / MobileNetV2, whose ASPP works on 2,560
    channels at 1/8) measured on a CPU: 2.66 GB at 2048x1536, 3,390 floats a token."""
    if hasattr(config, "embed_dims"):
        width, ratio = config.embed_dims[0], config.mlp_ratios[0]
        return 9 * config.decoder_dim + config.num_classes + width * (4 + 3 * ratio)
    return 3600 + config.num_classes


def memory_needed(config, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> int:
    """Bytes that segmenting an image of ``image_hw`` takes when the model sees it at ``input_hw``:
    the forward pass at 1/4 resolution (per token: the decoder's four upsampled maps, their
    concatenation and the fused map, 9 x decoder_dim floats; the logits; stage 1's block, its
    Mix-FFN 3 times (4 x width) beside its input) and the full-size mask and overlay. Measured on a
    CPU (torch 2.13), the peak was 2 to 22 % under this for B0 and B2 from 1024x768 to 4000x3000
    (B0 at 4000x3000: 7.8 GB measured, 9.0 GB estimated)."""
    tokens = -(-input_hw[0] // 4) * -(-input_hw[1] // 4)
    per_token = floats_per_token(config)
    pixels = image_hw[0] * image_hw[1]
    scores = min(config.num_classes, max(1, SCORE_CHUNK_BYTES // (4 * pixels))) * 4 * pixels
    return 4 * tokens * per_token + scores + FULL_PIXEL_BYTES * pixels


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this process on ``device``: the GPU's free memory, or on Linux the memory
    the kernel (and a container's limit) can give without swapping; None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        free = int(next(line.split()[1] for line in meminfo.splitlines()
                        if line.startswith("MemAvailable:"))) * 1024
    except (OSError, StopIteration, ValueError):
        return None
    try:  # cgroup v2: a container's own limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def image_scale(image_hw: tuple[int, int], scale, shrink_only: bool):
    """The scale one image is segmented at: ``scale``, or with ``shrink_only`` its own size where it
    fits within ``scale`` already."""
    if scale and shrink_only and max(image_hw) <= max(scale) and min(image_hw) <= min(scale):
        return None
    return scale


def check_memory(files: list[Path], config, scale, shrink_only: bool, available: int | None,
                 what: str) -> None:
    """One line, before the first image, if the largest of ``files`` would need more memory than
    ``available`` at ``scale``: with the largest scale of the same shape that fits."""
    from .data import image_size
    from .transforms import eval_input_size

    sizes = {}
    for path in files:
        try:
            sizes[path] = image_size(path)  # from the header; an unreadable file is skipped later
        except ValueError:
            continue
    if available is None or not sizes:
        return

    def need(path, asked):
        hw = sizes[path]
        return memory_needed(config, hw, eval_input_size(*hw, image_scale(hw, asked, shrink_only)))

    largest = max(sizes, key=lambda path: need(path, scale))
    needed = need(largest, scale)
    if needed <= available:
        return
    height, width = sizes[largest]
    long, short = scale or (max(height, width), min(height, width))
    gb = 1e9
    tried = (round(long * 0.9 ** k) for k in range(1, 60))
    for side in tried:
        smaller = (side, max(1, round(short * side / long)))
        if min(eval_input_size(height, width, smaller)) < config.min_side:
            break
        if need(largest, smaller) <= available:
            raise MemoryError(f"{largest} ({height}x{width}) at {what} needs about "
                              f"{needed / gb:.1f} GB, more than the {available / gb:.1f} GB "
                              f"available: pass --scale {smaller[0]} {smaller[1]} (about "
                              f"{need(largest, smaller) / gb:.1f} GB) or smaller")
    raise MemoryError(f"{largest} ({height}x{width}) needs about {needed / gb:.1f} GB at {what}, "
                      f"and its full-size mask alone more than the {available / gb:.1f} GB "
                      "available: resize it first")


def overlay(image: np.ndarray, label: np.ndarray, palette) -> np.ndarray:
    """The image (H, W, 3) with each pixel's class colour blended in: (H, W, 3) uint8."""
    colours = colorize(label, palette).astype(np.float32)
    return (OVERLAY_ALPHA * colours + (1 - OVERLAY_ALPHA) * image).round().astype(np.uint8)


def save_mask(label: np.ndarray, palette, path: Path) -> None:
    """Class indices (H, W) as a palette-mode PNG: the pixel values are the indices, the PNG palette
    their colours."""
    mask = Image.fromarray(label)  # "L"; putpalette makes it "P" without touching the values
    flat = [channel for colour in palette for channel in colour]
    mask.putpalette(flat + [0] * (768 - len(flat)))
    mask.save(path)


def predict_each(model: nn.Module, files: list[Path], names: dict[Path, str], masks: Path,
                 overlays: Path, palette, scale=None, progress: bool = True,
                 shrink_only: bool = False):
    """Segment each file; yield (file, its mask written, or None and why it was skipped): an image
    that cannot be read or is too small for the model is named, and the next one segmented. With
    ``shrink_only``, an image within ``scale`` keeps its size."""
    bar = tqdm(files, desc="predicting", unit="image", disable=not progress)
    for path in bar:
        try:
            image = np.asarray(read_image(path))  # (H, W, 3)
            label = segment_image(model, image, image_scale(image.shape[:2], scale, shrink_only))
        except ValueError as error:
            bar.write(f"skipped {path}: {cli.one_line(error)}", file=sys.stderr)
            yield path, None, cli.one_line(error)
            continue
        save_mask(label, palette, masks / f"{names[path]}.png")
        blended = Image.fromarray(overlay(image, label, palette))
        blended.save(overlays / f"{names[path]}.jpg", quality=90)
        yield path, masks / f"{names[path]}.png", None


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog="python -m segformer_edu.predict",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a training run's out_dir (best.pt), a "
                                                       "checkpoint file, a Hugging Face folder or "
                                                       "hub id")
    parser.add_argument("--images", required=True, help="an image, or a folder of images (.jpg, "
                                                        ".png, .webp, .bmp, .tif)")
    parser.add_argument("--out", required=True, help="output folder: masks/ (class indices) and "
                                                     "overlays/")
    parser.add_argument("--scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                        help="resize images to this (long, short) scale first (default: the "
                             "model's own scale, the run's val_scale or training scale, else 2048 "
                             "512, for images larger than it; the mask is upsampled to full size)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: cuda "
                                                       "if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist "
                                                                 "already")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar")
    return parser.parse_args(argv)


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty: a failed run leaves no empty
    output folders behind."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    # the folders this run would create, deepest first, so that it can remove them if it fails
    new_folders = [p for p in (out / "masks", out / "overlays", out, *out.parents)
                   if not p.exists()]
    try:
        return run(args, out)
    finally:
        remove_empty(new_folders)


def run(args, out: Path) -> int:
    """predict's work, once the command line is parsed: its exit status."""
    written, skipped = [], {}
    try:
        device = usable_device(args.device)
        files = image_files(Path(args.images))  # the cheap checks before loading a model
        others = other_files(Path(args.images))
        if others:
            print(f"note: {len(others)} files in {args.images} are not images of a kind this reads "
                  f"({', '.join(IMAGE_SUFFIXES)}) and are left out: "
                  f"{', '.join(p.name for p in others[:5])}{'...' if len(others) > 5 else ''}",
                  file=sys.stderr)
        names = output_names(files)
        masks, overlays = prepare_output(out, list(names.values()), args.overwrite)
        model, info = load_model(args.model, device)
        scale, what, shrink_only = info["own_scale"]
        what = f"{what}, {scale[0]} {scale[1]}"
        if args.scale:  # applied as evaluation applies a scale: every image resized to it
            scale, shrink_only = tuple(args.scale), False
            what = f"--scale {scale[0]} {scale[1]}"
        check_memory(files, model.config, scale, shrink_only, available_memory(device), what)
        for path, mask, why in predict_each(model, files, names, masks, overlays, info["palette"],
                                            scale, args.progress, shrink_only):
            if mask is None:
                skipped[path] = why
            else:
                written.append(mask)
    except KeyboardInterrupt:
        done = "nothing was written"
        if written:
            done = f"the {len(written)} masks written are in {out}"
        print(f"interrupted: {done}", file=sys.stderr)
        return cli.INTERRUPTED
    except (ImportError, OSError, ValueError, MemoryError) as error:  # missing files, bad models...
        return cli.report(error)
    where = f"class indices in {masks}, overlays in {overlays}"
    if skipped:
        print(f"{len(written)} of {len(files)} images segmented ({where}); skipped {len(skipped)} "
              f"(said above): {', '.join(path.name for path in skipped)}", file=sys.stderr)
        return cli.FAILED
    print(f"{len(written)} images: {where}; classes {', '.join(info['names'])}")
    return cli.DONE


if __name__ == "__main__":
    sys.exit(main())
