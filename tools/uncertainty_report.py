"""Calibration of the predicted pose uncertainty on a split with ground truth (docs/uncertainty.md).

    python tools/uncertainty_report.py CONFIG CHECKPOINT [--split val|train] [--mc-samples 64] [--out-dir DIR]
    python tools/uncertainty_report.py --results DIR [--data-root data/synthetic_nuscenes] [--eval-set mini_val]

The first form runs ``tools/test.py`` (with ``model.test_cfg.mc_samples=K`` for the Monte-Carlo posterior) and
writes ``DIR/results_<split>/results_nusc.json`` plus its pose-uncertainty sidecar; the second reads such a
directory. Detections are matched to ground truth as the nuScenes devkit does (per class, by descending score,
nearest unmatched box of the sample with BEV centre distance < 2 m; both sides filtered to the class range of
``detection_cvpr_2019``, GT without LiDAR/radar points dropped). For each matched box the true pose is taken into the
camera frame of the image the box came from, and for depth (camera z), lateral position (camera x) and yaw
(barrier: period π; traffic cones: no yaw) the report gives, per class and overall:

* coverage of the central 50/68/90/95 % intervals: Laplace ``|e| ≤ z_p σ``; Monte Carlo: weighted quantiles of the
  AMIS pose samples around the point estimate;
* the negative log-likelihood of the true pose: Laplace 4D Gaussian of ``[x, y, z, yaw]`` (position only, 3D, as
  well); Monte Carlo: the Gaussian with the weighted samples' mean and covariance;
* Spearman's rank correlation between the predicted σ and the absolute error.

``--calibration FILE`` (``tools/fit_uncertainty_calibration.py``) adds the calibrated Laplace rows. ``--png`` writes
a reliability diagram (observed vs nominal coverage), ``--json`` the numbers. ``--score-fold`` re-scores the
submission with :func:`epropnp_det.models.utils.uncertainty.fold_uncertainty_into_score` (after NMS: the boxes are
the same, only their scores and hence the ranking change) and prints devkit NDS/mAP/mATE for each variant.
"""
import argparse
import copy
import datetime
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

from epropnp_det.evaluation.uncertainty import (  # noqa: E402
    COMPONENTS,
    LEVELS,
    SIDECAR_NAME,
    gaussian_coverage,
    gaussian_nll,
    load_sidecar,
    match_by_center_distance,
    sample_interval_coverage,
    spearman,
)

#: yaw period per class (devkit: barrier's orientation error is modulo π, traffic cones have none)
YAW_PERIOD = dict(barrier=math.pi, traffic_cone=None)
RELIABILITY_LEVELS = tuple(np.round(np.arange(0.05, 0.999, 0.05), 2)) + (0.99,)


def wrap(a, period):
    return (np.asarray(a) + period / 2) % period - period / 2


