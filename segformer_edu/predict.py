"""Segment a folder of images with a trained model: class-index PNGs and colour overlays (book chapter 8).

    python -m segformer_edu.predict --model runs/my_run --images photos/ --out predictions/

``--model`` is a training run's ``out_dir`` (its ``best.pt``, or that file itself), a Hugging Face layout folder
(``config.json`` + ``model.safetensors``), a hub id, or any checkpoint file ``SegFormer.from_pretrained`` reads.
``OUT/masks/<stem>.png`` holds the class indices (a palette-mode PNG: viewers show the classes' colours, numpy reads
the indices); ``OUT/overlays/<stem>.jpg`` the image with the classes' colours blended in.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from . import errors
from .data import ADE20K_CLASSES, CAMVID_CLASSES, IMAGE_SUFFIXES, read_image
from .model import SegFormer
from .palette import CAMVID_PALETTE, ade20k_palette, colorize
from .transforms import EvalTransform

RUN_CHECKPOINT = "best.pt"  # what a training run keeps of its best validation
OVERLAY_ALPHA = 0.5  # weight of the class colours over the image


def training_state(path: Path, device: torch.device) -> dict | None:
    """The dict segformer_edu.train saves (model, config, classes...) if ``path`` holds one, else None."""
    if not (path.is_file() and path.suffix == ".pt"):
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a pickle error says little; name the file
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    return state if isinstance(state, dict) and "model" in state and "config" in state else None


def from_training_state(state: dict) -> tuple[SegFormer, dict]:
    """A training checkpoint's model and {"names", "palette", "scale"} (older checkpoints: the dataset's own)."""
    from .checkpoint import evaluated_weights, infer_config_name

    weights, config = evaluated_weights(state), state["config"]
    num_classes = weights["decoder.classifier.weight"].shape[0]
    model = SegFormer.from_config(infer_config_name(weights), num_classes=num_classes)  # the widths tell the variant
    model.load_state_dict(weights)
    dataset = config.get("dataset")
    default_names = {"camvid": CAMVID_CLASSES, "ade20k": ADE20K_CLASSES}.get(dataset)
    default_palette = CAMVID_PALETTE if dataset == "camvid" else ade20k_palette(num_classes)
    names = state.get("classes") or default_names or [f"class_{k}" for k in range(num_classes)]
    palette = state.get("palette") or default_palette
    return model, {"names": list(names), "palette": [tuple(c) for c in palette], "scale": config.get("val_scale")}


def load_model(source: str, device: torch.device) -> tuple[SegFormer, dict]:
    """(model in eval mode on ``device``, {"names", "palette", "scale"}) from a run folder, a training checkpoint,
    a Hugging Face folder, a hub id, or an official checkpoint file."""
    from .checkpoint import resolve

    path = Path(source).expanduser()
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        path = path / RUN_CHECKPOINT
    elif path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model in {path}: expected {RUN_CHECKPOINT} (a training run's out_dir) or "
                                f"config.json + model.safetensors (a Hugging Face folder)")
    state = training_state(path, device)
    if state is not None:
        model, info = from_training_state(state)
    else:
        _, hf_config = resolve(source)  # downloads a hub id once; from_pretrained then finds it cached
        model = SegFormer.from_pretrained(source)
        num_classes = model.config.num_classes
        id2label = (hf_config or {}).get("id2label", {})
        info = {"names": [id2label.get(str(k), f"class_{k}") for k in range(num_classes)], "scale": None,
                "palette": list(ade20k_palette(num_classes))}
    return model.to(device).eval(), info


def image_files(folder: Path) -> list[Path]:
    """The images (.jpg, .jpeg, .png) directly in ``folder``, sorted; an error if there are none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def prepare_output(out: Path) -> tuple[Path, Path]:
    """OUT/masks and OUT/overlays, created and tried with a write now rather than after the first image."""
    masks, overlays = out / "masks", out / "overlays"
    try:
        for folder in (masks, overlays):
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write_test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to {out}: {error.strerror or error}") from error
    return masks, overlays


def prepare(image: np.ndarray, config, scale=None) -> torch.Tensor:
    """An RGB image (H, W, 3) uint8 -> the model's input (1, 3, h, w): resized to ``scale`` (long, short) if given,
    normalised; an image too small for ``config`` is refused with a clear message, not a shape error inside."""
    from .encoder import check_images

    tensor, _ = EvalTransform(scale=scale)(image, np.zeros(image.shape[:2], np.uint8))  # (3, h, w)
    check_images(tensor[None], config)
    return tensor[None]


@torch.no_grad()
def segment(model: nn.Module, image: np.ndarray, scale=None) -> np.ndarray:
    """An RGB image (H, W, 3) uint8 -> class indices (H, W) uint8, as train.evaluate scores it: the image resized to
    ``scale`` (long, short) if given, logits (1, K, h/4, w/4) upsampled bilinearly to (H, W), argmax."""
    device = next(model.parameters()).device
    logits = model(prepare(image, model.config, scale).to(device))
    logits = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, label: np.ndarray, palette) -> np.ndarray:
    """The image (H, W, 3) with each pixel's class colour blended in: (H, W, 3) uint8."""
    colours = colorize(label, palette).astype(np.float32)
    return (OVERLAY_ALPHA * colours + (1 - OVERLAY_ALPHA) * image).round().astype(np.uint8)


def save_mask(label: np.ndarray, palette, path: Path) -> None:
    """Class indices (H, W) as a palette-mode PNG: the pixel values are the indices, the PNG palette their colours."""
    mask = Image.fromarray(label)  # "L"; putpalette makes it "P" without touching the values
    flat = [channel for colour in palette for channel in colour]
    mask.putpalette(flat + [0] * (768 - len(flat)))
    mask.save(path)


def predict_folder(model: nn.Module, image_dir, out_dir, palette, scale=None, progress: bool = True) -> list[Path]:
    """Segment every image in ``image_dir``; write OUT/masks/<stem>.png and OUT/overlays/<stem>.jpg; the masks."""
    files = image_files(Path(image_dir))
    masks, overlays = prepare_output(Path(out_dir))
    written = []
    for path in tqdm(files, desc="predicting", unit="image", disable=not progress):
        image = np.asarray(read_image(path))  # (H, W, 3)
        label = segment(model, image, scale)
        save_mask(label, palette, masks / f"{path.stem}.png")
        Image.fromarray(overlay(image, label, palette)).save(overlays / f"{path.stem}.jpg", quality=90)
        written.append(masks / f"{path.stem}.png")
    return written


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m segformer_edu.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="a training run's out_dir (best.pt), a checkpoint file, a Hugging Face folder or hub id")
    parser.add_argument("--images", required=True, help="folder of images (.jpg, .jpeg, .png)")
    parser.add_argument("--out", required=True, help="output folder: masks/ (class indices) and overlays/")
    parser.add_argument("--scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                        help="resize images to this (long, short) scale first (default: the run's val_scale, if any)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        image_files(Path(args.images))  # the cheap checks before loading a model
        prepare_output(Path(args.out))
        model, info = load_model(args.model, device)
        scale = tuple(args.scale) if args.scale else info["scale"]
        written = predict_folder(model, args.images, args.out, info["palette"], scale, args.progress)
    except (ImportError, OSError, ValueError) as error:  # missing files, unwritable output, bad checkpoints: a message
        return errors.report(error)
    print(f"{len(written)} images: class indices in {Path(args.out) / 'masks'}, overlays in "
          f"{Path(args.out) / 'overlays'}; classes {', '.join(info['names'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
