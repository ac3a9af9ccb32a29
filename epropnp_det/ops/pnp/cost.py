"""Robust (Huber) reprojection cost, IRLS-rescaled residuals and Jacobians (spec §2.3).

Per point ``i``: residual ``r_i = (x2d_proj_i − x2d_i) ⊙ w2d_i`` (2-vector, weighted pixels), ``s_i = ‖r_i‖``::

    ρ/2(s) = 0.5 s²              if s ≤ δ
           = δ s − 0.5 δ²        otherwise
    cost(pose) = Σ_i ρ/2(s_i)    (per object; the pose density is p(y | X) ∝ exp(−cost(y)))

IRLS rescaling (square root of the Huber weight) ``ρ̃_i = min(sqrt(δ / s_i), 1)`` (δ, s floored at 1e-10):
``r̃_i = r_i ρ̃_i`` and ``J̃_i = J_i ⊙ (w2d_i ρ̃_i)``, so that ``0.5 ‖r̃‖² = cost`` in the quadratic zone and
``J̃ᵀr̃`` is the exact cost gradient everywhere. Autograd differentiates through ``ρ̃`` (zero where it is clamped
to 1), as the reference's differentiable branch does.

Shapes: ``x3d (*, N, n, 3)`` object frame metres, ``x2d (*, N, n, 2)`` pixels, ``w2d (*, N, n, 2)``,
``pose (*, N, 4|7)``, ``delta (N,)`` (or anything broadcasting to ``(*, N)``); leading dims broadcast.
All functions are differentiable w.r.t. x3d, x2d, w2d and delta.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .camera import project_planar
from .rotation import quaternion_to_rot_mat
from .types import CameraParams

__all__ = ['adaptive_huber_delta', 'huber_cost', 'evaluate_pnp', 'pnp_cost', 'normal_equations']

# floor of squared residual norms before sqrt: keeps d sqrt/ds finite at exact fits (value error < 1e-15 px)
_S2_FLOOR = 1e-30


def adaptive_huber_delta(x2d: Tensor, w2d: Tensor, relative_delta: float = 0.5) -> Tensor:
    """Adaptive Huber threshold ``δ = mean(w2d) · sqrt(var(u) + var(v)) · relative_delta`` (spec §2.3).

    Args:
        x2d: (*, N, n, 2) pixels; variances are unbiased, over the n points.
        w2d: (*, N, n, 2) weights; mean over points and both axes.
        relative_delta: scale factor (0.5 in every config).

    Returns:
        (*, N) δ, differentiable w.r.t. both inputs (detach them first for the v1 behaviour). Degenerate inputs
        give δ = 0 (fewer than 2 points, coincident points, all-zero weights), never NaN.
    """
    n = x2d.shape[-2]
    if n < 2:
        std = x2d.new_zeros(x2d.shape[:-2])
    else:
        var = x2d.var(dim=-2, correction=1).sum(dim=-1)
        std = var.clamp(min=_S2_FLOOR).sqrt()
    return w2d.mean(dim=(-2, -1)) * std * relative_delta


def huber_cost(sq_norm: Tensor, delta: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-point Huber cost from squared residual norms.

    Args:
        sq_norm: (*, N, n) ``s²``.
        delta: broadcastable to (*, N, 1).

    Returns:
        cost: (*, N, n) ``ρ/2(s)``; s: (*, N, n) the (floored) norm ``s``.
    """
    s = sq_norm.clamp(min=_S2_FLOOR).sqrt()
    m = torch.minimum(s, delta)  # = s in the quadratic zone, δ in the linear zone
    return m * (s - 0.5 * m), s


def _irls_weight(s: Tensor, delta: Tensor) -> Tensor:
    """sqrt of the Huber weight: ``min(sqrt(max(δ,1e-10)) · rsqrt(max(s,1e-10)), 1)`` (finite gradients)."""
    return (delta.clamp(min=1e-10).sqrt() * s.clamp(min=1e-10).rsqrt()).clamp(max=1.0)


def _prep(x2d: Tensor, w2d: Tensor, delta: Tensor):
    if x2d.shape[-1] != 2 or w2d.shape[-1] != 2:
        raise ValueError(f'x2d and w2d must end with 2, got {tuple(x2d.shape)} and {tuple(w2d.shape)}')
    return x2d[..., 0], x2d[..., 1], w2d[..., 0], w2d[..., 1], torch.as_tensor(delta).unsqueeze(-1)


