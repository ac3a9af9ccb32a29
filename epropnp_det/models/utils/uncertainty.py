"""Pose uncertainty as an output: per-box standard deviations and the uncertainty-aware detection score.

Pose ``[x, y, z, yaw]`` in the camera frame of the image (OpenCV axes: +x right, +y down, +z forward; metres,
radians); its covariance ``pose_cov`` (n, 4, 4) is the PnP layer's Laplace approximation (inverse Gauss–Newton
Hessian of the weighted reprojection cost at the solution, docs/method.md §2.4). In the camera frame the depth is
``z`` and the lateral position is ``x``.

Score option (``test_cfg.score_uncertainty``), :func:`fold_uncertainty_into_score`:

* ``dict(type='te', ratio=r)`` (default type): the Laplace counterpart of the paper's Monte-Carlo "te" score
  (docs/method.md §6.2): ``s_te = E_{e ~ N(0, Σ_xz)}[clamp((2.5 − log2 ‖e‖) / 4, 0, 1)]`` — the expected 3D-score
  target of the BEV translation error ``e`` if the pose were distributed as its Laplace approximation around the
  solution. The expectation is a deterministic quadrature (:func:`te_score_expectation`), no sampling.
  ``score ← score · s_te^r`` (``r = 1``: multiply by the full te score).
* ``dict(type='exp', alpha=α, ref_std=σ_ref, alpha_yaw=β)``: ``score ← score · exp(−α · σ_bev / σ_ref[label] −
  β · σ_yaw)`` with ``σ_bev = sqrt(σ_x² + σ_z²)`` (metres) and ``σ_ref`` a scalar or one value per class (metres).

Both leave the ranking among boxes of equal spread unchanged and only lower scores.
"""
import math
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ['te_score_expectation', 'fold_uncertainty_into_score', 'pose_cov_to_std', 'pose_std_components',
           'scale_pose_cov']

_NUM_ANGLES = 128  # directions φ in [0, π) (trapezoid rule on a smooth periodic integrand)
_NUM_RADIAL = 32  # Gauss–Legendre nodes in log-radius between the kinks of the te score
_TE_LO, _TE_HI = 2 ** -1.5, 2 ** 2.5  # te score is 1 below, 0 above (metres)


def te_score_expectation(cov_xz: Tensor) -> Tensor:
    """Expected te score ``E[clamp((2.5 − log2 ‖e‖)/4, 0, 1)]`` for ``e ~ N(0, cov_xz)``.

    Deterministic quadrature. Write ``e = ρ·S u(φ)`` (``S`` = symmetric square root of the covariance, ``ρ`` ~
    Rayleigh(1), ``φ`` uniform); along a direction ``‖e‖ = ρ c`` with ``c² = u(φ)ᵀ Σ u(φ)``, and integrating the te
    score by parts against the Rayleigh CDF gives
    ``E[s(ρc)] = 1/(4 ln 2) ∫_{ln a}^{ln b} (1 − exp(−e^{2v} / (2c²))) dv`` (``a = 2^-1.5``, ``b = 2^2.5`` m):
    a smooth integrand on a finite interval (Gauss–Legendre), averaged over ``φ`` (trapezoid rule).

    Args:
        cov_xz: (..., 2, 2) covariance of the BEV position ``(x, z)`` (m²), symmetric positive semi-definite
            (a singular or zero covariance is fine).

    Returns:
        (...,) in [0, 1]; 1 for a zero spread, → 0 for spreads far above 2^2.5 m.
    """
    dt = cov_xz.dtype if cov_xz.dtype == torch.float64 else torch.float32
    cov = cov_xz.to(dt)
    phi = torch.arange(_NUM_ANGLES, dtype=dt, device=cov.device) * (math.pi / _NUM_ANGLES)
    u = torch.stack((phi.cos(), phi.sin()), -1)  # (P, 2)
    c2 = torch.einsum('pi,...ij,pj->...p', u, cov, u).clamp(min=1e-30)  # (..., P)
    x, w = np.polynomial.legendre.leggauss(_NUM_RADIAL)
    lo, hi = math.log(_TE_LO), math.log(_TE_HI)
    v = torch.as_tensor(lo + (x + 1) * (hi - lo) / 2, dtype=dt, device=cov.device)  # (R,)
    wv = torch.as_tensor(w * (hi - lo) / 2, dtype=dt, device=cov.device)
    integrand = 1 - torch.exp(-torch.exp(2 * v) / (2 * c2[..., None]))  # (..., P, R)
    per_dir = (integrand * wv).sum(-1) / (4 * math.log(2))
    return per_dir.mean(-1).clamp(0, 1)


def _per_class(value: Union[float, Sequence[float]], labels: Tensor, like: Tensor) -> Tensor:
    if isinstance(value, (int, float)):
        return torch.full(labels.shape, float(value), dtype=like.dtype, device=like.device)
    table = torch.as_tensor(list(value), dtype=like.dtype, device=like.device)
    if labels.numel() and int(labels.max()) >= len(table):
        raise ValueError(f'score_uncertainty: {len(table)} per-class values but label {int(labels.max())}')
    return table[labels]


