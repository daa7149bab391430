"""SegFormer-B0 against the paper's CNN (DeepLabV3+ / MobileNetV2, output stride 8) on this CPU:
inference latency and training images/s, in one process, the two models interleaved (book
chapter 11; the paper's Table 2 reports the FPS of a GPU).

    python benchmarks/bench_cnn_vs_segformer.py                 # CamVid's sizes, 11 classes
    python benchmarks/bench_cnn_vs_segformer.py --reps 5 --steps 3

Latency: the median of ``--reps`` forward passes (batch 1, fp32, eval mode, no gradients) at each
``--sizes`` (default: 240x192, the stored B0's test size, CamVid's native 480x360 and Table 2's
512x512), the two models taking turns within each repetition, the first of each pair alternating.
Training: the median of ``--steps`` full optimizer steps (forward, loss, backward, step) on random
crops of ``--crop`` in batches of ``--batch``, as ``segformer_edu.train`` ran the stored CamVid runs
(``--runs``: their summary.json): each model's own optimiser and rate, its loss as the trainer
computes it (the CNN's with its auxiliary head) and the runs' autocast (bf16).

Refuses to start when the 1-minute load average exceeds --max-load (the timings must be this
CPU's own) and records it before and after. Writes --out (default
book/results/cnn_vs_segformer_speed_cpu.json).
"""

import json
import statistics
import time
from pathlib import Path

import torch

from segformer_edu import SegFormer, cli
from segformer_edu.cnn import NAME as CNN_NAME
from segformer_edu.cnn import DeepLabV3Plus
from segformer_edu.schedule import build_optimizer
from segformer_edu.system import machine_record, refuse_under_load
from segformer_edu.train import TrainConfig, model_loss

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
MODELS = ("SegFormer-B0", "DeepLabV3+ / MobileNetV2")
RUNS = {"SegFormer-B0": RESULTS / "camvid_b0_cpu",  # the stored runs whose settings are timed
        "DeepLabV3+ / MobileNetV2": RESULTS / "camvid_cnn_cpu"}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def build(name: str, num_classes: int, run_folder: Path):
    """(model, optimizer, loss of a batch) for one of ``MODELS``, as its stored run trained it."""
    # an older run's summary leaves out the options it ran at their defaults
    summary = vars(TrainConfig()) | json.loads((run_folder / "summary.json").read_text())
    torch.manual_seed(0)
    if name == "SegFormer-B0":
        model = SegFormer.from_config("b0", num_classes=num_classes)
    else:
        model = DeepLabV3Plus.from_config(CNN_NAME, num_classes=num_classes)
    optimizer, _ = build_optimizer(model, summary["lr"], summary["weight_decay"],
                                   summary["head_lr_mult"], max_iters=1000, warmup_iters=0,
                                   optimizer=summary["optimizer"], momentum=summary["momentum"])

    def loss(images, labels):
        with torch.autocast("cpu", dtype=DTYPES[summary["dtype"]]):
            return model_loss(model, model, images, labels, {})
    return model, optimizer, loss, summary["dtype"]


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latencies(models: dict, size: tuple[int, int], reps: int) -> dict[str, float]:
    """Median ms of a forward pass of each model, interleaved, after one untimed pass each."""
    images = torch.randn(1, 3, *size)
    times = {name: [] for name in models}
    with torch.no_grad():
        for model, *_ in models.values():
            model.eval()(images)
        for rep in range(reps):
            order = list(models) if rep % 2 == 0 else list(reversed(models))
            for name in order:
                times[name].append(seconds(lambda: models[name][0](images)))
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def training_speeds(models: dict, crop: tuple[int, int], batch: int, steps: int,
                    num_classes: int) -> dict[str, float]:
    """Median images/s of full training steps of each model, interleaved, after two untimed."""
    images, labels = torch.randn(batch, 3, *crop), torch.randint(0, num_classes, (batch, *crop))
    times = {name: [] for name in models}

    def step(name):
        model, optimizer, loss, _ = models[name]
        loss(images, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for model, *_ in models.values():
        model.train()
    for index in range(steps + 2):
        order = list(models) if index % 2 == 0 else list(reversed(models))
        for name in order:
            elapsed = seconds(lambda: step(name))
            if index >= 2:
                times[name].append(elapsed)
    return {name: batch / statistics.median(values) for name, values in times.items()}


def main():
    parser = cli.ArgumentParser(prog="python benchmarks/bench_cnn_vs_segformer.py",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["192x256", "360x480", "512x512"],
                        help="HxW of the latency")
    parser.add_argument("--reps", type=int, default=20, help="timed forward passes per size")
    parser.add_argument("--crop", default="180x240", help="training crop HxW")
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per model")
    parser.add_argument("--num-classes", type=int, default=11, help="CamVid's 11")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start when the 1-minute load average exceeds this")
    parser.add_argument("--out", type=Path, default=RESULTS / "cnn_vs_segformer_speed_cpu.json",
                        help="the JSON it writes")
    args = parser.parse_args()
    sizes, crop = [cli.parse_size(size) for size in args.sizes], cli.parse_size(args.crop)

    load_before = refuse_under_load(args.max_load)
    models = {name: build(name, args.num_classes, RUNS[name]) for name in MODELS}
    rows = []
    for size in sizes:
        for name, ms in latencies(models, size, args.reps).items():
            print(f"{name:26s} {size[0]}x{size[1]}: {ms:8.1f} ms per image", flush=True)
            rows.append({"part": "inference", "model": name, "size": list(size), "batch": 1,
                         "ms": ms})
    speeds = training_speeds(models, crop, args.batch, args.steps, args.num_classes)
    for name, speed in speeds.items():
        print(f"{name:26s} training, {crop[0]}x{crop[1]} crops, batch {args.batch}: "
              f"{speed:6.1f} images/s", flush=True)
        rows.append({"part": "training step", "model": name, "crop": list(crop),
                     "batch": args.batch, "dtype": models[name][3], "images_per_s": speed})
    result = {**machine_record(load_before), "inference_dtype": "fp32",
              "num_classes": args.num_classes, "reps": args.reps, "steps": args.steps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
