#!/usr/bin/env bash
# Idempotent installer for epropnp_det and its pinned OpenMMLab stack.
#
#   bash tools/install.sh
#
# Installs into the active virtualenv/conda env if one is active, else into `.venv` at the repository root
# (created if missing). Every step prints its name, is skipped when already satisfied (a second run takes a few
# seconds) and aborts loudly naming the step on failure.
#
# Pins (known good together): torch 2.13.0, mmcv 2.1.0 (compiled with ops against the installed torch),
# mmengine 0.10.7, mmdet 3.3.0, mmdet3d 1.4.0, nuscenes-devkit 1.2.0 (pulls numpy 1.26.x), pytest, ruff.
#
# torch: an existing torch is never replaced (in particular not a CUDA build); without one, `torch==2.13.0` is
# installed (the CPU wheel on CPU-only machines of this project's kind; override with EPROPNP_TORCH_SPEC).
# mmcv: PyPI only has sdists of mmcv 2.x, so it is compiled (10-20 min on 2 cores, then pip's wheel cache makes
# later installs take seconds). With CUDA available, ops are built for CUDA (FORCE_CUDA=1). GPU users may instead
# pre-install a matching wheel from https://download.openmmlab.com/mmcv/dist/<cuda>/<torch>/index.html; this
# script then keeps it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

TORCH_SPEC="${EPROPNP_TORCH_SPEC:-torch==2.13.0}"
MMCV_VERSION="2.1.0"
MM_PINS=(mmengine==0.10.7 mmdet==3.3.0 mmdet3d==1.4.0 nuscenes-devkit==1.2.0)

STEP=""
step() { STEP="$1"; echo "[install] ==> $1"; }
fail() { echo "[install] FAILED in step: ${STEP}" >&2; exit 1; }
trap fail ERR

step "select Python environment"
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PY="${VIRTUAL_ENV}/bin/python"
    echo "[install]     using active virtualenv ${VIRTUAL_ENV}"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
    PY="${CONDA_PREFIX}/bin/python"
    echo "[install]     using active conda env ${CONDA_PREFIX}"
else
    if [[ ! -x "${REPO_ROOT}/.venv/bin/python" ]]; then
        echo "[install]     creating ${REPO_ROOT}/.venv"
        python3 -m venv "${REPO_ROOT}/.venv"
    fi
    PY="${REPO_ROOT}/.venv/bin/python"
    echo "[install]     using ${REPO_ROOT}/.venv"
fi
PIP=("$PY" -m pip --disable-pip-version-check)
"$PY" --version

# Prints "name=version" for the packages we care about (missing -> "name=").
installed() {
    "$PY" - "$@" <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f'{name}={metadata.version(name)}')
    except metadata.PackageNotFoundError:
        print(f'{name}=')
EOF
}
version_of() { installed "$1" | cut -d= -f2; }

step "torch"
TORCH_VER="$(version_of torch)"
if [[ -z "$TORCH_VER" ]]; then
    "${PIP[@]}" install "$TORCH_SPEC"
    TORCH_VER="$(version_of torch)"
else
    echo "[install]     keeping installed torch ${TORCH_VER}"
fi
WITH_CUDA="$("$PY" -c 'import torch; print(int(torch.version.cuda is not None and torch.cuda.is_available()))')"
echo "[install]     torch ${TORCH_VER}, CUDA usable: ${WITH_CUDA}"

step "mmcv ${MMCV_VERSION} with compiled ops"
if "$PY" -c "import mmcv, sys; from mmcv.ops import nms_rotated, roi_align; \
sys.exit(0 if mmcv.__version__ == '${MMCV_VERSION}' else 1)" 2>/dev/null; then
    echo "[install]     mmcv ${MMCV_VERSION} with ops already installed"
else
    # mmcv's setup.py imports pkg_resources (gone from setuptools>=70); it must compile against the installed
    # torch, hence --no-build-isolation. torch may warn that it wants newer setuptools: harmless at run time.
    "${PIP[@]}" install "setuptools<70" wheel ninja psutil "numpy<2"
    if [[ "$WITH_CUDA" == "1" ]]; then export FORCE_CUDA=1; fi
    echo "[install]     building mmcv (10-20 min on 2 cores the first time; cached by pip afterwards)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "${PIP[@]}" install --no-build-isolation "mmcv==${MMCV_VERSION}"
    "$PY" -c "from mmcv.ops import nms_rotated, roi_align, ModulatedDeformConv2dPack"
fi

step "mmengine, mmdet, mmdet3d, nuscenes-devkit"
NEED=0
for pin in "${MM_PINS[@]}"; do
    name="${pin%%==*}"; want="${pin##*==}"
    have="$(version_of "$name")"
    if [[ "$have" != "$want" ]]; then NEED=1; echo "[install]     ${name}: have '${have}', want ${want}"; fi
done
if [[ "$NEED" == "1" ]]; then
    "${PIP[@]}" install "${MM_PINS[@]}"
else
    echo "[install]     all pinned"
fi

step "epropnp_det (editable) with runtime and test requirements"
# Installed (editable) from *this* checkout? Judged from pip's metadata, not by importing (cwd would shadow it).
PKG_DIR="$("$PY" - <<'EOF'
import json
from importlib import metadata
try:
    url = json.loads(metadata.distribution('epropnp_det').read_text('direct_url.json') or '{}').get('url', '')
except metadata.PackageNotFoundError:
    url = ''
print(url[len('file://'):] if url.startswith('file://') else '')
EOF
)"
MISSING_REQS="$("$PY" - "$REPO_ROOT" <<'EOF'
import sys
from importlib import metadata
missing = []
for fname in ('runtime.txt', 'tests.txt'):
    for line in open(f'{sys.argv[1]}/requirements/{fname}'):
        req = line.split('#', 1)[0].strip()
        if not req or req.startswith('-'):
            continue
        name = req
        for sep in ('==', '>=', '<=', '<', '>', '~=', '['):
            name = name.split(sep, 1)[0]
        try:
            metadata.version(name.strip())
        except metadata.PackageNotFoundError:
            missing.append(req)
print(' '.join(missing))
EOF
)"
if [[ "$PKG_DIR" == "$REPO_ROOT" && -z "$MISSING_REQS" ]]; then
    echo "[install]     epropnp_det already installed from ${REPO_ROOT}"
else
    [[ -n "$MISSING_REQS" ]] && echo "[install]     missing: ${MISSING_REQS}"
    "${PIP[@]}" install --no-build-isolation -e ".[tests]"
fi

step "check"
"$PY" - <<'EOF'
import importlib
for mod in ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmdet3d', 'nuscenes', 'pytest', 'epropnp_det'):
    m = importlib.import_module(mod)
    print(f'[install]     {mod:12s} {getattr(m, "__version__", "")}')
from mmcv.ops import nms_rotated  # noqa: F401  (compiled ops present)
EOF
trap - ERR
echo "[install] done (python: ${PY})"
