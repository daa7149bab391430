"""SegFormer-B0 on a CPU: segformer_edu against transformers' SegformerForSemanticSegmentation, the same
weights, forward (eval) and full training steps (train mode: forward, cross-entropy on logits upsampled to the
labels, backward, AdamW), in float32 and under bf16 autocast (book chapter 9). Ours runs twice: its decoder in
the paper's order, and fused before upsampling (``fuse_first``, the same function; decoder.py).

The models run in one process, interleaved (ours, ours fused first, theirs, ours, ...), so that whatever else the machine does
hits both alike; the median of each setting's timed calls is reported. The training step is the CPU recipe's
(chapter 8): batch 8, 180x240 crops, 11 classes. The script refuses to start under load, and records the
processor, its native bf16 instruction sets, the threads and the load average before and after.

    python benchmarks/bench_cpu_vs_transformers.py                 # writes book/results/cpu_vs_transformers.json
    python benchmarks/bench_cpu_vs_transformers.py --steps 3 --out /tmp/smoke.json --max-load 99  # a smoke test
"""

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import SegformerForSemanticSegmentation

from segformer_edu import SegFormer
from segformer_edu.checkpoint import save_pretrained
from segformer_edu.losses import segmentation_loss
from segformer_edu.system import machine_record, refuse_under_load

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def twin_models(num_classes: int) -> dict:
    """Ours (in both decoder orders) and transformers', with the same random weights (written by our
    save_pretrained)."""
    torch.manual_seed(0)
    ours = SegFormer.from_config("b0", num_classes=num_classes)
    fused = copy.deepcopy(ours)
    fused.decoder.fuse_first = True
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(ours, folder)
        theirs = SegformerForSemanticSegmentation.from_pretrained(folder)
    return {"segformer_edu": (ours, ours), "segformer_edu, fuse first": (fused, fused),
            "transformers": (theirs, lambda x: theirs(pixel_values=x).logits)}


def training_step(model, logits_of, optimizer, images, labels, dtype) -> None:
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = segmentation_loss(logits_of(images), labels)  # logits upsampled to the labels inside
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def forward(model, logits_of, optimizer, images, labels, dtype) -> None:
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        logits_of(images)


def interleaved(models: dict, step, images, labels, dtype, steps: int, warmup: int, train: bool) -> dict:
    """Median seconds of ``step`` per model, the models taking turns call by call."""
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in models.items()}
    times = {name: [] for name in models}
    for index in range(warmup + steps):
        for name, (model, logits_of) in models.items():
            model.train(train)
            start = time.perf_counter()
            step(model, logits_of, optimizers[name], images, labels, dtype)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="training batch (the CPU recipe's)")
    parser.add_argument("--crop", type=int, nargs=2, default=(180, 240), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=8, help="timed calls per model and setting (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_vs_transformers.json")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="refuse to start when the 1-minute load average is above this")
    args = parser.parse_args()
    load_before = refuse_under_load(args.max_load)

    models = twin_models(num_classes=11)
    images = torch.randn(args.batch, 3, *args.crop)
    labels = torch.randint(0, 11, (args.batch, *args.crop))
    rows = []
    for mode, step, train in (("training step", training_step, True), ("forward", forward, False)):
        for dtype_name, dtype in DTYPES.items():
            seconds = interleaved(models, step, images, labels, dtype, args.steps, args.warmup, train)
            speed = {name: args.batch / value for name, value in seconds.items()}
            ratio = speed["segformer_edu"] / speed["transformers"]
            ratio_fused = speed["segformer_edu, fuse first"] / speed["transformers"]
            print(f"{mode:13s} {dtype_name}: segformer_edu {speed['segformer_edu']:5.1f} images/s "
                  f"({ratio:.2f}x), fused first {speed['segformer_edu, fuse first']:5.1f} "
                  f"({ratio_fused:.2f}x), transformers {speed['transformers']:5.1f}", flush=True)
            rows.append({"mode": mode, "dtype": dtype_name, "images_per_s": speed, "ratio": ratio,
                         "ratio_fuse_first": ratio_fused})
    result = machine_record(load_before) | {"model": "SegFormer-B0, 11 classes", "batch": args.batch,
                                            "crop": list(args.crop), "steps": args.steps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
