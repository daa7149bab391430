#!/usr/bin/env bash
# The controlled comparison of chapter 11 (and the seed spread chapter 8 reads): SegFormer-B0 and the CNN at equal
# data, 17,600 training crops each (2,200 iterations of batch 8, the stored CNN run's length), with everything but
# the model and its optimiser shared (scripts/camvid_cpu_run.sh): B0 at seeds 0, 1 and 2, then the CNN at seed 1
# beside its stored seed-0 run (book/results/camvid_cnn_cpu). Each run records its seed, precision, images seen and
# the load average while it trained (summary.json), and is stored in book/results/seeds/. Between them, chapter 11's
# ablation: B0 without the photometric distortion (PHOTOMETRIC=0), seeds 0-2, everything else as above.
#
# Run from the repository root; resumable like the runs it calls (the same command continues each one), and a run
# already stored (its summary.json in book/results/seeds/) is left as it is:
#     nohup nice bash scripts/cpu_camvid_seeds.sh > runs/seeds.log 2>&1 &
set -euo pipefail
export PYTHON=${PYTHON:-python} MAX_ITERS=2200 VAL_INTERVAL=275
STORE=${STORE:-book/results/seeds}

stored() { [[ -f $1/summary.json ]] && echo "$1 is stored: left as it is"; }
for seed in 0 1 2; do
    results=$STORE/b0_17600_s$seed
    stored $results || SEED=$seed OUT_DIR=runs/seeds/b0_s$seed RESULTS=$results bash scripts/cpu_camvid_b0.sh
done
for seed in 0 1 2; do
    results=$STORE/b0_no_photometric_17600_s$seed
    stored $results || PHOTOMETRIC=0 SEED=$seed OUT_DIR=runs/seeds/b0_no_photometric_s$seed RESULTS=$results \
        bash scripts/cpu_camvid_b0.sh
done
results=$STORE/cnn_17600_s1
stored $results || SEED=1 OUT_DIR=runs/seeds/cnn_s1 RESULTS=$results bash scripts/cpu_camvid_cnn.sh
