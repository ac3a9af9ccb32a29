#!/usr/bin/env bash
# The project's test command (CI runs exactly this through .ci/run):
#   bash tools/run_tests.sh [extra pytest args]
# = install (idempotent) -> lint (ruff) -> pytest default suite (excludes @pytest.mark.slow; gpu tests skip
# without CUDA). Slow suite: bash tools/run_tests.sh -m slow
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
START=$(date +%s)

bash tools/install.sh
if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
    source "${REPO_ROOT}/.venv/bin/activate"
fi
echo "[run_tests] install took $(( $(date +%s) - START )) s"

echo "[run_tests] ==> lint (ruff)"
python -m ruff check .

echo "[run_tests] ==> pytest"
python -m pytest -q "$@"
echo "[run_tests] total $(( $(date +%s) - START )) s"