# ------------------------------------------------------------------------------------------------ inference
def run_inference(config, checkpoint, out_dir, split='val', mc_samples=64, cfg_options=(), ann_file=None):
    """``tools/test.py`` on ``split`` (val: evaluated; train: format-only) → the directory with results + sidecar.
    ``ann_file``: another info file of the split under the data root (e.g. a subset of the training samples)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    root = cfg.test_evaluator.data_root.rstrip('/') + '/'
    prefix = osp.join(out_dir, f'results_{split}')
    opts = [f'test_evaluator.jsonfile_prefix={prefix}', f'model.test_cfg.mc_samples={mc_samples}',
            'model.test_cfg.mc_seed=0']
    if split == 'train':
        ann = ann_file or 'nuscenes_infos_train.pkl'
        opts += [f'test_dataloader.dataset.ann_file={ann}', f'test_evaluator.ann_file={root}{ann}',
                 'test_evaluator.format_only=True']
    cmd = [sys.executable, osp.join(osp.dirname(__file__), 'test.py'), config, checkpoint,
           '--work-dir', osp.join(out_dir, f'test_{split}'), '--cfg-options', *opts, *cfg_options]
    print('[uncertainty_report]', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return prefix


# ------------------------------------------------------------------------------------------------ matching
def _devkit(data_root, version):
    from nuscenes import NuScenes
    from nuscenes.eval.common.config import config_factory
    nusc = NuScenes(version=version, dataroot=data_root, verbose=False)
    return nusc, config_factory('detection_cvpr_2019')


def matched_records(results_dir, data_root, version='v1.0-mini', eval_set='mini_val', nusc=None):
    """Devkit-style matches of the submission in ``results_dir`` → list of per-box records (camera frame)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion
    if nusc is None:
        nusc, eval_cfg = _devkit(data_root, version)
    else:
        from nuscenes.eval.common.config import config_factory
        eval_cfg = config_factory('detection_cvpr_2019')
    with open(osp.join(results_dir, 'results_nusc.json')) as f:
        sub = json.load(f)
    side = load_sidecar(osp.join(results_dir, SIDECAR_NAME))
    gt = load_gt(nusc, eval_set, DetectionBox, verbose=False)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), eval_cfg.class_range, verbose=False)
    preds = add_center_dist(nusc, EvalBoxes.deserialize(
        {t: b for t, b in sub['results'].items() if t in gt.sample_tokens}, DetectionBox))
    records = []
    for cls, max_dist in eval_cfg.class_range.items():
        plist = []
        for token in preds.sample_tokens:
            for idx, box in enumerate(preds[token]):
                if box.detection_name == cls and box.ego_dist <= max_dist and side['results'][token][idx]:
                    plist.append(dict(sample_token=token, translation=box.translation,
                                      detection_score=box.detection_score, idx=idx))
        glist = [dict(sample_token=b.sample_token, translation=b.translation, rotation=b.rotation)
                 for token in gt.sample_tokens for b in gt[token] if b.detection_name == cls]
        for i, j in match_by_center_distance(plist, glist, 2.0):  # the devkit's TP-error threshold
            p, g = plist[i], glist[j]
            ent = side['results'][p['sample_token']][p['idx']]
            c2g = np.asarray(side['cam2global'][p['sample_token']][ent['camera']], dtype=np.float64)
            R, t = c2g[:3, :3], c2g[:3, 3]
            gt_c = R.T @ (np.asarray(g['translation']) - t)
            h_c = R.T @ Quaternion(g['rotation']).rotation_matrix[:, 0]
            yaw_gt = math.atan2(-h_c[2], h_c[0])
            pose = np.asarray(ent['pose_cam'])
            err = np.concatenate([gt_c - pose[:3], [yaw_gt - pose[3]]])
            rec = dict(cls=cls, score=p['detection_score'], err=err, cov=np.asarray(ent['pose_cov_cam']))
            if 'pose_samples_cam' in ent:
                rec['samples_rel'] = np.asarray(ent['pose_samples_cam']) - pose
                rec['weights'] = np.asarray(ent['pose_sample_weights'])
            records.append(rec)
    return records


def apply_calibration(records, calib):
    """Covariances scaled by the per-class std factors of a calibration file: ``Σ_ij ← s_i s_j Σ_ij``."""
    classes = calib['classes']
    out = []
    for r in records:
        s = np.asarray(calib['pose_cov_scale'][classes.index(r['cls'])], dtype=np.float64)
        out.append(dict(r, cov=r['cov'] * s[:, None] * s[None, :]))
    return out


# ------------------------------------------------------------------------------------------------ statistics
def _component_arrays(records, comp):
    """Errors (m,), Laplace σ (m,) and (MC) relative samples/weights for one report component; yaw handles the
    class's period (records of classes without yaw are left out)."""
    k = COMPONENTS[comp]
    keep = [r for r in records if not (comp == 'yaw' and YAW_PERIOD.get(r['cls'], 2 * math.pi) is None)]
    if not keep:
        return keep, np.zeros(0), np.zeros(0)
    err = np.array([r['err'][k] for r in keep])
    if comp == 'yaw':
        err = np.array([wrap(e, YAW_PERIOD.get(r['cls'], 2 * math.pi)) for e, r in zip(err, keep)])
    std = np.sqrt(np.array([max(r['cov'][k, k], 0.0) for r in keep]))
    return keep, err, std


