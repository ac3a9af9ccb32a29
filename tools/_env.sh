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
