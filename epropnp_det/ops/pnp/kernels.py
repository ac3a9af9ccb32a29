"""Fused evaluation kernels behind :mod:`.cost` and :mod:`.solver` (same maths, fewer and faster passes).

Why this file exists: the solvers evaluate 10⁶–10⁷ point residuals per call, and on CPU PyTorch element-wise ops
over tensors whose innermost dims are tiny (2, 3, 4: per-point xy, per-object 4×4 matrices) or broadcast in
several dims are many times slower than over long contiguous rows. So everything here is **planar**: every
per-point quantity is a separate ``(*, N, n)`` tensor and every per-object matrix entry a separate ``(*, N)``
tensor ("plane"); small matrices are Python lists of planes. The tricks, all exact rewrites of docs/method.md §2.2-2.3:

* **Folded projection.** Per pose the rows ``h = K·(R x + t)`` and (for Jacobians) ``g_k = K·(∂R/∂θ_k) x`` are
  affine in the object point ``x``; their coefficients are computed per pose (4-DoF: closed form; 6-DoF:
  ``∂R/∂δ_k = −2 skew(e_k) R``). Many poses of the same points (Monte-Carlo samples, RSLM proposals on the
  full set) use one ``(L·R, 4) @ (4, n)`` matmul per object instead.
* **Factored Jacobian.** With ``K`` last row ``[0, 0, 1]`` and clamped ``u``, ``z``::

      du/d(t, θ) = (1/z) · [k00, k01, k02 − u, g_u,k − u·g_z,k]      (likewise v with k1·)

  so ``J̃ᵀJ̃`` only needs per-object weighted moments ``S_c = Σ c φ φᵀ`` and ``G_c = Σ q φ`` of the point
  features ``φ = [1, e, y_1..y_r]`` (``e = k02 − u``, ``y_k = g_k − u g_z``) for each image axis ``c``, with
  weights ``c_u = w_u² ρ̃² / z²`` and ``q_u = ρ̃² w_u r_u / z`` (times the clip mask); the constant columns are
  put back per object afterwards.

Layout: :class:`Prepared` holds channel-first planes ``xs (3, *, N, n)`` object-frame metres, ``obs (2, *, N, n)``
pixels, ``w``, ``w2 = w² (2, *, N, n)``. Poses ``(*, N, D)``; camera tensors ``(N, ...)``; leading dims broadcast.
Everything is differentiable by autograd (used by ``gn_step``) and free of host synchronisation.
"""
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .robust import irls_weight, rho
from .rotation import quaternion_to_rot_mat, skew
from .types import CameraParams

# squared-norm floor: s >= 1e-10 (the reference's floor for the IRLS weight) and finite d sqrt at exact fits
S2_FLOOR = 1e-20


class Prepared(NamedTuple):
    """Planar copies of one problem (see module docstring); ``xhT (*, N, 4, n)`` homogeneous points for the
    many-poses matmul path (``None`` for gathered subsets)."""
    xs: Tensor
    obs: Tensor
    w: Tensor
    w2: Tensor
    xhT: Optional[Tensor] = None

    @property
    def num_points(self) -> int:
        return self.xs.shape[-1]

    def slice(self, a: int, b: int) -> 'Prepared':
        """Rows a:b of the first batch dim."""
        return Prepared(self.xs[:, a:b], self.obs[:, a:b], self.w[:, a:b], self.w2[:, a:b],
                        None if self.xhT is None else self.xhT[a:b])

    def repeat(self, k: int) -> 'Prepared':
        """Tile the problems: (·, N, n) -> (·, k·N, n), matching ``CameraParams.repeat(k)``."""
        return Prepared(*(torch.cat([t] * k, dim=1) for t in self[:4]),
                        None if self.xhT is None else torch.cat([self.xhT] * k))

    def gather(self, idx: Tensor) -> 'Prepared':
        """Select points: idx (P, N, m) long -> Prepared with planes (·, P, N, m); self must be (·, N, n)."""
        P, N, m = idx.shape

        def g(t):
            C = t.shape[0]
            return t.unsqueeze(1).expand(C, P, N, t.shape[-1]).gather(-1, idx.expand(C, P, N, m))
        return Prepared(g(self.xs), g(self.obs), g(self.w), g(self.w2), None)

    def mask_points(self, valid: Tensor) -> 'Prepared':
        """Zero the weights of points where ``valid`` (*, N, n) is False."""
        v = valid.to(self.w.dtype)
        return self._replace(w=self.w * v, w2=self.w2 * v)


