# Sourced by the tools/*.sh launchers: picks the Python interpreter and a free rendezvous port.
# Python: $PYTHON if set; else the active virtualenv/conda python; else the repository's .venv; else python3.
_TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_REPO_ROOT="$(cd "${_TOOLS_DIR}/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
        PYTHON=python
    elif [[ -x "${_REPO_ROOT}/.venv/bin/python" ]]; then
        PYTHON="${_REPO_ROOT}/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
export PYTHONPATH="${_REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
if [[ -z "${PORT:-}" ]]; then
    PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

# torchrun/srun defaults shared by the launchers (call with the number of processes per node).
launcher_defaults() {
    NNODES=${NNODES:-1}
    NODE_RANK=${NODE_RANK:-0}
    MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
    # torchrun defaults OMP_NUM_THREADS to 1 per process; on CPU share the cores between the processes instead.
    if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
        local ncores
        ncores=$(nproc)
        export OMP_NUM_THREADS=$(( ncores / $1 > 0 ? ncores / $1 : 1 ))
    fi
}

# Runs "$PYTHON -u SCRIPT ARGS..." as GPUS Slurm tasks (slurm_train.sh / slurm_test.sh).
slurm_run() {
    local partition=$1 job_name=$2
    shift 2
    srun -p "${partition}" \
        --job-name="${job_name}" \
        --gres=gpu:"${GPUS_PER_NODE:-8}" \
        --ntasks="${GPUS:-8}" \
        --ntasks-per-node="${GPUS_PER_NODE:-8}" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "$PYTHON" -u "$@"
}