def summarise(records, levels=LEVELS):
    """Laplace (and Monte-Carlo, where the records have samples) statistics of one group of records."""
    out = dict(num_matched=len(records), laplace={}, mc={})
    has_mc = bool(records) and all('samples_rel' in r for r in records)
    for comp in COMPONENTS:
        keep, err, std = _component_arrays(records, comp)
        out['laplace'][comp] = dict(
            coverage={str(p): float(c) for p, c in zip(levels, gaussian_coverage(err, std, levels))},
            spearman_std_abs_err=spearman(std, np.abs(err)), median_abs_err=float(np.median(np.abs(err)))
            if len(err) else float('nan'), median_std=float(np.median(std)) if len(std) else float('nan'))
        if has_mc and keep:
            k = COMPONENTS[comp]
            rel = np.stack([r['samples_rel'][:, k] for r in keep])
            if comp == 'yaw':
                rel = np.stack([wrap(r['samples_rel'][:, k], YAW_PERIOD.get(r['cls'], 2 * math.pi)) for r in keep])
            w = np.stack([r['weights'] for r in keep])
            mean = (w * rel).sum(1) / w.sum(1)
            mc_std = np.sqrt((w * (rel - mean[:, None]) ** 2).sum(1) / w.sum(1))
            out['mc'][comp] = dict(
                coverage={str(p): float(c) for p, c in zip(levels, sample_interval_coverage(err, rel, w, levels))},
                spearman_std_abs_err=spearman(mc_std, np.abs(err)), median_std=float(np.median(mc_std)))
    pose_recs = [r for r in records if YAW_PERIOD.get(r['cls'], 2 * math.pi) is not None]
    if records:
        pos_err = np.stack([r['err'][:3] for r in records])
        nll3 = gaussian_nll(pos_err, np.stack([r['cov'][:3, :3] for r in records]))
        out['laplace']['nll_position'] = dict(mean=float(np.mean(nll3)), median=float(np.median(nll3)))
    if pose_recs:
        e4 = np.stack([np.concatenate([r['err'][:3], [wrap(r['err'][3], YAW_PERIOD.get(r['cls'], 2 * math.pi))]])
                       for r in pose_recs])
        nll4 = gaussian_nll(e4, np.stack([r['cov'] for r in pose_recs]))
        out['laplace']['nll_pose'] = dict(mean=float(np.mean(nll4)), median=float(np.median(nll4)),
                                          num=len(pose_recs))
        if has_mc:
            nll_mc = []
            for r, e in zip(pose_recs, e4):
                rel = r['samples_rel'].copy()
                rel[:, 3] = wrap(rel[:, 3], YAW_PERIOD.get(r['cls'], 2 * math.pi))
                w = r['weights'] / r['weights'].sum()
                mu = (w[:, None] * rel).sum(0)
                d = rel - mu
                cov = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0) + np.eye(4) * 1e-9
                nll_mc.append(gaussian_nll((e - mu)[None], cov[None])[0])
            out['mc']['nll_pose'] = dict(mean=float(np.mean(nll_mc)), median=float(np.median(nll_mc)))
    if not has_mc:
        out.pop('mc')
    return out


def report(records, classes, levels=LEVELS):
    """Overall and per-class :func:`summarise` (classes without matches are left out)."""
    per_class = {c: summarise([r for r in records if r['cls'] == c], levels) for c in classes
                 if any(r['cls'] == c for r in records)}
    return dict(overall=summarise(records, levels), per_class=per_class)


def reliability_curves(records, levels=RELIABILITY_LEVELS):
    """Observed coverage at a fine grid of nominal levels, per component (overall)."""
    s = summarise(records, levels)
    out = {}
    for kind in ('laplace', 'mc'):
        if kind in s:
            out[kind] = {c: [s[kind][c]['coverage'][str(p)] for p in levels] for c in COMPONENTS}
    return out