def prepare(x3d: Tensor, x2d: Tensor, w2d: Tensor) -> Prepared:
    """x3d (*, N, n, 3), x2d / w2d (*, N, n, 2) -> :class:`Prepared` (differentiable)."""
    xs = x3d.movedim(-1, 0).contiguous()
    w = w2d.movedim(-1, 0).contiguous()
    xhT = None
    if x3d.dim() == 3:
        xhT = torch.cat([x3d, torch.ones_like(x3d[..., :1])], dim=-1).transpose(-1, -2).contiguous()
    return Prepared(xs, x2d.movedim(-1, 0).contiguous(), w, w * w, xhT)


def _coefficients(pose: Tensor, K: Tensor, with_deriv: bool) -> List[List[Tensor]]:
    """Affine coefficient planes (*, N) ``[cx, cy, cz, c1]`` of each row ``h_u, h_v, h_z, (g_u, g_v, g_z)×r``
    (``None`` marks an exact zero)."""
    k = [[K[..., i, j] for j in range(3)] for i in range(2)]
    tx, ty, tz = pose[..., 0], pose[..., 1], pose[..., 2]
    if pose.shape[-1] == 4:
        c, s = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        rows = []
        for r in range(2):
            ax, az = k[r][0] * c - k[r][2] * s, k[r][0] * s + k[r][2] * c
            rows.append([ax, k[r][1], az, k[r][0] * tx + k[r][1] * ty + k[r][2] * tz])
        rows.append([-s, None, c, tz])
        if with_deriv:  # K·(∂R/∂yaw)·x with ∂R/∂yaw·x = (zr, 0, −xr)
            rows += [[-rows[r][2], None, rows[r][0], None] for r in range(2)]
            rows.append([-c, None, -s, None])
        return rows
    if pose.shape[-1] != 7:
        raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(pose.shape)}')
    rot = quaternion_to_rot_mat(pose[..., 3:])
    mats = [rot]
    if with_deriv:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        mats += [-2 * skew(eye[i]) @ rot for i in range(3)]
    kt = (K @ pose[..., :3, None])[..., 0]
    rows = []
    for idx, m in enumerate(mats):
        km = K @ m
        for r in range(3):
            rows.append([km[..., r, 0], km[..., r, 1], km[..., r, 2], kt[..., r] if idx == 0 else None])
    return rows


def _rows(prep: Prepared, pose: Tensor, K: Tensor, with_deriv: bool) -> List[Tensor]:
    """Rows ``[h_u, h_v, h_z, g_u1, g_v1, g_z1, ...]`` (*, N, n) of the folded projection."""
    coef = _coefficients(pose, K, with_deriv)
    if prep.xhT is not None and pose.dim() > 2:
        # many poses of the same points: one (L·R, 4) @ (4, n) product per object
        lead, N, R = pose.shape[:-2], pose.shape[-2], len(coef)
        zero = torch.zeros_like(coef[0][0])
        mat = torch.stack([torch.stack([zero if c is None else c.expand_as(zero) for c in row], dim=-1)
                           for row in coef], dim=-2)  # (*L, N, R, 4)
        mat = mat.reshape(-1, N, R, 4).transpose(0, 1).reshape(N, -1, 4)
        out = torch.bmm(mat, prep.xhT).reshape(N, -1, R, prep.num_points).transpose(0, 1)
        out = out.reshape(*lead, N, R, prep.num_points)
        return [out[..., r, :] for r in range(R)]
    x, y, z = prep.xs[0], prep.xs[1], prep.xs[2]
    rows = []
    for cx, cy, cz, c1 in coef:
        acc = torch.addcmul(c1.unsqueeze(-1), x, cx.unsqueeze(-1)) if c1 is not None else x * cx.unsqueeze(-1)
        if cy is not None:
            acc = torch.addcmul(acc, y, cy.unsqueeze(-1))
        rows.append(torch.addcmul(acc, z, cz.unsqueeze(-1)))
    return rows


