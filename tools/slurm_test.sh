#!/usr/bin/env bash
# Testing on a Slurm cluster (as mmdet3d's):
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] bash tools/slurm_test.sh PARTITION JOB CONFIG CKPT [args]
set -euo pipefail
if [[ $# -lt 4 ]]; then echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]" >&2; exit 2; fi
source "$(dirname "$0")/_env.sh"
slurm_run "$1" "$2" "$(dirname "$0")/test.py" "$3" "$4" --launcher="slurm" "${@:5}"
