#!/usr/bin/env bash
# The prepared GPU check: on a fresh CUDA machine that has torch (and no network), install what is missing from a
# folder of wheels and the mmcv source, run the GPU tests and the GPU benchmarks, print their tables.
#
#   bash tools/gpu_check.sh [KIT_DIR] [OUT_DIR]
#
# KIT_DIR (default .gpu, an ignored folder of the checkout) holds what the machine lacks:
#   whl/*.whl               mmengine, mmdet, mmdet3d, nuscenes-devkit and their small dependencies, pytest, pyro
#                           (optional, for the original)
#   mmcv-2.1.0.tar.gz       the mmcv source, built here with CUDA ops (about 5 min on 12 cores; it runs in the
#                           background while the torch-only checks of the PnP layer run)
#   orig/                   optional: a checkout (or the ops/pnp folder) of the original EPro-PnP, for the side-by-side
#                           PnP-layer table (needs pyro in whl/)
#   ref/epropnp_det         optional: the package of an older commit, for the side-by-side step-overhead table
#   data/tiny_nus           optional: a generated nuScenes-format root with infos (else one is generated here)
# OUT_DIR (default $OUT, else /tmp/gpu_check) receives every table and log.
#
# Budget: about 9.5 minutes on an H200 machine with 16 cores (GPU_CHECK_DEADLINE=570 s: stages are cut to end by
# then, the rest skipped). Every stage has its own time limit and a failing stage does not stop the others; the
# summary at the end lists each stage's exit status.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KIT="${1:-.gpu}"
OUTDIR="${2:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
SITE=/tmp/gpu_check_site
T0=$(date +%s)
declare -A STATUS
elapsed() { echo $(( $(date +%s) - T0 )); }
log() { echo "[gpu_check $(elapsed)s] $*"; }
DEADLINE="${GPU_CHECK_DEADLINE:-570}"  # seconds after the start by which every stage must have ended
stage() {  # stage NAME TIMEOUT_S CMD...: run with a time limit, output to OUTDIR/NAME.txt and the console
    local name=$1 limit=$2; shift 2
    local left=$(( DEADLINE - $(elapsed) - 5 ))
    if (( left < 20 )); then log "skip $name: past the deadline"; STATUS[$name]=skipped; return; fi
    if (( limit > left )); then limit=$left; fi
    log "==> $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.txt" 2>&1
    STATUS[$name]=$?
    tail -n 60 "$OUTDIR/$name.txt"
    log "<== $name exit ${STATUS[$name]}"
}

"$PY" - <<'EOF' || { echo "[gpu_check] no usable CUDA device: nothing to check"; exit 1; }
import torch
assert torch.cuda.is_available()
p = torch.cuda.get_device_properties(0)
print(f'[gpu_check] torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB')
EOF