def _residuals(prep: Prepared, rows: List[Tensor], camera: CameraParams, delta: Tensor, clip: bool,
               robust: str = 'huber'):
    iz = rows[2].clamp(min=camera.z_min).reciprocal()
    u_raw, v_raw = rows[0] * iz, rows[1] * iz
    u = u_raw.clamp(camera.lb[..., 0, None], camera.ub[..., 0, None])
    v = v_raw.clamp(camera.lb[..., 1, None], camera.ub[..., 1, None])
    ru = (u - prep.obs[0]) * prep.w[0]
    rv = (v - prep.obs[1]) * prep.w[1]
    s = torch.addcmul(ru * ru, rv, rv).clamp(min=S2_FLOOR).sqrt()
    cost = rho(s, delta, robust).sum(dim=-1)
    masks = None
    if clip:
        z_ok = rows[2] > camera.z_min
        masks = (z_ok & (u == u_raw), z_ok & (v == v_raw))
    return iz, u, v, ru, rv, s, cost, masks


def _delta(delta) -> Tensor:
    return torch.as_tensor(delta).unsqueeze(-1)


def cost_prepared(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor,
                  robust: str = 'huber') -> Tensor:
    """Robust cost (*, N) of poses (*, N, D) (``robust``: see :mod:`.robust`)."""
    rows = _rows(prep, pose, camera.cam_mats, False)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (prep.xs, prep.obs, prep.w, pose, torch.as_tensor(delta)))
    if needs_grad:
        return _residuals(prep, rows, camera, _delta(delta), False, robust)[6]
    # same arithmetic in place on the freshly computed rows: no allocations, the arrays stay in cache
    iz = rows[2].clamp_(min=camera.z_min).reciprocal_()
    ru = rows[0].mul_(iz).clamp_(camera.lb[..., 0, None], camera.ub[..., 0, None]).sub_(prep.obs[0]).mul_(prep.w[0])
    rv = rows[1].mul_(iz).clamp_(camera.lb[..., 1, None], camera.ub[..., 1, None]).sub_(prep.obs[1]).mul_(prep.w[1])
    s2 = ru.mul_(ru).addcmul_(rv, rv)
    if robust == 'cauchy':  # (δ²/2) log(1 + s²/δ²), see .robust
        d2 = _delta(delta).clamp(min=1e-10).square()
        return s2.div_(d2).log1p_().mul_(0.5 * d2).sum(dim=-1)
    s = s2.clamp_(min=S2_FLOOR).sqrt_()
    m = torch.minimum(s, _delta(delta))
    return s.sub_(m, alpha=0.5).mul_(m).sum(dim=-1)


def normal_equation_terms(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor, clip_jac: bool = True,
                          robust: str = 'huber'):
    """Per image axis (u, v): the weights ``c`` (*, N, n) of ``Σ c φφᵀ``, ``q`` (*, N, n) of ``Σ q φ`` and the
    features ``φ₁…`` (planes (*, N, n)) of ``φ = [1, φ₁, …]`` whose moments give the normal equations (IRLS weights
    and clipping masks applied), and the cost (*, N), at poses (*, N, D). Shared by the plane form
    (:func:`normal_equations_planes`) and the stacked one (``solver.gn_step_stacked``)."""
    r = 1 if pose.shape[-1] == 4 else 3
    K = camera.cam_mats
    delta = _delta(delta)
    rows = _rows(prep, pose, K, True)
    iz, u, v, ru, rv, s, cost, masks = _residuals(prep, rows, camera, delta, clip_jac, robust)
    rho2 = irls_weight(s, delta, robust)  # squared IRLS weight ρ̃² = ρ'(s)/s
    a = rho2 * iz
    cw = a * iz
    cu, cv = prep.w2[0] * cw, prep.w2[1] * cw
    qu, qv = a * prep.w[0] * ru, a * prep.w[1] * rv
    if masks is not None:
        cu, qu = cu * masks[0], qu * masks[0]
        cv, qv = cv * masks[1], qv * masks[1]
    feats_u = [K[..., 0, 2, None] - u] + [torch.addcmul(rows[3 + 3 * i], u, rows[5 + 3 * i], value=-1)
                                          for i in range(r)]
    feats_v = [K[..., 1, 2, None] - v] + [torch.addcmul(rows[4 + 3 * i], v, rows[5 + 3 * i], value=-1)
                                          for i in range(r)]
    return (cu, qu, feats_u), (cv, qv, feats_v), cost


