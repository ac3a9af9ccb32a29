#!/usr/bin/env bash
# Multi-process training through torchrun + mmengine (NCCL with GPUs; without CUDA, GPUS CPU processes on gloo).
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for torchrun.
set -euo pipefail
if [[ $# -lt 2 ]]; then echo "usage: $0 CONFIG GPUS [train.py args]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
source "$(dirname "$0")/_env.sh"
launcher_defaults "$GPUS"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
