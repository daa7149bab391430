"""Inference speed of one SegFormer-B0 on this CPU: PyTorch eager, torch.compile, and onnxruntime in float32 and
int8 (dynamic and static quantization), in one process (book chapter 10).

    python benchmarks/bench_inference.py --out book/results/inference_speed_cpu.json

The model is the book's CamVid B0 (11 classes, book/results/camvid_b0_cpu), batch 1, at 512x512 (the paper's
ADE20K size) and 360x480 (CamVid's frames). Every runtime gets the same threads (--threads, default: all cores).

Interleaved in blocks: each round runs every (size, runtime) pair in turn, one untimed call then --calls timed
ones; the medians over rounds are reported. Runtimes are not timed call by call in alternation because their
thread pools keep spinning after a call (onnxruntime's by default, PyTorch's OpenMP threads): the next runtime's
first call shares the cores with them. The cost of that is measured too ("alternating": PyTorch eager called
right after onnxruntime, one call each) and recorded.

Run it on an otherwise idle machine: anything else on the cores moves every number.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from segformer_edu import export
from segformer_edu.assets import trained_camvid_model
from segformer_edu.system import cpu_name
from segformer_edu.datasets import build_split
from segformer_edu.train import TrainConfig

SIZES = [(512, 512), (360, 480)]
ROOT = Path(__file__).resolve().parents[1]


def calibration_batches(count: int = 16):
    """Validation frames at the test scale (not test frames): the static int8 model's activation ranges."""
    val, _ = build_split(TrainConfig(dataset="camvid", val_scale=(240, 180)), "val")
    return export.dataset_calibration_batches(val, count)


def build_runtimes(model, folder: Path, threads: int) -> tuple[dict, dict]:
    """name -> function(images) for every runtime, and the seconds each took to prepare."""
    prepare = {}
    start = time.perf_counter()
    fp32 = export.to_onnx(model, folder / "b0.onnx")
    prepare["export"] = time.perf_counter() - start
    start = time.perf_counter()
    dynamic = export.quantize_int8(fp32, folder / "b0.int8_dynamic.onnx")
    prepare["quantize_dynamic"] = time.perf_counter() - start
    start = time.perf_counter()
    static = export.quantize_int8(fp32, folder / "b0.int8_static.onnx", calibration=calibration_batches())
    prepare["quantize_static"] = time.perf_counter() - start
    compiled = torch.compile(model)

    def onnx(path):
        # onnxruntime's default (threads spin after a call), as a deployment running only the model uses it
        session = export.OnnxRuntimeModel(path, threads, spinning=True).session
        return lambda images: session.run(None, {"images": images.numpy()})

    runtimes = {"PyTorch eager": model, "torch.compile": compiled, "onnxruntime fp32": onnx(fp32),
                "onnxruntime int8 dynamic": onnx(dynamic), "onnxruntime int8 static": onnx(static)}
    return runtimes, prepare


def timed_calls(run, images, calls: int) -> list[float]:
    run(images)  # untimed: lets the previous runtime's threads go quiet (and compiles torch.compile's first call)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return times


def measure(runtimes: dict, rounds: int, calls: int) -> list[dict]:
    images = {size: torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)) for size in SIZES}
    compile_seconds = {}
    for size in SIZES:  # torch.compile specialises to each size: compile both before timing
        start = time.perf_counter()
        runtimes["torch.compile"](images[size])
        compile_seconds[size] = time.perf_counter() - start
    times = {(size, name): [] for size in SIZES for name in runtimes}
    for round_ in range(rounds):
        for size in SIZES:
            for name, run in runtimes.items():
                times[size, name] += timed_calls(run, images[size], calls)
        print(f"round {round_ + 1}/{rounds}", flush=True)
    rows = []
    for (size, name), seconds in times.items():
        quartiles = statistics.quantiles(seconds, n=4)
        rows.append({"size": list(size), "runtime": name, "median_ms": 1000 * statistics.median(seconds),
                     "p25_ms": 1000 * quartiles[0], "p75_ms": 1000 * quartiles[2], "calls": len(seconds),
                     "compile_s": compile_seconds[size] if name == "torch.compile" else None})
    return rows


def alternating(runtimes: dict, pairs: int) -> dict:
    """PyTorch eager timed right after an onnxruntime fp32 call, one call each, at 360x480."""
    images = torch.randn(1, 3, *SIZES[1])
    eager, onnx = runtimes["PyTorch eager"], runtimes["onnxruntime fp32"]
    after_onnx = []
    for _ in range(pairs):
        onnx(images)
        start = time.perf_counter()
        eager(images)
        after_onnx.append(time.perf_counter() - start)
    return {"size": list(SIZES[1]), "eager_after_onnxruntime_median_ms": 1000 * statistics.median(after_onnx),
            "pairs": pairs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "book/results/inference_speed_cpu.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = trained_camvid_model(ROOT / "book")
    with torch.no_grad(), tempfile.TemporaryDirectory() as folder:
        runtimes, prepare = build_runtimes(model, Path(folder), args.threads)
        rows = measure(runtimes, args.rounds, args.calls)
        interference = alternating(runtimes, pairs=20)
    result = {"machine": cpu_name(), "threads": args.threads, "batch": 1, "model": "SegFormer-B0, 11 classes",
              "torch": torch.__version__, "onnxruntime": ort.__version__, "rounds": args.rounds,
              "calls_per_round": args.calls, "prepare_s": prepare, "rows": rows, "alternating": interference}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        print(f"{row['size']} {row['runtime']:26s} {row['median_ms']:7.1f} ms")
    print(json.dumps(interference))


if __name__ == "__main__":
    main()