def normal_equations_planes(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor,
                            clip_jac: bool = True, robust: str = 'huber'
                            ) -> Tuple[List[List[Tensor]], List[Tensor], Tensor]:
    """``J̃ᵀJ̃`` as a T×T list of planes (*, N), ``J̃ᵀr̃`` as T planes, and the cost (*, N), at poses (*, N, D)."""
    K = camera.cam_mats
    (cu, qu, feats_u), (cv, qv, feats_v), cost = normal_equation_terms(prep, pose, camera, delta, clip_jac, robust)
    r = len(feats_u) - 1
    S_u, G_u = _moments(cu, qu, feats_u)
    S_v, G_v = _moments(cv, qv, feats_v)
    # Ĵ_c = [k_c0 φ0, k_c1 φ0, φ1, φ2, ...]: put the constant translation columns back
    T = 3 + r
    kk = [[K[..., c, i] for i in range(2)] for c in range(2)]
    A = [[None] * T for _ in range(T)]
    for i in range(2):
        for j in range(i, 2):
            A[i][j] = A[j][i] = S_u[0][0] * (kk[0][i] * kk[0][j]) + S_v[0][0] * (kk[1][i] * kk[1][j])
        for b in range(T - 2):
            A[i][2 + b] = A[2 + b][i] = S_u[0][1 + b] * kk[0][i] + S_v[0][1 + b] * kk[1][i]
    for a_ in range(T - 2):
        for b in range(a_, T - 2):
            A[2 + a_][2 + b] = A[2 + b][2 + a_] = S_u[1 + a_][1 + b] + S_v[1 + a_][1 + b]
    g = [G_u[0] * kk[0][i] + G_v[0] * kk[1][i] for i in range(2)] + [G_u[1 + b] + G_v[1 + b] for b in range(T - 2)]
    return A, g, cost


def _moments(c: Tensor, q: Tensor, feats: List[Tensor]):
    """``S = Σ c φφᵀ`` (F×F list of planes) and ``G = Σ q φ`` (F planes) for ``φ = [1, *feats]``."""
    F = len(feats) + 1
    cf = [c] + [c * f for f in feats]
    S = [[None] * F for _ in range(F)]
    for i in range(F):
        S[0][i] = S[i][0] = cf[i].sum(dim=-1)
    for i in range(1, F):
        for j in range(i, F):
            S[i][j] = S[j][i] = (cf[i] * feats[j - 1]).sum(dim=-1)
    G = [q.sum(dim=-1)] + [(q * f).sum(dim=-1) for f in feats]
    return S, G


def pack_matrix(A: List[List[Tensor]]) -> Tensor:
    """T×T list of planes (*) -> (*, T, T)."""
    return torch.stack([torch.stack(row, dim=-1) for row in A], dim=-2)


def normal_equations_prepared(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor,
                              clip_jac: bool = True, robust: str = 'huber') -> Tuple[Tensor, Tensor, Tensor]:
    """``J̃ᵀJ̃`` (*, N, T, T), ``J̃ᵀr̃`` (*, N, T) and cost (*, N) at poses (*, N, D)."""
    A, g, cost = normal_equations_planes(prep, pose, camera, delta, clip_jac, robust)
    return pack_matrix(A), torch.stack(g, dim=-1), cost
