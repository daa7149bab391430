#!/usr/bin/env bash
# SegFormer-B0 on CamVid on one GPU: the run of book chapter 8's last section, from a shell.
#     bash scripts/gpu_camvid_b0.sh                  # from NVIDIA's ImageNet encoder (nvidia/mit-b0, from the hub)
#     bash scripts/gpu_camvid_b0.sh --from-scratch   # from random weights, for comparison
#
# Run it from the repository root, with CamVid at ../shared/data/camvid, $SEGFORMER_DATA/camvid or the download
# cache (python -c "from segformer_edu.data import download_camvid; download_camvid()").
#
# The recipe is gpu-camvid in segformer_edu/recipes.py, the one chapter 8's cells read too: whole 480x360 frames
# rescaled by 0.5-2.0 and cropped to 360x480, batch 16, 20,000 iterations (about 870 passes over the 367 training
# frames), validated every 1000, the best checkpoint tested on the 233 test frames; the paper's AdamW at 6e-5 with
# the decoder at x10; precision by the GPU (bf16 from compute capability 8, else fp16 with a gradient scaler); one
# data-loading process per CPU core. --from-scratch changes the initial weights and the lr they need (1e-3).
# Chapter 8 says why, and what to expect.
#
# Before the hour, a rehearsal of a few iterations on this machine says whether the run starts, fits in memory and
# where the time goes:   python -m segformer_edu.rehearse --recipe gpu-camvid --iters 20
#
# Stopped (Ctrl-C, a closed session), the same command continues from the run's latest.pt. At the end the logs,
# metrics and figures (not the checkpoints) are copied to book/results/<run>, where chapter 8's last cell finds them.
set -euo pipefail

PYTHON=${PYTHON:-python}
name=$("$PYTHON" -m segformer_edu.recipes gpu-camvid --run-name "$@")  # checks the arguments, too
read -ra recipe <<< "$("$PYTHON" -m segformer_edu.recipes gpu-camvid "$@")"
OUT_DIR=${OUT_DIR:-runs/$name}
RESULTS=${RESULTS:-book/results/$name}

"$PYTHON" -m segformer_edu.train "${recipe[@]}" --resume --out-dir "$OUT_DIR"

if [ -f "$OUT_DIR/summary.json" ]; then  # finished
    mkdir -p "$RESULTS"
    for file in summary.json train_log.jsonl metrics.jsonl test_metrics.json curves.png predictions.png; do
        if [ -f "$OUT_DIR/$file" ]; then cp "$OUT_DIR/$file" "$RESULTS/"; fi
    done
    echo "logs, metrics and figures copied to $RESULTS"
fi
