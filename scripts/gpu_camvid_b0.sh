#!/usr/bin/env bash
# SegFormer-B0 on CamVid on one GPU, the two full runs of book chapter 8 (its last section makes the same runs on
# Colab; the recipes below and the chapter's RECIPES cell hold the same values, tests/test_colab_path.py checks it):
#     bash scripts/gpu_camvid_b0.sh                  # from scratch, the recipe chapter 8's sweep chose
#     RUN=pretrained bash scripts/gpu_camvid_b0.sh   # from the ImageNet encoder nvidia/mit-b0 (needs the hub)
#
# Run from the repository root, with CamVid at ../shared/data/camvid, $SEGFORMER_DATA or ~/.cache/segformer_edu.
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
# 23 iterations at batch 16; 20k iterations (~870 epochs) give the poly schedule room to anneal to 0.
set -euo pipefail

# The recipes: the one place to change them here (chapter 8's RECIPES cell has the same values).
# From scratch: the sweep's learning rate for random weights (scripts/cpu_camvid_sweep.py), the paper's 6e-5 being
# too small there; a warm-up of 5 % of the run, and ENet's class weights (the second sweep's best change), as the
# CPU run (scripts/cpu_camvid_b0.sh).
SCRATCH_LR=1e-3
SCRATCH_HEAD_LR_MULT=10
SCRATCH_WARMUP_ITERS=1000
SCRATCH_CLASS_WEIGHTS=enet
# From the ImageNet encoder: the paper's recipe (Sec. 4.1 and the official configs).
PRETRAINED_ENCODER=nvidia/mit-b0
PRETRAINED_LR=6e-5
PRETRAINED_HEAD_LR_MULT=10
PRETRAINED_WARMUP_ITERS=1500

RUN=${RUN:-scratch}
OUT_DIR=${OUT_DIR:-runs/camvid_b0_$RUN}
RESULTS=${RESULTS:-book/results/camvid_b0_$RUN}
CHUNK=${CHUNK:-540}
MAX_ITERS=${MAX_ITERS:-20000}
PYTHON=${PYTHON:-python}

case "$RUN" in
    scratch) recipe=(--lr "$SCRATCH_LR" --head-lr-mult "$SCRATCH_HEAD_LR_MULT"
                     --warmup-iters "$SCRATCH_WARMUP_ITERS" --class-weights "$SCRATCH_CLASS_WEIGHTS") ;;
    pretrained) recipe=(--pretrained "$PRETRAINED_ENCODER" --lr "$PRETRAINED_LR"
                        --head-lr-mult "$PRETRAINED_HEAD_LR_MULT" --warmup-iters "$PRETRAINED_WARMUP_ITERS") ;;
    *) echo "RUN must be scratch or pretrained, not '$RUN'" >&2; exit 2 ;;
esac

status=0
timeout --signal=TERM --kill-after=120 "$CHUNK" "$PYTHON" -m segformer_edu.train \
    --dataset camvid --model b0 --crop-size 360 480 --scale 480 360 --ratio-range 0.5 2.0 \
    --batch-size 16 --max-iters "$MAX_ITERS" "${recipe[@]}" \
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
