"""Fused evaluation kernels behind :mod:`.cost` and :mod:`.solver` (same maths, fewer passes over the points).

Why this file exists: the solvers evaluate 10⁶–10⁷ point residuals per call, so the number of element-wise passes
over ``(*, N, n)`` arrays is what costs time. The tricks, all exact rewrites of spec §2.2-2.3:

* **Folded projection.** Per pose, one ``(R_rows, 4)`` matrix ``[K·R | K·t]`` plus ``K·∂R/∂θ_k`` rows (one per
  rotation tangent dim: 4-DoF ``∂R/∂yaw``; 6-DoF ``−2 skew(e_k) R``) is applied to homogeneous points
  ``[x; y; z; 1]`` (planar layout ``(*, N, 4, n)``) by one matmul: rows ``h = K X_cam`` and ``g_k = K ∂X_cam/∂θ_k``.
* **Factored Jacobian.** With ``K`` last row ``[0, 0, 1]`` and clamped ``u``, ``z``::

      du/d(t, θ) = (1/z) · [k00, k01, k02 − u, g_u,k − u·g_z,k]      (likewise v with k1·)

  so ``J̃ᵀJ̃`` only needs per-object weighted moments ``S_c = Σ c φ φᵀ`` and ``G_c = Σ q φ`` of the point features
  ``φ = [1, e, y_1..y_r]`` (``e = k02 − u``, ``y_k = g_k − u g_z``) for each image axis ``c``, with weights
  ``c_u = w_u² ρ̃² / z²`` and ``q_u = ρ̃² w_u r_u / z`` (times the clip mask). The constant columns are put back
  per object afterwards.

Shapes: ``xh (*, N, 4, n)`` object-frame homogeneous points (metres), ``obs (*, N, 2, n)`` pixels, ``w``,
``w2 (*, N, 2, n)``; poses ``(*, N, D)``; leading dims broadcast; camera tensors are ``(N, ...)``.
Everything is differentiable by autograd (used by ``gn_step``) and free of host synchronisation.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .rotation import quaternion_to_rot_mat, skew
from .types import CameraParams

# squared-norm floor: s >= 1e-10 (the reference's floor for the IRLS weight) and finite d sqrt at exact fits
S2_FLOOR = 1e-20


class Prepared(NamedTuple):
    """Planar, contiguous copies of one problem: xh (*, N, 4, n), obs (*, N, 2, n), w (*, N, 2, n), w2 = w²."""
    xh: Tensor
    obs: Tensor
    w: Tensor
    w2: Tensor

    def gather(self, idx: Tensor) -> 'Prepared':
        """Select points: idx (P, N, m) long -> Prepared with shapes (P, N, ·, m); self must be (N, ·, n)."""
        P, N, m = idx.shape

        def g(t):
            return t.unsqueeze(0).expand(P, *t.shape).gather(-1, idx.unsqueeze(-2).expand(P, N, t.shape[-2], m))
        return Prepared(g(self.xh), g(self.obs), g(self.w), g(self.w2))


def prepare(x3d: Tensor, x2d: Tensor, w2d: Tensor) -> Prepared:
    """x3d (*, N, n, 3), x2d / w2d (*, N, n, 2) -> :class:`Prepared` (differentiable)."""
    xh = torch.cat([x3d, torch.ones_like(x3d[..., :1])], dim=-1).transpose(-1, -2).contiguous()
    w = w2d.transpose(-1, -2).contiguous()
    return Prepared(xh, x2d.transpose(-1, -2).contiguous(), w, w * w)


def folded_matrix(pose: Tensor, K: Tensor, with_deriv: bool) -> Tensor:
    """pose (*, N, D), K (N, 3, 3) -> (*, N, R, 4): rows ``[K·R | K·t]`` then (if with_deriv) ``[K·∂R_k | 0]``."""
    t = pose[..., :3].unsqueeze(-1)
    if pose.shape[-1] == 4:
        cos, sin = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rot = torch.stack([cos, zero, sin, zero, one, zero, -sin, zero, cos], dim=-1).reshape(*cos.shape, 3, 3)
        mats = [rot]
        if with_deriv:
            mats.append(torch.stack([-sin, zero, cos, zero, zero, zero, -cos, zero, -sin],
                                    dim=-1).reshape(*cos.shape, 3, 3))
    elif pose.shape[-1] == 7:
        rot = quaternion_to_rot_mat(pose[..., 3:])
        mats = [rot]
        if with_deriv:
            eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
            mats += [-2 * skew(eye[k]) @ rot for k in range(3)]
    else:
        raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(pose.shape)}')
    rows = torch.cat([K @ mt for mt in mats], dim=-2)  # (*, N, R, 3)
    kt = K @ t
    last = torch.cat([kt, torch.zeros_like(rows[..., 3:, :1])], dim=-2)
    return torch.cat([rows, last], dim=-1)


def apply_folded(mat: Tensor, xh: Tensor, rows: Optional[int] = None) -> Tensor:
    """mat (*L, N, R, 4) applied to xh (*Lx, N, 4, n) -> (*, N, R, n) (first ``rows`` rows only if given).

    When the points have no leading dims but the poses do (Monte-Carlo samples, RSLM proposals on the full set),
    all poses of an object go into one (L·R, 4) @ (4, n) product. Otherwise (e.g. RSLM subsets: 10⁵ tiny
    problems) batched tiny matmuls are slow, so the rows are accumulated element-wise."""
    R = mat.shape[-2] if rows is None else rows
    if xh.dim() == 3 and mat.dim() > 4:
        lead, N = mat.shape[:-3], mat.shape[-3]
        m2 = mat[..., :R, :].reshape(-1, N, R, 4).transpose(0, 1).reshape(N, -1, 4)
        out = torch.bmm(m2, xh)  # (N, L*R, n)
        return out.reshape(N, -1, R, xh.shape[-1]).transpose(0, 1).reshape(*lead, N, R, xh.shape[-1])
    if xh.shape[-1] >= 128:
        return torch.matmul(mat[..., :R, :], xh)
    x, y, z = xh[..., 0, None, :], xh[..., 1, None, :], xh[..., 2, None, :]
    mat = mat[..., :R, :, None]
    out = torch.addcmul(mat[..., 3, :], mat[..., 0, :], x)
    out = torch.addcmul(out, mat[..., 1, :], y)
    return torch.addcmul(out, mat[..., 2, :], z)


class _Proj(NamedTuple):
    u: Tensor
    v: Tensor
    iz: Tensor
    mask_u: Optional[Tensor]
    mask_v: Optional[Tensor]
    h: Tensor


def _project(prep: Prepared, pose: Tensor, camera: CameraParams, with_deriv: bool, clip_jac: bool) -> _Proj:
    h = apply_folded(folded_matrix(pose, camera.cam_mats, with_deriv), prep.xh)
    hz = h[..., 2, :]
    iz = hz.clamp(min=camera.z_min).reciprocal()
    u_raw, v_raw = h[..., 0, :] * iz, h[..., 1, :] * iz
    u = u_raw.clamp(camera.lb[..., 0:1], camera.ub[..., 0:1])
    v = v_raw.clamp(camera.lb[..., 1:2], camera.ub[..., 1:2])
    mask_u = mask_v = None
    if with_deriv and clip_jac:
        z_ok = hz > camera.z_min
        mask_u, mask_v = z_ok & (u == u_raw), z_ok & (v == v_raw)
    return _Proj(u, v, iz, mask_u, mask_v, h)


def _delta(delta: Tensor) -> Tensor:
    return torch.as_tensor(delta).unsqueeze(-1)


def cost_prepared(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor) -> Tensor:
    """Huber cost (*, N) of poses (*, N, D)."""
    p = _project(prep, pose, camera, False, False)
    ru = (p.u - prep.obs[..., 0, :]) * prep.w[..., 0, :]
    rv = (p.v - prep.obs[..., 1, :]) * prep.w[..., 1, :]
    s = torch.addcmul(ru * ru, rv, rv).clamp(min=S2_FLOOR).sqrt()
    m = torch.minimum(s, _delta(delta))
    return (m * (s - 0.5 * m)).sum(dim=-1)


def _moments(c: Tensor, q: Tensor, feats) -> Tuple[Tensor, Tensor]:
    """Weighted moments of features ``φ = [1, *feats]`` over points: ``S = Σ c φφᵀ`` (*, F, F), ``G = Σ q φ``.

    Only the unique products are formed (element-wise, then one reduction): tiny batched matmuls are slower."""
    F = len(feats) + 1
    cf = [c] + [c * f for f in feats]
    prods = cf + [cf[i + 1] * feats[j] for i in range(F - 1) for j in range(i, F - 1)] + [q] + [q * f for f in feats]
    sums = list(torch.stack(prods, dim=-2).sum(dim=-1).unbind(-1))
    S = [[None] * F for _ in range(F)]
    for i in range(F):
        S[0][i] = S[i][0] = sums[i]
    k = F
    for i in range(1, F):
        for j in range(i, F):
            S[i][j] = S[j][i] = sums[k]
            k += 1
    S = torch.stack([torch.stack(row, dim=-1) for row in S], dim=-2)
    return S, torch.stack(sums[k:], dim=-1)


def normal_equations_prepared(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor,
                              clip_jac: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """``J̃ᵀJ̃`` (*, N, T, T), ``J̃ᵀr̃`` (*, N, T) and cost (*, N) at poses (*, N, D)."""
    r = 1 if pose.shape[-1] == 4 else 3
    p = _project(prep, pose, camera, True, clip_jac)
    delta = _delta(delta)
    ru = (p.u - prep.obs[..., 0, :]) * prep.w[..., 0, :]
    rv = (p.v - prep.obs[..., 1, :]) * prep.w[..., 1, :]
    s = torch.addcmul(ru * ru, rv, rv).clamp(min=S2_FLOOR).sqrt()
    m = torch.minimum(s, delta)
    cost = (m * (s - 0.5 * m)).sum(dim=-1)
    rho2 = (delta.clamp(min=1e-10) / s).clamp(max=1.0)  # squared IRLS weight ρ̃²
    a = rho2 * p.iz
    cw = a * p.iz
    cu, cv = prep.w2[..., 0, :] * cw, prep.w2[..., 1, :] * cw
    qu, qv = a * prep.w[..., 0, :] * ru, a * prep.w[..., 1, :] * rv
    if p.mask_u is not None:
        cu, qu = cu * p.mask_u, qu * p.mask_u
        cv, qv = cv * p.mask_v, qv * p.mask_v
    K = camera.cam_mats
    h, g_z = p.h, [p.h[..., 5 + 3 * k, :] for k in range(r)]
    e_u, e_v = K[..., 0, 2:3] - p.u, K[..., 1, 2:3] - p.v
    y_u = [torch.addcmul(h[..., 3 + 3 * k, :], p.u, g_z[k], value=-1) for k in range(r)]
    y_v = [torch.addcmul(h[..., 4 + 3 * k, :], p.v, g_z[k], value=-1) for k in range(r)]
    S_u, G_u = _moments(cu, qu, [e_u, *y_u])
    S_v, G_v = _moments(cv, qv, [e_v, *y_v])
    S, G = torch.stack([S_u, S_v], dim=-3), torch.stack([G_u, G_v], dim=-2)
    # put the constant translation columns back: Ĵ_c = [k_c0 φ0, k_c1 φ0, φ1, φ2, ...]
    kc = K[..., :2, :2]  # (N, 2 axes, 2)
    tl = (S[..., 0, 0, None, None] * kc.unsqueeze(-1) * kc.unsqueeze(-2)).sum(dim=-3)  # (*, N, 2, 2)
    tr = (kc.unsqueeze(-1) * S[..., 0, None, 1:]).sum(dim=-3)  # (*, N, 2, F-1)
    br = S[..., 1:, 1:].sum(dim=-3)
    jtj = torch.cat([torch.cat([tl, tr], dim=-1), torch.cat([tr.transpose(-1, -2), br], dim=-1)], dim=-2)
    jtr = torch.cat([(kc * G[..., 0, None]).sum(dim=-2), G[..., 1:].sum(dim=-2)], dim=-1)
    return jtj, jtr, cost
