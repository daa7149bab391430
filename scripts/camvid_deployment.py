"""The book's CamVid B0 on all 233 test frames outside PyTorch and under the test-time protocols (chapter 10).

    python scripts/camvid_deployment.py --out book/results/camvid_b0_cpu/deployment.json

1. Runtimes: PyTorch, then the exported file in onnxruntime: float32, int8 dynamic, int8 static (calibrated on 16
   validation frames). The frames as the run was tested (resized to 240x180, aligned to 256x192; predictions
   resized to the 360x480 labels, void ignored).
2. Protocols, in PyTorch: whole image at the test scale (the reference); whole image at the frames' native
   480x360; sliding 180x240 windows (the training crop) over 480x360, stride 120x160; multi-scale + flip at the
   paper's six ratios 0.5-1.75 of the test scale.

mIoU, per-class IoU, pixel accuracy and the seconds spent in the model (data reading excluded). Run on an
otherwise idle machine: the times are part of the result.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from segformer_edu import export
from segformer_edu.assets import trained_camvid_model
from segformer_edu.system import machine_record, refuse_under_load
from segformer_edu.datasets import build_split
from segformer_edu.evaluation import evaluate
from segformer_edu.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TEST_SCALE = (240, 180)  # (long, short) side, as the run was validated and tested
PROTOCOLS = {  # name: (scale of the frames given to the protocol, keyword arguments of inference.segment_scores)
    "whole, 240x180 (test scale)": (TEST_SCALE, None),
    "whole, 480x360 (native)": ((480, 360), None),
    "slide 180x240 windows, 480x360": ((480, 360), {"mode": "slide", "crop_size": (180, 240),
                                                     "stride": (120, 160)}),
    "multi-scale 0.5-1.75 + flip, 240x180": (TEST_SCALE, {"scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
                                                           "flip": True}),
}


def test_set(scale, size_divisor=32):
    """CamVid's test frames resized to ``scale``; ``size_divisor=None`` keeps 480x360 as it is."""
    from segformer_edu import data
    from segformer_edu.transforms import EvalTransform

    return data.camvid(None, "test", EvalTransform(scale=scale, size_divisor=size_divisor))


def calibration_batches(count: int = 16):
    """Every sixth validation frame at the test scale: the static int8 model's activation ranges."""
    val, _ = build_split(TrainConfig(dataset="camvid", val_scale=TEST_SCALE), "val")
    return export.dataset_calibration_batches(val, count)


def summary(metrics: dict) -> dict:
    keep = ("miou", "acc", "iou", "model_seconds")
    return {key: metrics[key] for key in keep if key in metrics}


def runtimes(model, frames, folder: Path, threads: int) -> dict:
    cpu = torch.device("cpu")
    fp32 = export.to_onnx(model, folder / "b0.onnx")
    files = {"onnxruntime fp32": fp32,
             "onnxruntime int8 dynamic": export.quantize_int8(fp32, folder / "dynamic.onnx"),
             "onnxruntime int8 static": export.quantize_int8(fp32, folder / "static.onnx", calibration_batches())}
    results = {"PyTorch fp32": summary(evaluate(model, frames, 11, cpu))}
    for name, path in files.items():
        results[name] = summary(evaluate(export.OnnxRuntimeModel(path, threads), frames, 11, cpu))
        results[name]["file_mb"] = path.stat().st_size / 1e6
        print(name, results[name]["miou"], flush=True)
    return results


def protocols(model) -> dict:
    results = {}
    for name, (scale, protocol) in PROTOCOLS.items():
        frames = test_set(scale, size_divisor=32 if scale == TEST_SCALE else None)
        results[name] = summary(evaluate(model, frames, 11, torch.device("cpu"), protocol=protocol))
        results[name] |= {"input": list(frames[0][0].shape[1:]), "protocol": protocol}
        print(name, results[name]["miou"], results[name]["model_seconds"], flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "book/results/camvid_b0_cpu/deployment.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start above this 1-minute load average (the times are results)")
    args = parser.parse_args()
    load_before = refuse_under_load(args.max_load)

    torch.set_num_threads(args.threads)
    model = trained_camvid_model(ROOT / "book")
    frames = test_set(TEST_SCALE)
    start = time.perf_counter()
    with torch.no_grad(), tempfile.TemporaryDirectory() as folder:
        by_runtime = runtimes(model, frames, Path(folder), args.threads)
        by_protocol = protocols(model)
    result = {**machine_record(load_before), "frames": len(frames),
              "calibration": "16 validation frames (every sixth), 256x192", "runtimes": by_runtime,
              "protocols": by_protocol, "wall_s": time.perf_counter() - start}
    args.out.write_text(json.dumps(result, indent=1, default=list) + "\n")


if __name__ == "__main__":
    main()