# ---- install what is missing -------------------------------------------------------------------------------------
export PYTHONPATH="$SITE:/tmp/mmcv-2.1.0:$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import mmengine, mmdet, mmdet3d, nuscenes, pytest" 2>/dev/null; then
    log "installing wheels from $KIT/whl into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KIT"/whl/*.whl > "$OUTDIR/pip.txt" 2>&1 \
        || { log "pip failed:"; tail -20 "$OUTDIR/pip.txt"; }
fi
MMCV_PID=""
if ! "$PY" -c "from mmcv.ops import roi_align" 2>/dev/null; then
    log "building mmcv with CUDA ops in the background"
    JOBS=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))
    (cd /tmp && tar xzf "$REPO/$KIT/mmcv-2.1.0.tar.gz" && cd mmcv-2.1.0 && MMCV_WITH_OPS=1 FORCE_CUDA=1 \
        TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}" \
        MAX_JOBS=$JOBS "$PY" setup.py build_ext --inplace > "$OUTDIR/mmcv_build.txt" 2>&1) &
    MMCV_PID=$!
fi

# ---- stage A: the PnP layer (torch only, while mmcv builds) --------------------------------------------------------
stage gpu_tests_pnp 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_ops/test_pnp_device.py
ORIG_ARGS=()
if [[ -d "$KIT/orig" ]] && "$PY" -c "import pyro" 2>/dev/null; then ORIG_ARGS=(--original "$KIT/orig"); fi
if [[ ${#ORIG_ARGS[@]} -gt 0 ]]; then
    stage pnp_layer_vs_original 200 "$PY" tools/benchmarks/pnp_layer.py --device cuda --interleave "${ORIG_ARGS[@]}" \
        --runs 7 --timeout 60
fi
stage pnp_layer_cuda_graphs 150 "$PY" tools/benchmarks/pnp_layer.py --device cuda --runs 5 --count-ops --timeout 60 \
    --json "$OUTDIR/pnp_layer_cuda.json"
stage pnp_layer_cuda_eager 150 "$PY" tools/benchmarks/pnp_layer.py --device cuda --runs 3 --cost-backend eager \
    --count-ops --timeout 60

# ---- stage B: the detector (needs mmcv) -----------------------------------------------------------------------------
if [[ -n "$MMCV_PID" ]]; then
    log "waiting for the mmcv build"
    wait "$MMCV_PID"; STATUS[mmcv_build]=$?
    tail -n 3 "$OUTDIR/mmcv_build.txt"
fi
DATA="$KIT/data/tiny_nus"
if [[ ! -f "$DATA/nuscenes_infos_train.pkl" ]]; then
    DATA=/tmp/gpu_check_data
    stage generate_data 120 "$PY" -c "
from epropnp_det.datasets.nuscenes_infos import create_nuscenes_infos
from epropnp_det.synthetic import GeneratorConfig, generate_dataset
generate_dataset(GeneratorConfig(out_dir='$DATA', samples_per_scene=2, seed=3, image_size=(1600, 900), num_scenes=3,
                                 workers=4, overwrite=True), progress=False)
create_nuscenes_infos('$DATA', '$DATA', version='v1.0-mini', max_sweeps=0)"
fi
REF_ARGS=()
if [[ -d "$KIT/ref/epropnp_det" ]]; then REF_ARGS=(--ref-tree "$KIT/ref"); fi
stage step_overhead_r18 100 "$PY" tools/benchmarks/step_overhead.py configs/epropnp_det_r18_synthetic.py \
    --device cuda --data-root "$DATA" --batch-size 2 --repeats 10 --warmup 3 "${REF_ARGS[@]}" \
    --json "$OUTDIR/step_overhead_r18.json"
stage step_overhead_r101 150 "$PY" tools/benchmarks/step_overhead.py configs/epropnp_det_r101.py \
    configs/baselines/fcos3d_r101_nus.py --device cuda --data-root "$DATA" --batch-size 3 --repeats 5 --warmup 2 \
    --cfg-options model.backbone.init_cfg=None --json "$OUTDIR/step_overhead_r101.json"
stage gpu_tests_detector 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider \
    tests/test_models/test_detectors/test_device_training.py tests/test_models/test_detectors/test_train_step_syncs.py
stage step_overhead_r101_amp 100 "$PY" tools/benchmarks/step_overhead.py configs/epropnp_det_r101.py \
    --device cuda --data-root "$DATA" --batch-size 3 --repeats 5 --warmup 2 --amp fp16 \
    --cfg-options model.backbone.init_cfg=None --json "$OUTDIR/step_overhead_r101_amp.json"
stage step_overhead_r18_amp 60 "$PY" tools/benchmarks/step_overhead.py configs/epropnp_det_r18_synthetic.py \
    --device cuda --data-root "$DATA" --batch-size 2 --repeats 10 --warmup 3 --amp fp16 \
    --json "$OUTDIR/step_overhead_r18_amp.json"
if [[ -f tools/benchmarks/demo_speed.py ]]; then
    stage demo_speed_cuda 60 "$PY" tools/benchmarks/demo_speed.py --devices cuda --num-images 16 --repeats 2
fi

log "summary (exit status per stage; 124 = time limit):"
for k in "${!STATUS[@]}"; do echo "  $k: ${STATUS[$k]}"; done | sort
log "outputs in $OUTDIR"