def plot_reliability(curves: dict, path: str, title: str, n: int):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    levels = np.array(RELIABILITY_LEVELS)
    fig, axes = plt.subplots(1, len(COMPONENTS), figsize=(4.2 * len(COMPONENTS), 4.2))
    styles = {'laplace': ('C0', '-o', 'Laplace'), 'laplace_calibrated': ('C2', '-s', 'Laplace, calibrated'),
              'mc': ('C1', '-^', 'Monte Carlo')}
    for ax, comp in zip(axes, COMPONENTS):
        ax.plot([0, 1], [0, 1], 'k--', lw=1, label='ideal')
        for kind, curve in curves.items():
            color, fmt, label = styles[kind]
            ax.plot(levels, curve[comp], fmt, color=color, ms=3, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect('equal')
        ax.grid(alpha=0.3)
        ax.set_xlabel('nominal central-interval level')
        ax.set_ylabel('observed coverage')
        ax.set_title({'depth': 'depth (camera z)', 'lateral': 'lateral (camera x)', 'yaw': 'yaw'}[comp])
    axes[0].legend(loc='upper left', fontsize=8)
    fig.suptitle(f'{title}  ({n} matched boxes)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(rep: dict, kind: str = 'laplace') -> str:
    """Markdown table: rows = overall + classes; coverage of depth/lateral/yaw at the levels, Spearman, NLL."""
    head = ['group', 'n'] + [f'{c} {int(round(100 * p))}%' for c in COMPONENTS for p in LEVELS] + \
        [f'ρ {c}' for c in COMPONENTS] + ['NLL pose (median)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    rows = [('overall', rep['overall'])] + list(rep['per_class'].items())
    for name, s in rows:
        if kind not in s:
            continue
        k = s[kind]
        cells = [name, str(s['num_matched'])]
        nan = dict(coverage={str(p): float('nan') for p in LEVELS}, spearman_std_abs_err=float('nan'))
        comp = {c: k.get(c, nan) for c in COMPONENTS}  # e.g. no yaw for traffic cones
        cells += [f"{100 * comp[c]['coverage'][str(p)]:.0f}" if not math.isnan(comp[c]['coverage'][str(p)])
                  else '–' for c in COMPONENTS for p in LEVELS]
        cells += [f"{comp[c]['spearman_std_abs_err']:.2f}" if not math.isnan(comp[c]['spearman_std_abs_err'])
                  else '–' for c in COMPONENTS]
        cells.append(f"{k['nll_pose']['median']:.2f}" if 'nll_pose' in k else '–')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------ score option
def score_fold_table(results_dir, data_root, version, eval_set, variants, out_dir, calib=None, nusc=None):
    """Devkit metrics of the submission re-scored by each ``variants`` entry (name → cfg or None for 'off')."""
    import torch
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    from epropnp_det.models.utils.uncertainty import fold_uncertainty_into_score
    if nusc is None:
        nusc, _ = _devkit(data_root, version)
    with open(osp.join(results_dir, 'results_nusc.json')) as f:
        sub = json.load(f)
    side = load_sidecar(osp.join(results_dir, SIDECAR_NAME))
    classes = list(calib['classes']) if calib else None
    rows = {}
    for name, cfg in variants.items():
        new = copy.deepcopy(sub)
        if cfg is not None:
            for token, boxes in new['results'].items():
                if not boxes:
                    continue
                ents = side['results'][token]
                cov = torch.tensor(np.stack([e['pose_cov_cam'] for e in ents]), dtype=torch.float64)
                if calib:
                    s = torch.tensor([calib['pose_cov_scale'][classes.index(b['detection_name'])] for b in boxes],
                                     dtype=torch.float64)
                    cov = cov * s[:, :, None] * s[:, None, :]
                scores = torch.tensor([b['detection_score'] for b in boxes], dtype=torch.float64)
                labels = torch.zeros(len(boxes), dtype=torch.long)
                if 'ref_std' in cfg and not isinstance(cfg['ref_std'], (int, float)):
                    raise ValueError('per-class ref_std: not supported by the offline re-scoring')
                new_scores = fold_uncertainty_into_score(scores, cov, labels, cfg)
                for b, sc in zip(boxes, new_scores.tolist()):
                    b['detection_score'] = sc
        vdir = osp.join(out_dir, f'score_fold_{name}')
        os.makedirs(vdir, exist_ok=True)
        path = osp.join(vdir, 'results_nusc.json')
        with open(path, 'w') as f:
            json.dump(new, f)
        ev = DetectionEval(nusc, config=config_factory('detection_cvpr_2019'), result_path=path, eval_set=eval_set,
                           output_dir=vdir, verbose=False)
        metrics, _ = ev.evaluate()
        m = metrics.serialize()
        rows[name] = dict(cfg=cfg, NDS=m['nd_score'], mAP=m['mean_ap'], mATE=m['tp_errors']['trans_err'],
                          mAOE=m['tp_errors']['orient_err'])
    return rows


def parse_variants(items):
    """``NAME=off`` or ``NAME=te:ratio=1`` / ``NAME=exp:alpha=0.5,ref_std=2`` → dict."""
    out = {}
    for item in items:
        name, _, spec = item.partition('=')
        if spec == 'off':
            out[name] = None
            continue
        kind, _, args = spec.partition(':')
        cfg = dict(type=kind)
        for kv in filter(None, args.split(',')):
            k, _, v = kv.partition('=')
            cfg[k] = float(v)
        out[name] = cfg
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--results', help='directory with results_nusc.json and its sidecar (skips inference)')
    parser.add_argument('--split', default='val', choices=['val', 'train'])
    parser.add_argument('--mc-samples', type=int, default=64, help='Monte-Carlo pose samples per box (0: none)')
    parser.add_argument('--out-dir', default='work_dirs/uncertainty_report')
    parser.add_argument('--data-root', default='data/synthetic_nuscenes')
    parser.add_argument('--version', default='v1.0-mini')
    parser.add_argument('--eval-set', default=None, help='devkit split (default: mini_val / mini_train by --split)')
    parser.add_argument('--calibration', help='JSON of tools/fit_uncertainty_calibration.py')
    parser.add_argument('--json', help='write the report here (e.g. docs/results/uncertainty_r18_synthetic.json)')
    parser.add_argument('--png', help='reliability diagram PNG')
    parser.add_argument('--title', default='EPro-PnP-Det pose uncertainty')
    parser.add_argument('--score-fold', nargs='*', default=None,
                        help="variants for the score table, e.g. off=off te1=te:ratio=1 exp=exp:alpha=0.5,ref_std=2")
    parser.add_argument('--cfg-options', nargs='*', default=[], help='passed to tools/test.py')
    args = parser.parse_args(argv)
    eval_set = args.eval_set or ('mini_val' if args.split == 'val' else 'mini_train')
    os.makedirs(args.out_dir, exist_ok=True)
    if args.results:
        results_dir = args.results
    elif args.config and args.checkpoint:
        results_dir = run_inference(args.config, args.checkpoint, args.out_dir, args.split, args.mc_samples,
                                    args.cfg_options)
    else:
        parser.error('give CONFIG CHECKPOINT or --results DIR')
    nusc, eval_cfg = _devkit(args.data_root, args.version)
    classes = list(eval_cfg.class_names)
    records = matched_records(results_dir, args.data_root, args.version, eval_set, nusc=nusc)
    today = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    out = dict(date=today,
               results=results_dir, eval_set=eval_set, levels=list(LEVELS), components={
        'depth': 'camera z (m)', 'lateral': 'camera x (m)', 'yaw': 'camera yaw (rad; barrier modulo pi, no cones)'},
        raw=report(records, classes))
    print(f'\n{len(records)} matched boxes ({eval_set})\n\nLaplace, raw\n' + format_table(out['raw']))
    if 'mc' in out['raw']['overall']:
        print('\nMonte Carlo posterior\n' + format_table(out['raw'], 'mc'))
    curves = reliability_curves(records)
    calib = None
    if args.calibration:
        with open(args.calibration) as f:
            calib = json.load(f)
        cal = apply_calibration(records, calib)
        out['calibration'] = args.calibration
        out['calibrated'] = report(cal, classes)
        print('\nLaplace, calibrated\n' + format_table(out['calibrated']))
        curves['laplace_calibrated'] = reliability_curves(cal)['laplace']
    out['reliability'] = dict(levels=list(RELIABILITY_LEVELS), curves=curves)
    if args.score_fold:
        rows = score_fold_table(results_dir, args.data_root, args.version, eval_set,
                                parse_variants(args.score_fold), args.out_dir, calib, nusc)
        out['score_fold'] = rows
        print('\n| score | NDS | mAP | mATE | mAOE |\n|---|---|---|---|---|')
        for name, r in rows.items():
            print(f"| {name} {r['cfg'] or ''} | {r['NDS']:.4f} | {r['mAP']:.4f} | {r['mATE']:.4f} | {r['mAOE']:.4f} |")
    if args.png:
        plot_reliability(curves, args.png, args.title, len(records))
        print(f'reliability diagram: {args.png}')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)
        print(f'report: {args.json}')
    return out


if __name__ == '__main__':
    main()
