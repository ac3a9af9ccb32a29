"""Pose-uncertainty bookkeeping and calibration statistics (numpy only; no mm* imports).

Frames and units. The model's pose is ``[x, y, z, yaw]`` in the camera frame (OpenCV axes: +x right, +y down,
+z forward; metres, radians; yaw about the camera y axis, heading ``(cos yaw, 0, −sin yaw)``). In that frame the
depth is ``z`` and the lateral position ``x``. The global (nuScenes) pose is ``[x, y, z, yaw_g]`` with ``yaw_g`` the
heading angle about the global +z axis (counter-clockwise from +x), as in the results JSON.

Covariance to the global frame (:func:`covariance_to_global`): the box centre goes through the rigid
camera→global transform ``p_g = R p_c + t`` and the heading through ``yaw_g = atan2(h_y, h_x)``, ``h = R (cos yaw,
0, −sin yaw)``. First-order propagation with ``J = blockdiag(R, ∂yaw_g/∂yaw)`` gives ``Σ_g = J Σ_c Jᵀ``. For a level
camera ``∂yaw_g/∂yaw = −1`` (camera y points down, global z up): the yaw variance is unchanged and the position–yaw
covariances change sign; for the slightly tilted nuScenes cameras it differs from −1 by the tilt's second order.

Calibration statistics (used by ``tools/uncertainty_report.py`` and ``tools/fit_uncertainty_calibration.py``):
central intervals of a Gaussian marginal ``|e| ≤ z_p σ`` (``z_p`` = the ``(1+p)/2`` normal quantile), central
weighted-quantile intervals of Monte-Carlo samples, Gaussian NLL, Spearman rank correlation, per-class scale fits.
"""
import json
import math
from statistics import NormalDist
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['SIDECAR_FORMAT', 'SIDECAR_NAME', 'LEVELS', 'COMPONENTS', 'yaw_cam_to_global', 'covariance_to_global',
           'box_uncertainty_entry', 'load_sidecar', 'central_z', 'gaussian_coverage', 'weighted_quantile',
           'sample_interval_coverage', 'gaussian_nll', 'spearman', 'fit_scale', 'match_by_center_distance',
           'wrap_angle', 'yaw_from_heading_cam']

SIDECAR_FORMAT = 'epropnp_det.pose_uncertainty/1'
#: written beside ``results_nusc.json`` by ``EProPnPNuScenesMetric``
SIDECAR_NAME = 'results_nusc_uncertainty.json'
#: nominal central-interval levels of the reports
LEVELS = (0.5, 0.68, 0.9, 0.95)
#: report components: name → index into the camera-frame pose ``[x, y, z, yaw]``
COMPONENTS = dict(depth=2, lateral=0, yaw=3)


