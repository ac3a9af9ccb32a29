#!/usr/bin/env bash
# Multi-process testing through torchrun + mmengine (NCCL with GPUs; without CUDA, GPUS CPU processes on gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail
if [[ $# -lt 3 ]]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args]" >&2; exit 2; fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
source "$(dirname "$0")/_env.sh"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    NCORES=$(nproc)
    export OMP_NUM_THREADS=$(( NCORES / GPUS > 0 ? NCORES / GPUS : 1 ))
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
