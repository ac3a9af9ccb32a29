"""Fit per-class scale factors of the predicted pose standard deviations (post-hoc calibration, docs/uncertainty.md).

    python tools/fit_uncertainty_calibration.py CONFIG CHECKPOINT [--method coverage68|ml] [--out-json FILE]
                                                [--out-config FILE]
    python tools/fit_uncertainty_calibration.py --results DIR --eval-set mini_train ...

Runs the model on the **training** split (``tools/uncertainty_report.py``'s inference, format-only), matches the
detections to ground truth as the devkit does, and fits for every class and every pose component
``[x, y, z, yaw]`` (camera frame) one factor ``s`` for the Laplace standard deviation:

* ``coverage68`` (default): ``s`` = the 68.27 % quantile of ``|error| / σ``, so that exactly 68.27 % of the training
  matches fall inside ±sσ (a robust fit: the 2 m matching lets a few gross errors through, which would dominate a
  variance estimate);
* ``ml``: the Gaussian maximum-likelihood ``s² = mean((error/σ)²)``.

Classes with fewer than ``--min-matches`` matches get the factors fitted on all classes together; traffic cones have
no yaw error (the devkit ignores their orientation) and get the pooled yaw factor; barrier yaw is taken modulo π.
The covariance is then scaled as ``Σ_ij ← s_i s_j Σ_ij`` (correlations kept) — the head's ``test_cfg.pose_cov_scale``
(one sequence of 4 factors per class, class order of the config), which ``--out-config`` writes as a config that
inherits CONFIG. Check the result on the val split with
``tools/uncertainty_report.py ... --calibration FILE`` (coverage before and after).
"""
import argparse
import datetime
import json
import math
import os
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
sys.path.insert(0, osp.abspath(osp.dirname(__file__)))

from uncertainty_report import YAW_PERIOD, matched_records, run_inference, wrap  # noqa: E402

from epropnp_det.evaluation.uncertainty import fit_scale  # noqa: E402

CALIB_FORMAT = 'epropnp_det.pose_cov_scale/1'
#: label order of the nuScenes datasets (config ``metainfo.classes``); not the devkit's class_range order
NUSCENES_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
                    'traffic_cone', 'barrier')


def fit_calibration(records, classes, method='coverage68', min_matches=20):
    """Per-class factors (len(classes), 4) for ``[x, y, z, yaw]`` and the per-class match counts."""
    def errs_stds(recs, k):
        keep = [r for r in recs if k < 3 or YAW_PERIOD.get(r['cls'], 2 * math.pi) is not None]
        e = np.array([r['err'][k] if k < 3 else wrap(r['err'][3], YAW_PERIOD.get(r['cls'], 2 * math.pi))
                      for r in keep])
        s = np.sqrt(np.array([max(r['cov'][k, k], 0.0) for r in keep]))
        return e, s

    pooled = [fit_scale(*errs_stds(records, k), method=method) for k in range(4)]
    scales, counts, source = [], {}, {}
    for c in classes:
        recs = [r for r in records if r['cls'] == c]
        counts[c] = len(recs)
        row = []
        for k in range(4):
            e, s = errs_stds(recs, k)
            row.append(fit_scale(e, s, method=method) if len(e) >= min_matches else pooled[k])
        source[c] = 'class' if len(recs) >= min_matches else 'pooled'
        scales.append(row)
    return np.array(scales), np.array(pooled), counts, source


def write_config(path, base_config, scales, classes, meta):
    rows = '\n'.join(f'        ({", ".join(f"{v:.4f}" for v in row)}),  # {c}' for row, c in zip(scales, classes))
    rel = osp.relpath(osp.abspath(base_config), osp.dirname(osp.abspath(path)))
    text = ('# Post-hoc calibration of the pose covariance (tools/fit_uncertainty_calibration.py):\n'
            f'# {meta}.\n'
            '# Per class (config class order): scale factors of the std of [x, y, z, yaw] (camera frame); the head\n'
            '# scales its Laplace covariance by s_i s_j (docs/uncertainty.md).\n'
            f"_base_ = ['./{rel}']\n"
            'model = dict(test_cfg=dict(pose_cov_scale=[\n' + rows + '\n    ]))\n')
    with open(path, 'w') as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--results', help='train-split directory with results_nusc.json + sidecar')
    parser.add_argument('--method', default='coverage68', choices=['coverage68', 'ml'])
    parser.add_argument('--train-ann-file', default=None,
                        help='info file of (a subset of) the training samples under the data root (default: all)')
    parser.add_argument('--min-matches', type=int, default=20)
    parser.add_argument('--out-dir', default='work_dirs/uncertainty_report')
    parser.add_argument('--data-root', default='data/synthetic_nuscenes')
    parser.add_argument('--version', default='v1.0-mini')
    parser.add_argument('--eval-set', default='mini_train')
    parser.add_argument('--out-json', default=None, help='calibration JSON (default OUT_DIR/calibration.json)')
    parser.add_argument('--out-config', help='also write a config inheriting CONFIG with test_cfg.pose_cov_scale')
    parser.add_argument('--cfg-options', nargs='*', default=[], help='passed to tools/test.py')
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.results:
        results_dir = args.results
    elif args.config and args.checkpoint:
        results_dir = run_inference(args.config, args.checkpoint, args.out_dir, 'train', 0, args.cfg_options,
                                    args.train_ann_file)
    else:
        parser.error('give CONFIG CHECKPOINT or --results DIR')
    classes = list(NUSCENES_CLASSES)  # the head's label order (mmdet3d's nuScenes order), unless the config says
    if args.config:
        from mmengine.config import Config
        classes = list(Config.fromfile(args.config).get('metainfo', {}).get('classes', classes))
    records = matched_records(results_dir, args.data_root, args.version, args.eval_set)
    scales, pooled, counts, source = fit_calibration(records, classes, args.method, args.min_matches)
    today = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    out = dict(date=today,
               format=CALIB_FORMAT, method=args.method, eval_set=args.eval_set, results=results_dir,
               checkpoint=args.checkpoint, components=['x', 'y', 'z', 'yaw'], classes=classes,
               pose_cov_scale=scales.tolist(), pooled=pooled.tolist(), num_matched=counts, source=source,
               min_matches=args.min_matches)
    path = args.out_json or osp.join(args.out_dir, 'calibration.json')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(out, f, indent=1)
    print(f'{len(records)} matched training boxes; pooled factors [x, y, z, yaw] = {np.round(pooled, 3).tolist()}')
    for c, row in zip(classes, scales):
        print(f'  {c:22s} n={counts[c]:4d} ({source[c]}): {np.round(row, 3).tolist()}')
    print(f'calibration: {path}')
    if args.out_config:
        write_config(args.out_config, args.config, scales, classes,
                     f'{args.method} on {args.eval_set}, {len(records)} matches')
        print(f'config: {args.out_config}')
    return out


if __name__ == '__main__':
    main()
