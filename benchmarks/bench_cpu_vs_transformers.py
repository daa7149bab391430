"""SegFormer-B0 forward at 512x512 on CPU: segformer_edu against transformers, same weights.

Both models run in one process, interleaved (ours, theirs, ours, ...), so that background load
hits both alike. Eval mode, ``torch.inference_mode``, warm-up first, then the median of the runs.

    python benchmarks/bench_cpu_vs_transformers.py [--runs 9] [--size 512] [--threads N]
"""

import argparse
import statistics
import tempfile
import time

import torch
from transformers import SegformerForSemanticSegmentation

from segformer_edu import SegFormer
from segformer_edu.checkpoint import save_pretrained


def time_once(model, images) -> float:
    start = time.perf_counter()
    model(images)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="timed runs per model (median reported), at least 7")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = SegFormer.from_config("b0", num_classes=150).eval()
    with tempfile.TemporaryDirectory() as folder:  # the same weights in transformers, via our HF export
        save_pretrained(ours, folder)
        theirs = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    images = torch.randn(1, 3, args.size, args.size)

    with torch.inference_mode():
        diff = (ours(images) - theirs(pixel_values=images).logits).abs().max().item()
        models = {"segformer_edu": ours, "transformers": lambda x: theirs(pixel_values=x)}
        for _ in range(args.warmup):
            for model in models.values():
                model(images)
        times = {name: [] for name in models}
        for _ in range(args.runs):
            for name, model in models.items():
                times[name].append(time_once(model, images))

    print(f"SegFormer-B0, 1x3x{args.size}x{args.size}, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.runs} runs")
    print(f"{'model':<15}{'median ms':>10}{'min ms':>10}{'max ms':>10}")
    for name, values in times.items():
        print(f"{name:<15}{1e3 * statistics.median(values):>10.1f}{1e3 * min(values):>10.1f}{1e3 * max(values):>10.1f}")
    ratio = statistics.median(times["transformers"]) / statistics.median(times["segformer_edu"])
    print(f"ratio transformers / segformer_edu: {ratio:.2f}x (max abs logit diff {diff:.2e})")


if __name__ == "__main__":
    main()
