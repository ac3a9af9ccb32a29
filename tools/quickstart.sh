#!/usr/bin/env bash
# The embedded default, end to end (about 30 min on 2 CPU cores once installed):
#   install -> synthetic nuScenes-format data -> mmdet3d info files -> train EPro-PnP-Det r18 ->
#   evaluate with the nuScenes devkit (NDS/mAP table) -> submission JSON -> pictures.
# With a usable CUDA device it trains the long schedule instead (configs/epropnp_det_r18_synthetic_long.py: 10000
# iterations on a 4x larger generated train set, which it also generates) and says so.
#
#   bash tools/quickstart.sh
#
# Environment knobs: DATA (default data/synthetic_nuscenes), WORK_DIR (default work_dirs/<config name>),
# CONFIG (force a config, e.g. the short one on a GPU), MAX_ITERS (override the config's training length, e.g.
# MAX_ITERS=20 for a smoke run), FORCE_TRAIN=1 (retrain even if a final checkpoint exists).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
START=$(date +%s)
STEP=""
step() { STEP="$1"; echo; echo "[quickstart] ==> $1  (+$(( $(date +%s) - START )) s)"; }
trap 'echo "[quickstart] FAILED in step: ${STEP}" >&2' ERR

step "install"
bash tools/install.sh
if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
    source "${REPO_ROOT}/.venv/bin/activate"
fi

HAS_CUDA=$(python -c 'import torch; print(int(torch.cuda.is_available()))')
if [[ -z "${CONFIG:-}" ]]; then
    if [[ "$HAS_CUDA" == "1" ]]; then
        CONFIG=configs/epropnp_det_r18_synthetic_long.py
        echo "[quickstart]     CUDA device found: training the long schedule (${CONFIG}, 10000 iterations)"
    else
        CONFIG=configs/epropnp_det_r18_synthetic.py
        echo "[quickstart]     no CUDA device: training the CPU schedule (${CONFIG}, 800 iterations)"
    fi
fi
DATA=${DATA:-data/synthetic_nuscenes}
WORK_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}
DATA_OPTS=()        # test / drawing: the test split of $DATA
TRAIN_DATA_OPTS=()  # training: val is disabled there (val_dataloader=None), so only the train split is redirected
if [[ "$DATA" != "data/synthetic_nuscenes" ]]; then
    D="${DATA%/}/"
    DATA_OPTS=(test_dataloader.dataset.data_root="$D" val_dataloader.dataset.data_root="$D"
               test_evaluator.data_root="$D" test_evaluator.ann_file="${D}nuscenes_infos_val.pkl")
    TRAIN_DATA_OPTS=(train_dataloader.dataset.data_root="$D")
fi

step "synthetic nuScenes-format data in ${DATA}"
if [[ -f "${DATA}/v1.0-mini/sample_annotation.json" ]]; then
    echo "[quickstart]     already there"
else
    python tools/create_synthetic_nuscenes.py --out-dir "$DATA" --image-size 640 360
fi

step "mmdet3d info files"
if [[ -f "${DATA}/nuscenes_infos_train.pkl" && -f "${DATA}/nuscenes_infos_val.pkl" ]]; then
    echo "[quickstart]     already there"
else
    python tools/create_data.py nuscenes --root-path "$DATA" --out-dir "$DATA" --version v1.0-mini
fi

# a config with its own training root (the long schedule's 4x train set, recipe in its header)
TRAIN_ROOT=$(python - "$CONFIG" <<'PYEOF'
import sys
from mmengine.config import Config
print(Config.fromfile(sys.argv[1]).train_dataloader.dataset.data_root.rstrip('/'))
PYEOF
)
if [[ ${#TRAIN_DATA_OPTS[@]} -eq 0 && "$TRAIN_ROOT" != "${DATA%/}" ]]; then
    step "4x synthetic train set in ${TRAIN_ROOT} (for ${CONFIG})"
    if [[ -f "${TRAIN_ROOT}/nuscenes_infos_train.pkl" ]]; then
        echo "[quickstart]     already there"
    else
        python tools/create_synthetic_nuscenes.py --out-dir "$TRAIN_ROOT" --image-size 640 360 --samples-per-scene 40
        python tools/create_data.py nuscenes --root-path "$TRAIN_ROOT" --out-dir "$TRAIN_ROOT" --version v1.0-mini
    fi
fi

step "train ${CONFIG}"
TRAIN_OPTS=(val_cfg=None val_dataloader=None val_evaluator=None)  # evaluated once below instead
if [[ -n "${MAX_ITERS:-}" ]]; then
    TRAIN_OPTS+=(train_cfg.max_iters="$MAX_ITERS" default_hooks.checkpoint.interval="$MAX_ITERS"
                 "param_scheduler.1.milestones=[$(( MAX_ITERS * 8 / 10 )),$(( MAX_ITERS * 95 / 100 ))]"
                 param_scheduler.1.end="$MAX_ITERS")
fi
FINAL_ITERS=$(python - "$CONFIG" "${MAX_ITERS:-}" <<'PYEOF'
import sys
from mmengine.config import Config
print(sys.argv[2] or Config.fromfile(sys.argv[1]).train_cfg.max_iters)
PYEOF
)
CKPT="${WORK_DIR}/iter_${FINAL_ITERS}.pth"
if [[ -f "$CKPT" && -z "${FORCE_TRAIN:-}" ]]; then
    echo "[quickstart]     ${CKPT} exists (FORCE_TRAIN=1 to retrain)"
else
    python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" --cfg-options "${TRAIN_OPTS[@]}" "${TRAIN_DATA_OPTS[@]}"
fi

step "evaluate on the synthetic mini_val split and write the submission JSON"
python tools/test.py "$CONFIG" "$CKPT" --work-dir "${WORK_DIR}/test" \
    --cfg-options test_evaluator.jsonfile_prefix="${WORK_DIR}/results" "${DATA_OPTS[@]}"

step "nuScenes metrics (devkit, synthetic mini_val)"
python tools/print_metrics.py "EPro-PnP-Det r18 (synthetic)=${WORK_DIR}/results" --classes

step "pictures"
DRAW_OPTS=()
if [[ ${#DATA_OPTS[@]} -gt 0 ]]; then DRAW_OPTS=(--cfg-options "${DATA_OPTS[@]}"); fi
python tools/draw_predictions.py "$CONFIG" "$CKPT" --out-dir "${WORK_DIR}/vis" --num-images 6 --score-thr 0.15 "${DRAW_OPTS[@]}"

echo
echo "[quickstart] done in $(( $(date +%s) - START )) s"
echo "[quickstart]   checkpoint:      ${CKPT}"
echo "[quickstart]   submission JSON: ${WORK_DIR}/results/results_nusc.json"
echo "[quickstart]   metrics:         ${WORK_DIR}/results/metrics_summary.json"
echo "[quickstart]   pictures:        ${WORK_DIR}/vis/"
