"""Robust (Huber or Cauchy) reprojection cost, IRLS-rescaled residuals and Jacobians (``docs/method.md``).

Per point ``i``: residual ``r_i = (x2d_proj_i − x2d_i) ⊙ w2d_i`` (2-vector, weighted pixels), ``s_i = ‖r_i‖``::

    ρ/2(s) = 0.5 s²              if s ≤ δ
           = δ s − 0.5 δ²        otherwise
    cost(pose) = Σ_i ρ/2(s_i)    (per object; the pose density is p(y | X) ∝ exp(−cost(y)))

With ``robust='cauchy'`` ``ρ/2`` is replaced by the Cauchy cost (:mod:`.robust`, which also lists where
else this arithmetic is written). IRLS rescaling (square root of the Huber weight)
``ρ̃_i = min(sqrt(δ / s_i), 1)`` (δ, s floored at 1e-10):
``r̃_i = r_i ρ̃_i`` and ``J̃_i = J_i ⊙ (w2d_i ρ̃_i)``, so that ``0.5 ‖r̃‖² = cost`` in the quadratic zone and
``J̃ᵀr̃`` is the exact cost gradient everywhere. Autograd differentiates through ``ρ̃`` (zero where it is clamped
to 1), as the reference's differentiable branch does.

Shapes: ``x3d (*, N, n, 3)`` object frame metres, ``x2d (*, N, n, 2)`` pixels, ``w2d (*, N, n, 2)``,
``pose (*, N, 4|7)``, ``delta (N,)`` (or anything broadcasting to ``(*, N)``); leading dims broadcast.
All functions are differentiable w.r.t. x3d, x2d, w2d and delta.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ._amp import fp32
from .camera import project_planar
from .kernels import S2_FLOOR, cost_prepared, normal_equations_prepared, prepare
from .robust import DELTA_FLOOR, check_robust, rho
from .types import CameraParams

__all__ = ['adaptive_huber_delta', 'huber_cost', 'robust_cost', 'evaluate_pnp', 'pnp_cost', 'normal_equations']



@fp32
def adaptive_huber_delta(x2d: Tensor, w2d: Tensor, relative_delta: Union[float, Tensor] = 0.5) -> Tensor:
    """Adaptive Huber threshold ``δ = mean(w2d) · sqrt(var(u) + var(v)) · relative_delta`` (docs/method.md §2.3).

    Args:
        x2d: (*, N, n, 2) pixels; variances are unbiased, over the n points.
        w2d: (*, N, n, 2) weights; mean over points and both axes.
        relative_delta: scale factor (0.5 in every config): a float, or a 0-dim tensor through which δ is
            differentiable (the head's optional learnable ``exp(log_rel_delta)``, docs/method.md §10.15).

    Returns:
        (*, N) δ, differentiable w.r.t. both inputs (detach them first for the v1 behaviour). Degenerate inputs
        give δ = 0 (fewer than 2 points, coincident points, all-zero weights), never NaN.
    """
    n = x2d.shape[-2]
    if n < 2 or x2d.numel() == 0:
        std = x2d.new_zeros(x2d.shape[:-2])
    else:
        var = x2d.var(dim=-2, correction=1).sum(dim=-1)
        std = var.clamp(min=S2_FLOOR).sqrt()
    return w2d.mean(dim=(-2, -1)) * std * relative_delta


def huber_cost(sq_norm: Tensor, delta: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-point Huber cost from squared residual norms.

    Args:
        sq_norm: (*, N, n) ``s²``.
        delta: broadcastable to (*, N, 1).

    Returns:
        cost: (*, N, n) ``ρ/2(s)``; s: (*, N, n) the (floored) norm ``s``.
    """
    s = sq_norm.clamp(min=S2_FLOOR).sqrt()
    m = torch.minimum(s, delta)  # = s in the quadratic zone, δ in the linear zone
    return m * (s - 0.5 * m), s


def robust_cost(sq_norm: Tensor, delta: Tensor, robust: str = 'huber') -> Tuple[Tensor, Tensor]:
    """Per-point robust cost ``ρ(s)`` (:mod:`.robust`) and the floored norm ``s``, from ``s²`` (*, N, n)."""
    s = sq_norm.clamp(min=S2_FLOOR).sqrt()
    return rho(s, delta, robust), s


def _irls_weight(s: Tensor, delta: Tensor, robust: str = 'huber') -> Tensor:
    """sqrt of the IRLS weight ``ρ'(s)/s``: Huber ``min(sqrt(max(δ,1e-10)) · rsqrt(max(s,1e-10)), 1)`` (finite
    gradients), Cauchy ``rsqrt(1 + s²/δ²)``."""
    if robust == 'cauchy':
        return (1 + s * s / delta.clamp(min=DELTA_FLOOR).square()).rsqrt()
    return (delta.clamp(min=1e-10).sqrt() * s.clamp(min=1e-10).rsqrt()).clamp(max=1.0)


def _prep(x2d: Tensor, w2d: Tensor, delta: Tensor):
    if x2d.shape[-1] != 2 or w2d.shape[-1] != 2:
        raise ValueError(f'x2d and w2d must end with 2, got {tuple(x2d.shape)} and {tuple(w2d.shape)}')
    return x2d[..., 0], x2d[..., 1], w2d[..., 0], w2d[..., 1], torch.as_tensor(delta).unsqueeze(-1)


@fp32
def evaluate_pnp(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                 out_jacobian: bool = False, out_residual: bool = False, out_cost: bool = False,
                 clip_jac: bool = True, robust: str = 'huber'
                 ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Project, then compute the requested IRLS residual / Jacobian / cost (docs/method.md §2.3, ``evaluate_pnp``).

    Args:
        x3d, x2d, w2d, pose, camera, delta: see module docstring.
        clip_jac: zero Jacobian rows of clamped coordinates (:func:`.camera.project`).
        robust: ``'huber'`` or ``'cauchy'`` (:mod:`.robust`).

    Returns:
        residual: (*, N, 2n) rescaled residual ``r̃`` ordered ``[u0, v0, u1, v1, ...]``, or ``None``.
        jacobian: (*, N, 2n, T) rescaled Jacobian ``J̃`` w.r.t. the local pose (T = 4 or 6), or ``None``.
        cost: (*, N) robust cost, or ``None``.
    """
    check_robust(robust)
    if out_cost and not (out_jacobian or out_residual):
        return None, None, pnp_cost(x3d, x2d, w2d, pose, camera, delta, robust)
    u_obs, v_obs, wu, wv, delta = _prep(x2d, w2d, delta)
    u, v, ju, jv = project_planar(x3d, pose, camera, out_jac=out_jacobian, clip_jac=clip_jac)
    ru, rv = (u - u_obs) * wu, (v - v_obs) * wv
    cost_pt, s = robust_cost(ru * ru + rv * rv, delta, robust)
    rho = _irls_weight(s, delta, robust)
    residual = jacobian = cost = None
    if out_residual:
        residual = torch.stack([ru * rho, rv * rho], dim=-1).flatten(-2)
    if out_jacobian:
        jacobian = torch.stack([ju * (wu * rho).unsqueeze(-1), jv * (wv * rho).unsqueeze(-1)], dim=-2).flatten(-3, -2)
    if out_cost:
        cost = cost_pt.sum(dim=-1)
    return residual, jacobian, cost


@fp32
def pnp_cost(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
             robust: str = 'huber') -> Tensor:
    """Robust cost only (*, N): the fast path for many poses (Monte-Carlo samples, RSLM proposals).

    Folds ``[K·R | K·t]`` per pose (:mod:`.kernels`): with ``x3d (N, n, 3)`` and poses ``(S, N, D)`` all poses of
    an object are projected by one matmul. Equal to ``evaluate_pnp(..., out_cost=True)[2]``.
    """
    _prep(x2d, w2d, delta)
    return cost_prepared(prepare(x3d, x2d, w2d), pose, camera, delta, check_robust(robust))


def normal_equations(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                     clip_jac: bool = True, robust: str = 'huber') -> Tuple[Tensor, Tensor, Tensor]:
    """Gauss-Newton normal equations of the IRLS-rescaled problem, without materialising (2n, T) Jacobians.

    Returns:
        jtj: (*, N, T, T) ``J̃ᵀJ̃``; jtr: (*, N, T) ``J̃ᵀr̃`` (= gradient of the cost); cost: (*, N).
        Equal to the products of :func:`evaluate_pnp`'s outputs (see :mod:`.kernels` for the factorisation).
    """
    _prep(x2d, w2d, delta)
    return normal_equations_prepared(prepare(x3d, x2d, w2d), pose, camera, delta, clip_jac, check_robust(robust))
