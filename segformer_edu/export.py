"""Export to ONNX, to run SegFormer outside PyTorch (onnxruntime, TensorRT...; book chapter 10).

    python -m segformer_edu.export --model runs/my_run --out model.onnx
    python -m segformer_edu.export --model runs/my_run --out model.int8.onnx --calibration IMAGES

The graph is PyTorch's own: ``torch.onnx.export(..., dynamo=True)`` traces the model with
``torch.export`` and onnxscript translates the trace, one ONNX op per aten op (attention becomes
MatMul, Softmax, MatMul; the spatial reduction a strided Conv, then LayerNormalization).

What is dynamic (``dynamic=True``):
  - the batch, the height and the width: input ``images`` (B, 3, H, W) float32, ImageNet-normalised
    as for PyTorch; output ``logits`` (B, num_classes, ceil(H / 4), ceil(W / 4)), at 1/4 resolution
    like ``model(x)``: upsampling and argmax stay with the caller, as in ``predict``.
What is not:
  - the smallest side, ``model.config.min_side`` (29 px for B0-B5). PyTorch refuses smaller images
    with a message; the ONNX graph has no such check, and onnxruntime fails inside the first
    reduction conv ("Invalid input shape"). The file's metadata records it (with the normalisation
    and the class names), and ``OnnxRuntimeModel`` checks it.
  - the channels (3) and the dtype (float32); the number of classes and the weights are constants
    of the file.
The trace assumes each reduced map is wider than one pixel (PyTorch specialises sizes 0 and 1), but
every op in the graph is size-generic: tests/test_export.py checks 29x45, where stage 1's reduced
map is 1x1, against PyTorch.
"""

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cli
from .encoder import check_image_shape, check_normalised

# the example the trace runs on: any size >= min_side whose reduced maps are all > 1 px
TRACE_SIZE = (64, 64)
# LayerNormalization, in every block, is an ONNX op from opset 17 on; the exporter writes 18 and
# converts to another opset on request
FIRST_OPSET = 17


def check_opset(opset: int | None) -> None:
    """Refuse, before any work, an opset that the file could not be written in (the exporter would
    write its own 18 instead, after a converter's traceback)."""
    if opset is None:
        return
    try:
        import onnx
    except ImportError:
        return  # to_onnx says what to install
    newest = onnx.defs.onnx_opset_version()
    if not FIRST_OPSET <= opset <= newest:
        raise ValueError(f"--opset {opset}: pass {FIRST_OPSET} to {newest} (SegFormer's "
                         f"LayerNormalization exists from opset {FIRST_OPSET} on; this onnx "
                         f"{onnx.__version__} knows up to {newest}), or leave --opset out for the "
                         "exporter's 18")


