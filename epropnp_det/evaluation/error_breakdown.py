"""Where a nuScenes detection result loses accuracy: per-class error decomposition of matched detections.

The devkit reports one mean translation error per class (ATE). For a monocular detector it matters whether that
error lies along the line of sight (depth: scale of the 2D-3D correspondences, predicted size) or across it
(2D position), and whether orientation errors are small or front/back flips. This module matches predictions to
ground truth exactly as ``nuscenes.eval.detection.algo.accumulate`` does (descending score, nearest unmatched
ground truth of the same class and sample within ``dist_th`` metres of BEV centre distance) and decomposes the
errors of the matched pairs. The devkit only returns aggregated curves, not the pairs, hence the own matching.

Frames and units: boxes are the devkit's ``EvalBoxes`` in the global frame, after ``add_center_dist`` and
``filter_eval_boxes`` (the same loading and filtering as ``DetectionEval``). ``ego_translation`` is the box
centre minus the ego position (global axes), so for each matched pair

* radial error = (pred − gt) · r̂ in metres, r̂ the unit BEV vector from the ego to the ground-truth centre
  (≈ the camera depth direction beyond a few metres, the cameras being within ~1.5 m of the ego origin);
  positive = predicted too far;
* tangential error = |(pred − gt) · t̂| in metres, t̂ ⟂ r̂ in BEV;
* size error = log(pred / gt) per (w, l, h) (devkit size order);
* yaw error = pred − gt yaw wrapped by the devkit's ``angle_diff``, for the classes the devkit scores orientation
  on (period π for barriers, as in the devkit; none for traffic cones).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# Distance bins (m) of the relative depth-error table.
DIST_BINS = (0.0, 10.0, 20.0, 30.0, 40.0, np.inf)


@dataclass
class ClassErrors:
    """Errors of the matched pairs of one class: each list has one entry per matched pair (M entries)."""
    num_gt: int = 0
    dist: List[float] = field(default_factory=list)         # gt BEV distance to the ego (m)
    radial: List[float] = field(default_factory=list)       # signed, m
    tangential: List[float] = field(default_factory=list)   # signed, m
    log_size: List[Tuple[float, float, float]] = field(default_factory=list)   # log(pred/gt) (w, l, h)
    yaw: List[float] = field(default_factory=list)          # wrapped, rad; empty for classes without orientation

    @property
    def num_matched(self) -> int:
        return len(self.radial)


def match_and_decompose(gt_boxes, pred_boxes, class_names: Sequence[str], dist_th: float = 2.0,
                        score_thr: float = 0.0) -> Dict[str, ClassErrors]:
    """Matches as the devkit's ``accumulate`` and decomposes the errors of the pairs.

    Args:
        gt_boxes, pred_boxes: devkit ``EvalBoxes`` of ``DetectionBox`` (after ``add_center_dist`` and
            ``filter_eval_boxes``), global frame.
        class_names: detection classes to report.
        dist_th: BEV centre-distance threshold for a match (m); the devkit's TP errors use 2.0.
        score_thr: predictions below this score are ignored.

    Returns:
        ``{class name: ClassErrors}``.
    """
    from nuscenes.eval.common.utils import angle_diff, quaternion_yaw
    from pyquaternion import Quaternion

    def _yaw(box) -> float:
        return quaternion_yaw(Quaternion(box.rotation))

    out = {c: ClassErrors() for c in class_names}
    for cls in class_names:
        errs = out[cls]
        gts = {tok: [b for b in gt_boxes[tok] if b.detection_name == cls] for tok in gt_boxes.sample_tokens}
        errs.num_gt = sum(len(v) for v in gts.values())
        preds = [b for tok in pred_boxes.sample_tokens for b in pred_boxes[tok]
                 if b.detection_name == cls and b.detection_score >= score_thr]
        taken = set()
        for p in sorted(preds, key=lambda b: -b.detection_score):
            best, best_d = None, np.inf
            for j, g in enumerate(gts.get(p.sample_token, ())):
                if (p.sample_token, j) in taken:
                    continue
                d = float(np.linalg.norm(np.asarray(p.translation[:2]) - np.asarray(g.translation[:2])))
                if d < best_d:
                    best, best_d = j, d
            if best is None or best_d >= dist_th:
                continue
            taken.add((p.sample_token, best))
            g = gts[p.sample_token][best]
            ge = np.asarray(g.ego_translation[:2], dtype=np.float64)
            rng = float(np.linalg.norm(ge))
            r_hat = ge / max(rng, 1e-6)
            e = np.asarray(p.translation[:2], dtype=np.float64) - np.asarray(g.translation[:2], dtype=np.float64)
            errs.dist.append(rng)
            errs.radial.append(float(e @ r_hat))
            errs.tangential.append(float(e @ np.array([-r_hat[1], r_hat[0]])))
            errs.log_size.append(tuple(np.log(np.maximum(p.size, 1e-6) / np.maximum(g.size, 1e-6)).tolist()))
            if cls != 'traffic_cone':
                period = np.pi if cls == 'barrier' else 2 * np.pi
                errs.yaw.append(float(angle_diff(_yaw(p), _yaw(g), period)))
    return out


def summarise(errors: Dict[str, ClassErrors]) -> Dict[str, Dict[str, float]]:
    """Per-class summary row (NaN where a class has no matched pair / no orientation).

    Keys: ``gt``, ``matched`` (counts), ``recall``; ``radial_bias`` (median signed, m), ``radial`` (median |·|, m),
    ``radial_rel`` (median |radial| / distance), ``tangential`` (median |·|, m), ``size_w/l/h`` (median
    |log ratio|), ``yaw_deg`` (median |·|, degrees), ``yaw_ok`` (fraction < 22.5°), ``yaw_flip`` (fraction > 157.5°,
    front/back confusions; not applicable with the barrier's period π).
    """
    rows = {}
    nan = float('nan')
    for cls, e in errors.items():
        row = dict(gt=e.num_gt, matched=e.num_matched, recall=e.num_matched / e.num_gt if e.num_gt else nan)
        if e.num_matched:
            rad, dist = np.asarray(e.radial), np.asarray(e.dist)
            row.update(radial_bias=float(np.median(rad)), radial=float(np.median(np.abs(rad))),
                       radial_rel=float(np.median(np.abs(rad) / np.maximum(dist, 1e-6))),
                       tangential=float(np.median(np.abs(e.tangential))))
            ls = np.abs(np.asarray(e.log_size))
            row.update({f'size_{k}': float(np.median(ls[:, i])) for i, k in enumerate('wlh')})
        else:
            row.update({k: nan for k in ('radial_bias', 'radial', 'radial_rel', 'tangential',
                                         'size_w', 'size_l', 'size_h')})
        if e.yaw:
            y = np.abs(np.asarray(e.yaw))
            row.update(yaw_deg=float(np.degrees(np.median(y))), yaw_ok=float(np.mean(y < np.pi / 8)),
                       yaw_flip=float(np.mean(y > 7 * np.pi / 8)) if cls != 'barrier' else nan)
        else:
            row.update(yaw_deg=nan, yaw_ok=nan, yaw_flip=nan)
        rows[cls] = row
    return rows


def depth_by_distance(errors: Dict[str, ClassErrors], bins: Sequence[float] = DIST_BINS) -> List[dict]:
    """All classes pooled: per BEV-distance bin, the count and median relative / absolute radial error."""
    dist = np.concatenate([np.asarray(e.dist, dtype=np.float64) for e in errors.values()] + [np.zeros(0)])
    rad = np.concatenate([np.asarray(e.radial, dtype=np.float64) for e in errors.values()] + [np.zeros(0)])
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (dist >= lo) & (dist < hi)
        out.append(dict(lo=lo, hi=hi, n=int(m.sum()),
                        radial=float(np.median(np.abs(rad[m]))) if m.any() else float('nan'),
                        radial_rel=float(np.median(np.abs(rad[m]) / dist[m])) if m.any() else float('nan')))
    return out


def format_breakdown(rows: Dict[str, Dict[str, float]], by_dist: Optional[List[dict]] = None) -> str:
    """Markdown tables of :func:`summarise` (and :func:`depth_by_distance`)."""
    def f(v, fmt):
        return '–' if v != v else format(v, fmt)

    lines = ['| class | gt | matched | recall | radial bias (m) | radial (m) | radial / dist | tangential (m) '
             '| size w / l / h (|log|) | yaw (°) | yaw < 22.5° | flips > 157.5° |',
             '|---|' + '---|' * 11]
    for cls, r in rows.items():
        lines.append(
            f"| {cls} | {r['gt']} | {r['matched']} | {f(r['recall'], '.2f')} | {f(r['radial_bias'], '+.2f')} "
            f"| {f(r['radial'], '.2f')} | {f(r['radial_rel'], '.3f')} | {f(r['tangential'], '.2f')} "
            f"| {f(r['size_w'], '.3f')} / {f(r['size_l'], '.3f')} / {f(r['size_h'], '.3f')} "
            f"| {f(r['yaw_deg'], '.1f')} | {f(r['yaw_ok'], '.2f')} | {f(r['yaw_flip'], '.2f')} |")
    if by_dist:
        lines += ['', '| distance (m) | matched | radial (m) | radial / dist |', '|---|---|---|---|']
        for b in by_dist:
            hi = '∞' if np.isinf(b['hi']) else f"{b['hi']:.0f}"
            lines.append(f"| {b['lo']:.0f}–{hi} | {b['n']} | {f(b['radial'], '.2f')} | {f(b['radial_rel'], '.3f')} |")
    return '\n'.join(lines)


def load_eval_boxes(data_root: str, result_path: str, version: str = 'v1.0-mini', eval_set: str = 'mini_val',
                    eval_version: str = 'detection_cvpr_2019', verbose: bool = False):
    """Loads and filters ground truth and predictions exactly as the devkit's ``DetectionEval`` does.

    Returns:
        ``(gt_boxes, pred_boxes, class_names)``; raises ``ValueError`` naming ``result_path`` when its samples are
        not all in ``eval_set``.
    """
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt, load_prediction
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.data_classes import DetectionBox

    cfg = config_factory(eval_version)
    nusc = NuScenes(version=version, dataroot=data_root, verbose=verbose)
    pred, _ = load_prediction(result_path, cfg.max_boxes_per_sample, DetectionBox, verbose=verbose)
    gt = load_gt(nusc, eval_set, DetectionBox, verbose=verbose)
    extra = set(pred.sample_tokens) - set(gt.sample_tokens)
    if extra:
        raise ValueError(f'{result_path}: {len(extra)} sample tokens are not in {version}/{eval_set} '
                         f'(e.g. {sorted(extra)[0]})')
    pred = filter_eval_boxes(nusc, add_center_dist(nusc, pred), cfg.class_range, verbose=verbose)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), cfg.class_range, verbose=verbose)
    return gt, pred, list(cfg.class_names)


def plot_breakdown(errors: Dict[str, ClassErrors], out_file: str, title: str = '') -> None:
    """PNG: radial error vs distance per class (left) and the |yaw error| histogram per class (right)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap('tab10')
    for i, (cls, e) in enumerate(errors.items()):
        if e.num_matched:
            ax0.scatter(e.dist, e.radial, s=8, color=cmap(i % 10), label=cls, alpha=0.7)
    ax0.axhline(0.0, color='k', lw=0.8)
    ax0.set_xlabel('ground-truth distance to ego (m)')
    ax0.set_ylabel('radial error (m, + = too far)')
    ax0.legend(fontsize=7, markerscale=2)
    bins = np.linspace(0, 180, 13)
    names = [c for c, e in errors.items() if e.yaw and c != 'barrier']
    if names:
        ax1.hist([np.degrees(np.abs(errors[c].yaw)) for c in names], bins=bins, stacked=True,
                 color=[cmap(list(errors).index(c) % 10) for c in names], label=names)
        ax1.legend(fontsize=7)
    ax1.set_xlabel('|yaw error| (°)')
    ax1.set_ylabel('matched detections')
    ax1.set_xticks(bins[::2])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
