"""Store a finished CamVid run for the book (chapter 8): the best weights in the Hugging Face layout, evaluated
afresh on the 233 test frames, beside the run's logs and figures (``segformer_edu.release``).

    python scripts/export_camvid_run.py --run runs/camvid_b0_cpu --out book/results/camvid_b0_cpu

Writes to --out: ``config.json`` (the 11 class names as labels) and ``model.safetensors`` (SegFormer in fp16,
loadable by ``SegFormer.from_pretrained`` and transformers' ``SegformerForSemanticSegmentation.from_pretrained``;
chapter 11's CNN in fp32, loadable by ``DeepLabV3Plus.from_pretrained``); ``test_metrics.json`` from the stored
weights themselves (predictions resized to the 360x480 labels, void
ignored); ``train_log.jsonl``, ``metrics.jsonl``, ``curves.png``, ``summary.json`` (machine, threads, dtype,
wall time, iterations, images seen, evaluation scale, command).
"""

import argparse
import sys
from pathlib import Path

from segformer_edu.release import release_run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run's out_dir (best.pt, logs)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", default=None, help="the command that made the run, recorded in summary.json")
    args = parser.parse_args()
    try:
        metrics = release_run(args.run, args.out, args.command)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    print(f"test mIoU {100 * metrics['miou']:.2f} % (iteration {metrics['iter']}), written to {args.out}")


if __name__ == "__main__":
    main()
