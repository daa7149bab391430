"""Training speed on a CPU (book chapter 8): the training step and the data pipeline, measured apart.

The step is what ``segformer_edu.train`` does per iteration (forward, loss at full label resolution, backward,
AdamW), on random images of the crop size, in fp32 and under bf16 autocast. The data pipeline is the training
transform (rescale, crop, flip, photometric distortion, normalise) on CamVid frames already decoded in memory,
on one thread, as one data-loading worker runs it. Together they say whether a worker keeps up with the step.

    python benchmarks/bench_cpu_training.py                         # B0, CamVid settings, fp32 and bf16
    python benchmarks/bench_cpu_training.py --crops 180x240 --batch 8 --steps 5

Writes the numbers to --out (default book/results/cpu_training_speed.json), which chapter 8 shows.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from segformer_edu import SegFormer
from segformer_edu.cli import parse_size
from segformer_edu.data import camvid
from segformer_edu.losses import segmentation_loss
from segformer_edu.schedule import build_optimizer
from segformer_edu.system import cpu_bf16_flags, machine_record, refuse_under_load
from segformer_edu.transforms import TrainTransform

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"


def step_images_per_s(variant: str, crop: tuple[int, int], batch: int, dtype, steps: int, channels_last: bool) -> float:
    """Median images/s of full optimizer steps on random data (after two untimed steps)."""
    torch.manual_seed(0)
    model = SegFormer.from_config(variant, num_classes=11).train()
    optimizer, scheduler = build_optimizer(model, lr=1e-4, max_iters=1000, warmup_iters=0)
    images, labels = torch.randn(batch, 3, *crop), torch.randint(0, 11, (batch, *crop))
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = segmentation_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def attention_ms(dtype, batch: int, crop: tuple[int, int], steps: int) -> float:
    """Median ms of forward + backward of stage 1's fused attention (B0: 32 channels, one head, sr = 8)."""
    tokens, keys = (crop[0] // 4) * (crop[1] // 4), (crop[0] // 32) * (crop[1] // 32)
    q = torch.randn(batch, 1, tokens, 32, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(batch, 1, keys, 32, dtype=dtype, requires_grad=True) for _ in range(2))
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v).float().sum().backward()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def pipeline_images_per_s(crop: tuple[int, int], scale: tuple[int, int], frames: list, repeats: int) -> float:
    """Images/s of the training transform on one thread, over in-memory frames."""
    transform = TrainTransform(crop_size=crop, scale=scale, ratio_range=(0.5, 2.0), seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        start = time.perf_counter()
        for _ in range(repeats):
            for image, label in frames:
                transform(image, label)
        return repeats * len(frames) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--crops", nargs="+", type=parse_size, default=[(180, 240), (256, 256), (360, 480)],
                        help="training crops HxW; the resize scale is the crop's (long, short) side x 1 at ratio 1")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (median reported)")
    parser.add_argument("--frames", type=int, default=24, help="CamVid training frames for the pipeline")
    parser.add_argument("--channels-last", action="store_true", help="also time the step in channels-last layout")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_training_speed.json")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start (and to store) when the 1-minute load average exceeds this")
    args = parser.parse_args()

    load_before = refuse_under_load(args.max_load)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, bf16 flags: {cpu_bf16_flags()}, "
          f"load average {load_before:.2f}")
    rows = []
    train = camvid(split="train")
    frames = [train.load(index) for index in range(args.frames)]
    # scale (long, short) for each crop: full-resolution CamVid (480, 360) for crops of 256 and up, half below
    for crop in args.crops:
        scale = (480, 360) if max(crop) >= 256 else (240, 180)
        pipeline = pipeline_images_per_s(crop, scale, frames, repeats=1)
        print(f"crop {crop[0]}x{crop[1]} (scale {scale}): data pipeline {pipeline:6.1f} images/s on one thread")
        rows.append(dict(part="data pipeline (1 thread)", crop=list(crop), scale=list(scale), images_per_s=pipeline))
        layouts = (False, True) if args.channels_last else (False,)
        for dtype in (None, torch.bfloat16):
            for channels_last in layouts:
                speed = step_images_per_s(args.variant, crop, args.batch, dtype, args.steps, channels_last)
                name = "bf16" if dtype else "fp32"
                layout = ", channels-last" if channels_last else ""
                print(f"  {args.variant} step, batch {args.batch}, {name}{layout}: {speed:6.1f} images/s")
                rows.append(dict(part="training step", crop=list(crop), dtype=name, channels_last=channels_last,
                                 batch=args.batch, images_per_s=speed))
    crop = args.crops[0]
    for dtype in (torch.float32, torch.bfloat16):
        ms = attention_ms(dtype, args.batch, crop, args.steps)
        print(f"stage-1 attention forward + backward, batch {args.batch}, {crop[0]}x{crop[1]}, {dtype}: {ms:.1f} ms")
        rows.append(dict(part="stage-1 attention fwd+bwd", crop=list(crop), dtype=str(dtype).split(".")[-1],
                         batch=args.batch, ms=ms))
    result = {**machine_record(load_before), "variant": args.variant, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