def wrap_angle(a):
    """Angles (radians) wrapped to [−π, π)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def yaw_from_heading_cam(heading_cam: np.ndarray) -> np.ndarray:
    """(..., 3) heading direction in the camera frame → camera yaw ``atan2(−h_z, h_x)`` (radians)."""
    return np.arctan2(-heading_cam[..., 2], heading_cam[..., 0])


def yaw_cam_to_global(yaw_cam: np.ndarray, rot_c2g: np.ndarray):
    """Global heading angle and its derivative w.r.t. the camera yaw.

    Args:
        yaw_cam: (n,) camera-frame yaw (radians).
        rot_c2g: (3, 3) camera → global rotation.

    Returns:
        yaw_g (n,) radians about global +z, dyaw (n,) ``∂yaw_g/∂yaw_cam`` (−1 for a level camera).
    """
    c, s = np.cos(yaw_cam), np.sin(yaw_cam)
    h = np.stack([c, np.zeros_like(c), -s], -1) @ rot_c2g.T  # (n, 3) heading in the global frame
    dh = np.stack([-s, np.zeros_like(c), -c], -1) @ rot_c2g.T
    yaw_g = np.arctan2(h[:, 1], h[:, 0])
    dyaw = (h[:, 0] * dh[:, 1] - h[:, 1] * dh[:, 0]) / np.maximum(h[:, 0] ** 2 + h[:, 1] ** 2, 1e-12)
    return yaw_g, dyaw


def covariance_to_global(cov_cam: np.ndarray, yaw_cam: np.ndarray, cam2global: np.ndarray) -> np.ndarray:
    """(n, 4, 4) camera-frame covariance of ``[x, y, z, yaw]`` → (n, 4, 4) global ``[x, y, z, yaw_g]``
    (module docstring; ``cam2global`` is the (4, 4) rigid transform the box went through)."""
    cov_cam = np.asarray(cov_cam, dtype=np.float64).reshape(-1, 4, 4)
    rot = np.asarray(cam2global, dtype=np.float64)[:3, :3]
    _, dyaw = yaw_cam_to_global(np.asarray(yaw_cam, dtype=np.float64).reshape(-1), rot)
    J = np.zeros((len(cov_cam), 4, 4))
    J[:, :3, :3] = rot
    J[:, 3, 3] = dyaw
    return J @ cov_cam @ J.transpose(0, 2, 1)


def _std(cov: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0, None))


def box_uncertainty_entry(camera: str, pose_cam: np.ndarray, cov_cam: np.ndarray, cam2global: np.ndarray,
                          samples_cam: Optional[np.ndarray] = None,
                          sample_weights: Optional[np.ndarray] = None) -> dict:
    """One box's sidecar record (JSON-ready).

    Args:
        camera: camera name (e.g. ``'CAM_FRONT'``) whose image gave the box.
        pose_cam: (4,) ``[x, y, z, yaw]`` camera frame (the box centre and yaw the JSON box was made from).
        cov_cam: (4, 4) camera-frame covariance.
        cam2global: (4, 4) camera → global transform of that image.
        samples_cam / sample_weights: optional (K, 4) camera-frame Monte-Carlo pose samples and (K,) weights.

    Returns:
        dict with ``camera``, ``pose_cov`` (global ``[x, y, z, yaw_g]``), ``pose_std`` (global ``x, y, z, yaw`` and
        camera-frame ``depth`` = σ_z, ``lateral`` = σ_x), ``pose_cam``, ``pose_cov_cam`` and, with samples,
        ``pose_samples_cam``/``pose_sample_weights``.
    """
    pose_cam = np.asarray(pose_cam, dtype=np.float64)
    cov_cam = np.asarray(cov_cam, dtype=np.float64)
    cov_g = covariance_to_global(cov_cam[None], pose_cam[None, 3], cam2global)[0]
    sg, sc = _std(cov_g), _std(cov_cam)
    out = dict(camera=camera, pose_cov=cov_g.tolist(),
               pose_std=dict(x=sg[0], y=sg[1], z=sg[2], yaw=sg[3], depth=sc[2], lateral=sc[0]),
               pose_cam=pose_cam.tolist(), pose_cov_cam=cov_cam.tolist())
    out['pose_std'] = {k: float(v) for k, v in out['pose_std'].items()}
    if samples_cam is not None:
        out['pose_samples_cam'] = np.asarray(samples_cam, dtype=np.float64).tolist()
        out['pose_sample_weights'] = np.asarray(sample_weights, dtype=np.float64).tolist()
    return out


def load_sidecar(path: str) -> dict:
    """Reads a sidecar; returns the JSON dict (``results``: sample token → list aligned with the results JSON's
    boxes of that sample; ``cam2global``: sample token → camera name → (4, 4))."""
    with open(path) as f:
        data = json.load(f)
    if data.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: not a pose-uncertainty sidecar (format {data.get("format")!r})')
    return data


# ------------------------------------------------------------------------------------------------ statistics
def central_z(level: float) -> float:
    """Half-width in standard deviations of the central ``level`` interval of a normal distribution."""
    return NormalDist().inv_cdf((1 + level) / 2)


def gaussian_coverage(err: np.ndarray, std: np.ndarray, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Fraction of ``|err| ≤ z_p · std`` for each level (err, std: (m,)); returns (L,)."""
    r = np.abs(np.asarray(err, dtype=np.float64)) / np.maximum(np.asarray(std, dtype=np.float64), 1e-300)
    return np.array([(r <= central_z(p)).mean() if len(r) else np.nan for p in levels])


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles of weighted samples (values, weights: (m, K)) → (len(q), m); the weighted CDF is interpolated
    between the samples at the midpoints of their weight masses."""
    order = np.argsort(values, axis=1)
    v = np.take_along_axis(values, order, 1)
    w = np.take_along_axis(np.asarray(weights, dtype=np.float64), order, 1)
    w = w / w.sum(1, keepdims=True)
    cdf = np.cumsum(w, 1) - 0.5 * w
    return np.stack([np.array([np.interp(p, c, x) for c, x in zip(cdf, v)]) for p in q])


def sample_interval_coverage(truth_rel: np.ndarray, samples_rel: np.ndarray, weights: np.ndarray,
                             levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Coverage of central weighted-quantile intervals of Monte-Carlo samples.

    Args:
        truth_rel: (m,) true value minus the point estimate (angles wrapped to [−π, π)).
        samples_rel: (m, K) samples minus the point estimate (same wrapping).
        weights: (m, K) importance weights (normalised here).

    Returns:
        (L,) fraction of truths inside ``[Q((1−p)/2), Q((1+p)/2)]``.
    """
    if len(truth_rel) == 0:
        return np.full(len(levels), np.nan)
    out = []
    for p in levels:
        lo, hi = weighted_quantile(samples_rel, weights, [(1 - p) / 2, (1 + p) / 2])
        out.append(((truth_rel >= lo) & (truth_rel <= hi)).mean())
    return np.array(out)