def evaluate_pnp(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                 out_jacobian: bool = False, out_residual: bool = False, out_cost: bool = False,
                 clip_jac: bool = True) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Project, then compute the requested IRLS residual / Jacobian / cost (spec §2.3, ``evaluate_pnp``).

    Args:
        x3d, x2d, w2d, pose, camera, delta: see module docstring.
        clip_jac: zero Jacobian rows of clamped coordinates (:func:`.camera.project`).

    Returns:
        residual: (*, N, 2n) rescaled residual ``r̃`` ordered ``[u0, v0, u1, v1, ...]``, or ``None``.
        jacobian: (*, N, 2n, T) rescaled Jacobian ``J̃`` w.r.t. the local pose (T = 4 or 6), or ``None``.
        cost: (*, N) Huber cost, or ``None``.
    """
    if out_cost and not (out_jacobian or out_residual):
        return None, None, pnp_cost(x3d, x2d, w2d, pose, camera, delta)
    u_obs, v_obs, wu, wv, delta = _prep(x2d, w2d, delta)
    u, v, ju, jv = project_planar(x3d, pose, camera, out_jac=out_jacobian, clip_jac=clip_jac)
    ru, rv = (u - u_obs) * wu, (v - v_obs) * wv
    cost_pt, s = huber_cost(ru * ru + rv * rv, delta)
    rho = _irls_weight(s, delta)
    residual = jacobian = cost = None
    if out_residual:
        residual = torch.stack([ru * rho, rv * rho], dim=-1).flatten(-2)
    if out_jacobian:
        jacobian = torch.stack([ju * (wu * rho).unsqueeze(-1), jv * (wv * rho).unsqueeze(-1)], dim=-2).flatten(-3, -2)
    if out_cost:
        cost = cost_pt.sum(dim=-1)
    return residual, jacobian, cost


def pnp_cost(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor) -> Tensor:
    """Huber cost only (*, N): the fast path for many poses (Monte-Carlo samples, RSLM proposals).

    Folds ``K·R`` and ``K·t`` per pose first, so each point costs one small matmul plus a few element-wise ops.
    Equal to ``evaluate_pnp(..., out_cost=True)[2]``.
    """
    u_obs, v_obs, wu, wv, delta = _prep(x2d, w2d, delta)
    K = camera.cam_mats
    if pose.shape[-1] == 4:
        cos, sin = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        # K·R(yaw) for K with last row [0, 0, 1]; columns of R: (c, 0, -s), (0, 1, 0), (s, 0, c)
        kc0 = K[..., :, 0] * cos[..., None] - K[..., :, 2] * sin[..., None]
        kc2 = K[..., :, 0] * sin[..., None] + K[..., :, 2] * cos[..., None]
        kr = torch.stack([kc0, K[..., :, 1].expand_as(kc0), kc2], dim=-1)  # (*, N, 3, 3)
    elif pose.shape[-1] == 7:
        kr = K @ quaternion_to_rot_mat(pose[..., 3:])
    else:
        raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(pose.shape)}')
    kt = (K @ pose[..., :3, None])  # (*, N, 3, 1)
    h = torch.matmul(kr, x3d.transpose(-1, -2)) + kt  # (*, N, 3, n), rows contiguous
    z = h[..., 2, :].clamp(min=camera.z_min)
    inv_z = 1 / z
    u = torch.maximum(torch.minimum(h[..., 0, :] * inv_z, camera.ub[..., 0, None]), camera.lb[..., 0, None])
    v = torch.maximum(torch.minimum(h[..., 1, :] * inv_z, camera.ub[..., 1, None]), camera.lb[..., 1, None])
    ru, rv = (u - u_obs) * wu, (v - v_obs) * wv
    cost_pt, _ = huber_cost(ru * ru + rv * rv, delta)
    return cost_pt.sum(dim=-1)


def normal_equations(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                     clip_jac: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Gauss-Newton normal equations of the IRLS-rescaled problem, without materialising (2n, T) Jacobians.

    Returns:
        jtj: (*, N, T, T) ``J̃ᵀJ̃``; jtr: (*, N, T) ``J̃ᵀr̃`` (= gradient of the cost); cost: (*, N).
    """
    u_obs, v_obs, wu, wv, delta = _prep(x2d, w2d, delta)
    u, v, ju, jv = project_planar(x3d, pose, camera, out_jac=True, clip_jac=clip_jac)
    ru, rv = (u - u_obs) * wu, (v - v_obs) * wv
    cost_pt, s = huber_cost(ru * ru + rv * rv, delta)
    rho2 = _irls_weight(s, delta).square()
    # J̃ᵀJ̃ = Σ_i ρ̃_i² (w_u² J_u J_uᵀ + w_v² J_v J_vᵀ);  J̃ᵀr̃ = Σ_i ρ̃_i² (w_u r_u J_u + w_v r_v J_v)
    cu, cv = wu * wu * rho2, wv * wv * rho2
    jw = torch.cat([ju * cu.unsqueeze(-1), jv * cv.unsqueeze(-1)], dim=-2)  # (*, N, 2n, T)
    jj = torch.cat([ju, jv], dim=-2)
    jtj = jw.transpose(-1, -2) @ jj
    rr = torch.cat([ru * (rho2 * wu), rv * (rho2 * wv)], dim=-1).unsqueeze(-1)  # (*, N, 2n, 1)
    jtr = (jj.transpose(-1, -2) @ rr).squeeze(-1)
    return jtj, jtr, cost_pt.sum(dim=-1)
