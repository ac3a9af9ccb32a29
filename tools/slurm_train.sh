#!/usr/bin/env bash
# Training on a Slurm cluster (as mmdet3d's):
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR [args]
set -euo pipefail
if [[ $# -lt 4 ]]; then echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2; exit 2; fi
source "$(dirname "$0")/_env.sh"
slurm_run "$1" "$2" "$(dirname "$0")/train.py" "$3" --work-dir="$4" --launcher="slurm" "${@:5}"