def gaussian_nll(err: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Negative log-density of ``err`` (m, d) under N(0, cov) (m, d, d); returns (m,) nats."""
    err = np.asarray(err, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    d = err.shape[-1]
    sign, logdet = np.linalg.slogdet(cov)
    maha = np.einsum('mi,mi->m', err, np.linalg.solve(cov, err[..., None])[..., 0])
    nll = 0.5 * (maha + logdet + d * math.log(2 * math.pi))
    return np.where(sign > 0, nll, np.inf)


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks 0..m−1 with ties given their average rank."""
    order = np.argsort(a, kind='stable')
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (m,) arrays (NaN for m < 3 or a constant input)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return float('nan')
    ra, rb = _rank(a), _rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float('nan')


def fit_scale(err: np.ndarray, std: np.ndarray, method: str = 'coverage68') -> float:
    """Scale factor ``s`` for the standard deviations of one component (err, std: (m,)).

    ``'coverage68'``: the 68.27 % quantile of ``|err|/std`` (after scaling, exactly 68.27 % of the fit set lie
    within ±1 σ; robust to the few gross errors that the 2 m matching lets through). ``'ml'``: the Gaussian maximum
    likelihood ``s² = mean((err/std)²)`` (pulled up by heavy tails).
    """
    r = np.abs(np.asarray(err, dtype=np.float64)) / np.maximum(np.asarray(std, dtype=np.float64), 1e-300)
    if len(r) == 0:
        return 1.0
    if method == 'coverage68':
        return float(np.quantile(r, 2 * NormalDist().cdf(1) - 1))
    if method == 'ml':
        return float(np.sqrt(np.mean(r ** 2)))
    raise ValueError(f"fit_scale method must be 'coverage68' or 'ml', got {method!r}")


def match_by_center_distance(pred: List[dict], gt: List[dict], dist_thr: float = 2.0) -> List[tuple]:
    """Greedy matching as the nuScenes devkit's ``accumulate`` does for one class: predictions of all samples in
    descending score order, each takes the nearest not yet matched ground-truth box of its sample whose BEV centre
    distance is below ``dist_thr`` (metres).

    Args:
        pred: dicts with ``sample_token``, ``translation`` (3,), ``detection_score`` (and anything else).
        gt: dicts with ``sample_token``, ``translation``.

    Returns:
        list of (pred index, gt index) pairs.
    """
    by_sample: Dict[str, List[int]] = {}
    for j, g in enumerate(gt):
        by_sample.setdefault(g['sample_token'], []).append(j)
    taken = set()
    pairs = []
    order = np.argsort([-p['detection_score'] for p in pred], kind='stable')
    for i in order:
        p = pred[i]
        best, best_d = None, math.inf
        for j in by_sample.get(p['sample_token'], []):
            if j in taken:
                continue
            d = math.hypot(p['translation'][0] - gt[j]['translation'][0], p['translation'][1] - gt[j]['translation'][1])
            if d < best_d:
                best, best_d = j, d
        if best is not None and best_d < dist_thr:
            taken.add(best)
            pairs.append((int(i), best))
    return pairs