def fold_uncertainty_into_score(scores: Tensor, pose_cov: Tensor, labels: Tensor, cfg: dict) -> Tensor:
    """Detection scores lowered by the pose uncertainty (module docstring for the forms).

    Args:
        scores: (n,) detection scores in [0, 1].
        pose_cov: (n, 4, 4) covariance of ``[x, y, z, yaw]``, camera frame (m², rad²), after any calibration.
        labels: (n,) long class indices (for per-class ``ref_std``).
        cfg: ``dict(type='te', ratio=1.0)`` or ``dict(type='exp', alpha=1.0, ref_std=1.0, alpha_yaw=0.0)``.

    Returns:
        (n,) new scores, same dtype/device as ``scores``; a non-finite covariance gives score 0.
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', 'te')
    cov = pose_cov.to(torch.float64)
    finite = torch.isfinite(cov).flatten(1).all(1) if len(cov) else torch.ones(0, dtype=torch.bool,
                                                                             device=cov.device)
    cov = torch.where(finite[:, None, None], cov, torch.zeros_like(cov))
    if kind == 'te':
        ratio = float(cfg.pop('ratio', 1.0))
        if ratio < 0:
            raise ValueError(f'score_uncertainty ratio must be >= 0, got {ratio}')
        factor = te_score_expectation(cov[:, [0, 2]][:, :, [0, 2]]).pow(ratio)
    elif kind == 'exp':
        alpha = float(cfg.pop('alpha', 1.0))
        alpha_yaw = float(cfg.pop('alpha_yaw', 0.0))
        ref = _per_class(cfg.pop('ref_std', 1.0), labels.long(), cov)
        sigma_bev = (cov[:, 0, 0] + cov[:, 2, 2]).clamp(min=0).sqrt()
        sigma_yaw = cov[:, 3, 3].clamp(min=0).sqrt()
        factor = torch.exp(-alpha * sigma_bev / ref - alpha_yaw * sigma_yaw)
    else:
        raise ValueError(f"score_uncertainty type must be 'te' or 'exp', got {kind!r}")
    if cfg:
        raise ValueError(f'score_uncertainty ({kind}): unknown keys {sorted(cfg)}')
    factor = torch.where(finite, factor, torch.zeros_like(factor))
    return (scores.to(torch.float64) * factor).to(scores.dtype)


# ------------------------------------------------------------------------------------ per-box standard deviations
#: pose axes: ``[x, y, z, yaw]`` camera frame; lateral position = camera x (right), depth = camera z (forward)
POSE_STD_AXES = dict(lateral_std=0, depth_std=2, yaw_std=3)


def pose_cov_to_std(pose_cov: Tensor) -> Tensor:
    """(..., 4, 4) covariance of ``[x, y, z, yaw]`` → (..., 4) standard deviations ``sqrt(diag)`` (m, m, m, rad).

    A negative diagonal (never produced by the Laplace covariance, which is positive definite) gives 0; NaN stays
    NaN.

    >>> pose_cov_to_std(torch.diag(torch.tensor([4., 1., 9., 0.01])))
    tensor([2.0000, 1.0000, 3.0000, 0.1000])
    """
    return torch.diagonal(pose_cov, dim1=-2, dim2=-1).clamp(min=0).sqrt()


def pose_std_components(pose_cov: Tensor) -> dict:
    """Named standard deviations of (..., 4, 4) pose covariances: ``lateral_std`` (camera x, m), ``depth_std``
    (camera z, m), ``yaw_std`` (rad), each (...,)."""
    std = pose_cov_to_std(pose_cov)
    return {name: std[..., i] for name, i in POSE_STD_AXES.items()}


def scale_pose_cov(pose_cov: Tensor, labels: Tensor, scales) -> Tensor:
    """Per-class calibration of pose covariances: the standard deviation of axis ``i`` is multiplied by
    ``s[label, i]``, so ``cov_ij ← s_i · s_j · cov_ij`` (correlations unchanged).

    Args:
        pose_cov: (n, 4, 4) covariance of ``[x, y, z, yaw]``.
        labels: (n,) long class indices.
        scales: one sequence of 4 factors per class (num_classes, 4), or a single sequence of 4 for every class.

    Returns:
        (n, 4, 4), same dtype/device as ``pose_cov``.
    """
    s = torch.as_tensor(scales, dtype=pose_cov.dtype, device=pose_cov.device)
    if s.dim() not in (1, 2) or s.shape[-1] != pose_cov.shape[-1]:
        raise ValueError(f'pose_cov_scale must be (num_classes, {pose_cov.shape[-1]}) or ({pose_cov.shape[-1]},), '
                         f'got {tuple(s.shape)}')
    per_box = s.expand(labels.shape[0], -1) if s.dim() == 1 else s[labels]  # (n, 4), no host synchronisation
    return pose_cov * per_box[:, :, None] * per_box[:, None, :]
