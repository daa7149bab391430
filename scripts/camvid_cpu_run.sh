# What the two CPU CamVid runs share (sourced by scripts/cpu_camvid_b0.sh and scripts/cpu_camvid_cnn.sh): the frames,
# crops, augmentation, batch, warm-up, loss (ENet's class weights), validation and bf16 autocast, so that chapter 11
# compares the models and their optimisers, nothing else; resuming; the export. tests/test_cpu_runs.py checks it.
#
#     run_camvid_cpu MODEL COMMAND [the model's own training options...]
# with OUT_DIR, RESULTS, MAX_ITERS, VAL_INTERVAL, SEED and PYTHON set by the calling script; COMMAND is the line
# that reproduces the run, recorded in its summary.json.
run_camvid_cpu() {
    local model=$1 command=$2
    shift 2
    "$PYTHON" -m segformer_edu.train \
        --dataset camvid --model "$model" --crop-size 180 240 --scale 240 180 --ratio-range 0.5 2.0 \
        --val-scale 240 180 --batch-size 8 --max-iters "$MAX_ITERS" --warmup-iters $((MAX_ITERS / 20)) \
        --class-weights enet --val-interval "$VAL_INTERVAL" --log-interval 25 --num-workers 0 --amp bf16 \
        --seed "$SEED" --resume --no-progress --out-dir "$OUT_DIR" "$@"

    # the summary's wall time is the trainer's own sum over resumed calls, pauses between them left out
    "$PYTHON" scripts/export_camvid_run.py --run "$OUT_DIR" --out "$RESULTS" --command "$command"
}
