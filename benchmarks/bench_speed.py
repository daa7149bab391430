"""Speed of SegFormer in practice (book chapter 9): segformer_edu vs transformers vs segformer-pytorch.

Side by side in one process: forward (inference) and forward + backward (a training step without
the optimizer), latency (median) and throughput, peak memory, and achieved TFLOP/s from the
counted FLOPs (2 x the paper's MACs per image forward, 3 x that for forward + backward) with the
fraction of the device's dense bf16 peak. segformer_edu and transformers run the same weights
(exported with ``save_pretrained``); segformer-pytorch 0.0.6 is a different model (its own decoder
and weights, same widths), timed where it runs.

    python benchmarks/bench_speed.py                                   # CPU: B0 and B2, fp32
    python benchmarks/bench_speed.py --variants b0 --reps 5            # a short CPU run
    python benchmarks/bench_speed.py --batch 16 --amp --channels-last --compile off on   # a GPU

Writes JSON and CSV to --out (default book/results/speed_<device>.json, <device> = cpu or the GPU's name).
"""

import argparse
import csv
import json
import os
import re
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from segformer_edu import SegFormer
from segformer_edu.checkpoint import save_pretrained
from segformer_edu.flops import analytic_macs, total
from segformer_edu.system import cpu_name

# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets, by a substring of
# torch.cuda.get_device_name(); the first match wins, so more specific names come first
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "GH200": 989.0, "B200": 2250.0,
    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
}
RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"


def device_slug(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # CPU peaks depend on the exact part and its vector units: not claimed here
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def build(impl: str, variant: str, reference: SegFormer, folder: str):
    """A callable images -> logits (B, K, H/4, W/4) and its module, for one implementation."""
    if impl == "segformer_edu":
        return reference, reference
    if impl == "transformers":
        from transformers import SegformerForSemanticSegmentation

        model = SegformerForSemanticSegmentation.from_pretrained(folder)  # the same weights as `reference`
        return (lambda images: model(pixel_values=images).logits), model
    if impl == "segformer_pytorch":
        from segformer_pytorch import Segformer

        c = reference.config
        model = Segformer(dims=c.embed_dims, heads=c.num_heads, ff_expansion=c.mlp_ratios, reduction_ratio=c.sr_ratios,
                          num_layers=c.depths, decoder_dim=c.decoder_dim, num_classes=c.num_classes)
        return model, model
    raise ValueError(f"unknown implementation {impl!r}")


def measure(run, images, mode: str, reps: int, warmup: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds per call for ``reps`` timed calls after ``warmup`` untimed ones, and the first call's seconds."""
    def step():
        if mode == "forward":
            with torch.inference_mode():
                run(images)
        else:
            run(images).float().mean().backward()

    cuda = device.type == "cuda"
    start = time.perf_counter()
    step()  # the first call: torch.compile compiles here, cuDNN picks its algorithms
    if cuda:
        torch.cuda.synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(reps):
        if cuda:  # CUDA events time the GPU's work, not the Python launch
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return times, first


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["b0", "b2"])
    parser.add_argument("--impls", nargs="+", default=["segformer_edu", "transformers", "segformer_pytorch"])
    parser.add_argument("--modes", nargs="+", default=["forward", "forward+backward"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10, help="timed calls per setting (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def main():
    args = parse_args()
    device = torch.device(args.device)
    out = args.out or RESULTS / f"speed_{device_slug(device)}.json"
    peak = peak_tflops(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()
    load_before = os.getloadavg()[0]  # other processes sharing the machine make timings noisy
    rows = []
    for variant in args.variants:
        torch.manual_seed(0)
        reference = SegFormer.from_config(variant, num_classes=150)
        forward_flops = 2 * total(analytic_macs(reference.config, args.size, args.size))  # per image, as the paper counts
        images = torch.randn(args.batch, 3, args.size, args.size).to(device, memory_format=memory_format)
        with tempfile.TemporaryDirectory() as folder:
            save_pretrained(reference, folder)
            for impl in args.impls:
                for compiled in args.compile:
                    for mode in args.modes:
                        row = dict(impl=impl, variant=variant, mode=mode, size=args.size, batch=args.batch,
                                   dtype="bf16 autocast" if args.amp else "fp32", channels_last=args.channels_last,
                                   compile=compiled)
                        try:
                            run, module = build(impl, variant, reference, folder)
                            module.to(device, memory_format=memory_format).train(mode != "forward")
                            if compiled == "on":
                                run = torch.compile(run)
                            with autocast:
                                times, first = measure(run, images, mode, args.reps, args.warmup, device)
                        except Exception as error:  # segformer-pytorch fails at some sizes; record, go on
                            rows.append(row | dict(error=f"{type(error).__name__}: {str(error)[:200]}"))
                            print(f"{impl} {variant} {mode} compile={compiled}: {rows[-1]['error']}")
                            continue
                        latency = statistics.median(times)
                        flops = forward_flops * args.batch * (1 if mode == "forward" else 3)
                        achieved = flops / latency / 1e12
                        row |= dict(latency_ms=1e3 * latency, latency_ms_min=1e3 * min(times),
                                    latency_ms_max=1e3 * max(times), first_call_s=first, reps=args.reps,
                                    images_per_s=args.batch / latency, gflops_per_image=forward_flops / 1e9,
                                    achieved_tflops=achieved, peak_bf16_tflops=peak,
                                    fraction_of_peak=achieved / peak if peak else None,
                                    peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
                        rows.append(row)
                        print(f"{impl:<18}{variant} {mode:<17} compile={compiled:<3} {row['latency_ms']:9.1f} ms "
                              f"{row['images_per_s']:8.2f} img/s {achieved:7.3f} TFLOP/s")
        if device.type == "cuda":
            torch.cuda.empty_cache()

    result = dict(device=device.type, device_name=torch.cuda.get_device_name(device) if device.type == "cuda"
                  else cpu_name(), threads=torch.get_num_threads(),
                  load_average_before=load_before,  # at the end the benchmark's own threads would count
                  torch=torch.__version__, settings={k: str(v) for k, v in vars(args).items() if k != "out"}, rows=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with out.with_suffix(".csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
