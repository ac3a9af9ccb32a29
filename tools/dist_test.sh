#!/usr/bin/env bash
# Multi-process testing through torchrun + mmengine (NCCL with GPUs; without CUDA, GPUS CPU processes on gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail
if [[ $# -lt 3 ]]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args]" >&2; exit 2; fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
source "$(dirname "$0")/_env.sh"
launcher_defaults "$GPUS"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
