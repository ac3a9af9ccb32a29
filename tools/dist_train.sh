#!/usr/bin/env bash
# Multi-process training through torchrun + mmengine (NCCL with GPUs; without CUDA, GPUS CPU processes on gloo).
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for torchrun.
set -euo pipefail
if [[ $# -lt 2 ]]; then echo "usage: $0 CONFIG GPUS [train.py args]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
source "$(dirname "$0")/_env.sh"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# torchrun defaults OMP_NUM_THREADS to 1 per process; share the cores instead when on CPU.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    NCORES=$(nproc)
    export OMP_NUM_THREADS=$(( NCORES / GPUS > 0 ? NCORES / GPUS : 1 ))
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
