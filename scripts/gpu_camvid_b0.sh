#!/usr/bin/env bash
# SegFormer-B0 on CamVid from scratch on one GPU with the paper's recipe (issue 6; book chapter 8).
#
# Run from the repository root, with CamVid at ../shared/data/camvid, $SEGFORMER_DATA or ~/.cache/segformer_edu:
#     bash scripts/gpu_camvid_b0.sh
# On the team's lent GPU machine (the device tool), which sees the checkout but not ../shared: copy CamVid into a
# folder of the checkout that git ignores, carry it, and point SEGFORMER_DATA at it (that machine's python3 has
# torch, transformers, einops, safetensors and tqdm; the package runs from the checkout):
#     echo /.data/ >> .git/info/exclude && mkdir -p .data && cp -r ../shared/data/camvid .data/
#     device run, carry [".data"]:  SEGFORMER_DATA=.data PYTHON=python3 bash scripts/gpu_camvid_b0.sh
# runs/ stays there between calls only while the machine is warm, and latest.pt (45 MB: weights and AdamW moments) is
# larger than a file that comes back through $OUT (16 MiB): make the calls back to back, then copy $RESULTS to $OUT.
# Each call trains for at most CHUNK seconds; then SIGTERM makes the trainer save latest.pt and exit, and the
# next call resumes from it (--resume), so a 10-minute command limit is no obstacle. Call it again until it
# says "finished". The small results (logs, metrics, figures; never checkpoints) are copied to RESULTS.
#
# Why these settings: CamVid frames are 480x360, so the resize target is the native size and the random
# ratio 0.5-2.0 spans 240x180 to 960x720; the crop is a whole native frame (360x480, padded with the ignore
# label when the ratio is below 1). Batch 16 as the paper (8 GPUs x 2). 367 training images make an epoch
# 23 iterations at batch 16; 20k iterations (~870 epochs) give the poly schedule room to anneal to 0, and
# from scratch (no ImageNet encoder) needs many passes. The lr is the paper's 6e-5 (LR overrides it).
set -euo pipefail

OUT_DIR=${OUT_DIR:-runs/camvid_b0_gpu}
RESULTS=${RESULTS:-book/results/camvid_b0_gpu}
CHUNK=${CHUNK:-540}
MAX_ITERS=${MAX_ITERS:-20000}
LR=${LR:-6e-5}
PYTHON=${PYTHON:-python}

status=0
timeout --signal=TERM --kill-after=120 "$CHUNK" "$PYTHON" -m segformer_edu.train \
    --dataset camvid --model b0 --crop-size 360 480 --scale 480 360 --ratio-range 0.5 2.0 \
    --batch-size 16 --max-iters "$MAX_ITERS" --lr "$LR" --warmup-iters 1500 \
    --val-interval 1000 --log-interval 50 --num-workers 12 --amp auto \
    --test --resume --no-progress --out-dir "$OUT_DIR" || status=$?

mkdir -p "$RESULTS"
for name in summary.json train_log.jsonl metrics.jsonl test_metrics.json curves.png predictions.png; do
    if [ -f "$OUT_DIR/$name" ]; then cp "$OUT_DIR/$name" "$RESULTS/"; fi
done
nvidia-smi --query-gpu=name --format=csv,noheader > "$RESULTS/gpu.txt" 2>/dev/null || true

if [ "$status" -eq 124 ]; then
    echo "chunk of ${CHUNK}s over, latest.pt saved: run this script again to continue"
elif [ "$status" -eq 0 ]; then
    if [ -f "$OUT_DIR/test_metrics.json" ]; then echo "finished"; else echo "stopped before max_iters"; fi
else
    exit "$status"
fi