def to_onnx(model: nn.Module, path, opset: int | None = None, dynamic: bool = True,
            size: tuple[int, int] = TRACE_SIZE, class_names: list[str] | None = None) -> Path:
    """Write ``model`` (images (B, 3, H, W) -> logits (B, K, H/4, W/4)) to ``path`` as ONNX; return
    the path.

    ``dynamic=True``: batch, height and width are free (height and width >=
    ``model.config.min_side``); ``dynamic=False``: the graph is fixed to one image of ``size`` (H,
    W). ``opset=None``: the exporter's default. The file's metadata (``model_metadata``) records the
    normalisation, the smallest side and ``class_names``.
    """
    try:
        import onnx
        # the dynamo exporter's translator, imported here so that one message names both
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("export needs onnx and onnxscript: pip install onnx onnxscript"
                          ) from error
    check_opset(opset)
    path = Path(path)
    config = model.config
    # batch 2, not 1: torch.export specialises a dimension that is 1 in the example to a constant 1
    device = next(model.parameters()).device
    example = torch.randn(2 if dynamic else 1, config.in_channels, *size, device=device)
    # names, not Dim("height", min=29): the exporter makes them Dim.DYNAMIC and names the ONNX axes
    # after them. A Dim with a range fails: the trace adds guards that reduced maps are not 1 px
    # (see the module docstring)
    dynamic_shapes = {"images": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    program = exported_program(model, example, dynamic_shapes, opset)
    # one file: B5 is 0.3 GB, well under protobuf's 2 GB limit
    program.save(str(path), external_data=False)
    exported = onnx.load(str(path))
    written = next(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        raise RuntimeError(f"the exporter could not convert SegFormer to opset {opset} (it wrote "
                           f"{written}); pass another --opset, or leave it out for 18")
    onnx.helper.set_model_props(exported, model_metadata(config, class_names))
    onnx.save(exported, str(path))
    try:  # full_check also runs ONNX's shape inference
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise RuntimeError(f"the exported file is not valid ONNX at opset {written} "
                           f"({cli.one_line(error)}); pass another --opset, or leave it out for "
                           "18") from error
    return path


def exported_program(model: nn.Module, example: torch.Tensor, dynamic_shapes, opset):
    """torch.onnx.export (dynamo) of ``model`` in eval mode on ``example``; the exporter's own
    notes silenced while it runs, the model's mode and the loggers restored after, and a failure
    said in one line with what to try."""
    was_training = model.training
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    # BatchNorm's running statistics and no dropout: a train-mode export gives other numbers
    model.eval()
    try:
        with warnings.catch_warnings():
            # the exporter's notes on its own internals (torchvision ops it skips, a pytree
            # deprecation), not the model; the logger's level is restored below
            warnings.simplefilter("ignore", FutureWarning)
            registration.setLevel(logging.ERROR)
            # to_onnx checks the opset written, and says a failed conversion in one line
            for logger in CONVERSION_LOGGERS:
                logger.addFilter(only_critical)
            program = torch.onnx.export(model, (example,), dynamo=True,
                                        dynamic_shapes=dynamic_shapes, opset_version=opset,
                                        verbose=False, input_names=["images"],
                                        output_names=["logits"])
    except Exception as error:
        raise RuntimeError(
            f"torch.onnx.export(dynamo=True) failed on this model ({type(error).__name__}: "
            f"{cli.one_line(error)}). Try dynamic=False (one fixed size), another opset, or a "
            "newer torch/onnxscript; torch.export.draft_export(model, (images,)) reports what the "
            "trace cannot handle") from error
    finally:
        model.train(was_training)
        registration.setLevel(level)
        for logger in CONVERSION_LOGGERS:
            logger.removeFilter(only_critical)
    return program


# where the exporter and onnxscript announce a conversion to another opset, and its failure
CONVERSION_LOGGERS = [logging.getLogger(name) for name in ("torch.onnx._internal.exporter._compat",
                                                           "onnxscript.version_converter")]


def only_critical(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.CRITICAL


def model_metadata(config, class_names=None) -> dict[str, str]:
    """What a runtime needs to feed the file and read its output, stored in the file (ONNX
    metadata_props): the graph itself checks neither the smallest side nor the normalisation."""
    from .transforms import IMAGENET_MEAN, IMAGENET_STD

    metadata = {
        "segformer.input": "images (B, 3, H, W) float32: RGB pixels / 255, minus mean, divided by "
                           "std",
        "segformer.mean": json.dumps(IMAGENET_MEAN), "segformer.std": json.dumps(IMAGENET_STD),
        "segformer.min_side": str(config.min_side),
        "segformer.output": "logits (B, K, ceil(H / 4), ceil(W / 4)): upsample bilinearly "
                            "(align_corners=False) to the image's size, then argmax over K",
    }
    if class_names:
        metadata["segformer.classes"] = json.dumps(list(class_names))
    return metadata


def quantize_int8(source, target, calibration=None, op_types=("Conv", "MatMul")) -> Path:
    """int8 weights with onnxruntime's quantization tools; ``source`` and ``target`` are ONNX files.

    ``op_types``: the ops to quantize (SegFormer's weights are all in Conv and MatMul); the others
    stay float32.

    ``calibration=None``: dynamic quantization. Weights are stored as int8 (B0's file: 3.4x
    smaller); activations are quantized on the fly at run time, so no data is needed.
    ``calibration``: an iterable of image batches (B, 3, H, W) float32, normalised as for the model:
    static quantization. The float model runs on them once to record each activation's range
    (min/max); the file gets fixed scales (QuantizeLinear/DequantizeLinear pairs around every Conv
    and MatMul, per-channel weights), which onnxruntime fuses into int8 kernels. LayerNorm, Softmax
    and GELU stay float32.
    """
    try:
        from onnxruntime import quantization as q
    except ImportError as error:
        raise ImportError("--int8 needs onnxruntime: pip install onnxruntime") from error
    # the tools log a suggestion to run their pre-processing (shape inference, graph fusions) first;
    # the exporter's graph already carries its shapes, and onnxruntime fuses the graph when it loads
    # it
    logging.getLogger().addFilter(not_preprocessing_advice)
    try:
        if calibration is None:
            q.quantize_dynamic(str(source), str(target), weight_type=q.QuantType.QInt8,
                               op_types_to_quantize=list(op_types))
        else:
            quantize_static(q, source, target, calibration, op_types)
    finally:
        logging.getLogger().removeFilter(not_preprocessing_advice)
    return Path(target)


def not_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-process" not in record.getMessage()


def quantize_static(q, source, target, calibration, op_types) -> None:
    """``onnxruntime.quantization`` (``q``) static QDQ quantization of ``op_types``, calibrated on
    the batches."""

    class Batches(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            images = next(self.batches, None)
            return None if images is None else {"images": np.asarray(images, dtype=np.float32)}

    q.quantize_static(str(source), str(target), Batches(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8, op_types_to_quantize=list(op_types))


class OnnxRuntimeModel(nn.Module):
    """An exported file run by onnxruntime behind PyTorch's call: ``model(images)`` -> logits, both
    tensors, so whatever takes the PyTorch model (``train.evaluate``, ``inference.segment``) takes
    this one too.

    ``spinning=False``: onnxruntime's threads sleep as soon as a call ends. By default they spin for
    a while to answer the next call sooner, which slows whatever PyTorch runs in between (resizing,
    argmax) on the same cores.
    """

    def __init__(self, path, threads: int | None = None, spinning: bool = False):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spinning else "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # model_metadata's, if the file has it
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.min_side = int(self.metadata.get("segformer.min_side", 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, K, H/4, W/4)
        # PyTorch's message, not onnxruntime's from inside a conv
        check_image_shape(images, 3, self.min_side)
        check_normalised(images)
        (logits,) = self.session.run(None, {"images": images.detach().cpu().float().numpy()})
        return torch.from_numpy(logits)

    def extra_repr(self) -> str:
        return f"{self.path.name}"


def spread(total: int, count: int) -> range:
    """Up to ``count`` indices spread evenly over ``total`` items (every ``total // count``-th)."""
    return range(0, total, max(total // count, 1))[:count]


def calibration_batches(folder, config, scale=None, count: int = 16) -> list[np.ndarray]:
    """Up to ``count`` images of ``folder``, spread over its sorted files, prepared as ``predict``
    prepares them (resized to ``scale`` (long, short) if given, normalised): one (1, 3, h, w)
    float32 batch each."""
    from .data import read_image
    from .predict import image_files, preprocess

    files = image_files(Path(folder))
    return [preprocess(read_image(files[index]), scale, config).numpy()
            for index in spread(len(files), count)]


def dataset_calibration_batches(dataset, count: int = 16) -> list[np.ndarray]:
    """Up to ``count`` images of a dataset of (image (3, h, w), label) pairs, transformed as it
    transforms them, spread as ``calibration_batches``: one (1, 3, h, w) float32 batch each."""
    return [dataset[index][0][None].numpy() for index in spread(len(dataset), count)]


def check_writable(path: Path, overwrite: bool = False) -> None:
    """Create ``path``'s folder and try a write now, rather than after a minute of export; an
    existing file is refused unless ``overwrite``."""
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():  # mkdir would only say "File exists"
        raise NotADirectoryError(f"cannot write {path}: {blocker} is a file, not a folder")
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder: pass a file name, e.g. "
                                f"{path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: pass another --out, or --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write {path}: {error.strerror or error}") from error


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m segformer_edu.export",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a training run's out_dir (best.pt), a "
                                                       "checkpoint file, a Hugging Face folder or "
                                                       "hub id")
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    parser.add_argument("--int8", action="store_true",
                        help="write the int8 model to --out instead of float32: onnxruntime "
                             "dynamic quantization, or static with --calibration")
    parser.add_argument("--calibration", metavar="IMAGES", default=None,
                        help="a folder of images like those the model will see: write the static "
                             "int8 model, calibrated on them (on the book's CPU faster than --int8 "
                             "and than float32: chapter 10)")
    parser.add_argument("--calibration-images", type=int, default=16, metavar="N",
                        help="how many of the folder's images to calibrate on")
    parser.add_argument("--scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                        help="resize calibration images to this (long, short) scale (default: the "
                             "run's val_scale)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the "
                                                                "exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.calibration_images < 1:
        parser.error("--calibration-images must be at least 1")
    return args


def main(argv=None) -> int:
    # run folders, training checkpoints, HF folders, hub ids, official files
    from .predict import load_model

    args = parse_args(argv)
    out = Path(args.out).expanduser()
    fp32 = out.with_name(out.stem + ".fp32.tmp.onnx")
    # renamed to --out when complete: a stopped export leaves none
    partial = out.with_name(f".{out.name}.tmp")
    try:
        check_opset(args.opset)
        check_writable(out, args.overwrite)  # the cheap check before loading a model
        model, info = load_model(args.model, torch.device("cpu"))
        calibration = None
        if args.calibration:  # read before the export, so that a bad folder fails at once
            scale = tuple(args.scale) if args.scale else info["scale"]
            calibration = calibration_batches(args.calibration, model.config, scale,
                                              args.calibration_images)
        if args.int8 or calibration:
            fp32_file = to_onnx(model, fp32, args.opset, class_names=info["names"])
            quantize_int8(fp32_file, partial, calibration)
        else:
            to_onnx(model, partial, args.opset, class_names=info["names"])
        partial.replace(out)
    except KeyboardInterrupt:
        print(f"interrupted: nothing was written to {out}", file=sys.stderr)
        return cli.INTERRUPTED
    except (ImportError, OSError, ValueError, RuntimeError) as error:  # a line, no traceback
        return cli.report(error)
    finally:
        for leftover in (fp32, partial):
            # only what this export wrote: on a read-only disk even unlinking a missing file fails
            if leftover.is_file():
                leftover.unlink()
    kind = ""
    if calibration:
        kind = f", static int8, calibrated on {len(calibration)} images"
    elif args.int8:
        kind = ", int8 weights"
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB{kind}): images (B, 3, H, W) float32, "
          f"H, W >= {model.config.min_side} -> logits (B, {model.config.num_classes}, H/4, W/4)")
    return cli.DONE


if __name__ == "__main__":
    sys.exit(main())
