#!/usr/bin/env bash
# The controlled comparison of chapter 11 (and the seed spread chapter 8 reads): SegFormer-B0 and the CNN at equal
# data, 17,600 training crops each (2,200 iterations of batch 8, the stored CNN run's length), with everything but
# the model and its optimiser shared (scripts/camvid_cpu_run.sh): B0 at seeds 0, 1 and 2, then the CNN at seed 1
# beside its stored seed-0 run (book/results/camvid_cnn_cpu). Each run records its seed, precision, images seen and
# the load average while it trained (summary.json), and is stored in book/results/seeds/.
#
# Run from the repository root; resumable like the runs it calls (the same command continues each one):
#     nohup nice bash scripts/cpu_camvid_seeds.sh > runs/seeds.log 2>&1 &
set -euo pipefail
export PYTHON=${PYTHON:-python} MAX_ITERS=2200 VAL_INTERVAL=275

for seed in 0 1 2; do
    SEED=$seed OUT_DIR=runs/seeds/b0_s$seed RESULTS=book/results/seeds/b0_17600_s$seed bash scripts/cpu_camvid_b0.sh
done
SEED=1 OUT_DIR=runs/seeds/cnn_s1 RESULTS=book/results/seeds/cnn_17600_s1 bash scripts/cpu_camvid_cnn.sh
