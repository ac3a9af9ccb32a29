"""Perspective projection with analytic pose Jacobians (docs/method.md §2.2).

**Convention**: ``X_cam = R · x3d_obj + t`` (see :mod:`.rotation`), ``h = K · X_cam``, ``z = max(h_z, z_min)``,
``x2d = clamp(h_xy / z, lb, ub)`` in pixels of the original image. ``K`` must have last row ``[0, 0, 1]``.

Jacobians are w.r.t. the **local** pose parameterisation: 4-DoF ``[dx, dy, dz, dyaw]`` (plain addition) and
6-DoF ``[dx, dy, dz, δ]`` with the quaternion update ``q <- normalize(q + T(q) δ)``. They are evaluated with the
clamped ``z`` and the clamped ``x2d`` (as the reference does); with ``clip_jac`` a row (u or v of one point) is
zeroed where the depth or that coordinate was clamped.

Shapes: ``x3d (*, N, n, 3)`` metres, object frame; ``pose (*, N, 4|7)`` camera frame; leading dims ``*`` of
x3d and pose broadcast against each other (e.g. Monte-Carlo samples ``(S, N, 4)`` with ``x3d (N, n, 3)``); the
camera tensors ``(N, ...)`` broadcast over them.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .rotation import quaternion_to_rot_mat
from .types import CameraParams

__all__ = ['project', 'project_planar']


def _pose_dof(pose: Tensor) -> int:
    d = pose.shape[-1]
    if d not in (4, 7):
        raise ValueError(f'pose must be (*, N, 4) [x,y,z,yaw] or (*, N, 7) [x,y,z,w,i,j,k], got {tuple(pose.shape)}')
    return d


def project_planar(x3d: Tensor, pose: Tensor, camera: CameraParams, out_jac: bool = False,
                   clip_jac: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Projection in planar layout (fewer strided ops; used by the cost and the solvers).

    Returns:
        u, v: (*, N, n) clamped pixel coordinates.
        jac_u, jac_v: (*, N, n, T) Jacobians of u and v w.r.t. the local pose (T = 4 or 6), or ``None``.
    """
    d = _pose_dof(pose)
    K = camera.cam_mats
    # (N,) -> (N, 1) so that per-object scalars broadcast against (*, N, n)
    k00, k01, k02 = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    k10, k11, k12 = K[..., 1, 0, None], K[..., 1, 1, None], K[..., 1, 2, None]
    lb_u, lb_v = camera.lb[..., 0, None], camera.lb[..., 1, None]
    ub_u, ub_v = camera.ub[..., 0, None], camera.ub[..., 1, None]
    tx, ty, tz = pose[..., 0, None], pose[..., 1, None], pose[..., 2, None]
    px, py, pz = x3d.unbind(-1)
    if d == 4:
        cos, sin = torch.cos(pose[..., 3, None]), torch.sin(pose[..., 3, None])
        xr = cos * px + sin * pz
        yr = py
        zr = cos * pz - sin * px
    else:
        rot = quaternion_to_rot_mat(pose[..., 3:])[..., None, :, :]  # (*, N, 1, 3, 3)
        xr = rot[..., 0, 0] * px + rot[..., 0, 1] * py + rot[..., 0, 2] * pz
        yr = rot[..., 1, 0] * px + rot[..., 1, 1] * py + rot[..., 1, 2] * pz
        zr = rot[..., 2, 0] * px + rot[..., 2, 1] * py + rot[..., 2, 2] * pz
    X, Y, Z = xr + tx, yr + ty, zr + tz
    z = Z.clamp(min=camera.z_min)
    inv_z = 1 / z
    u_raw = (k00 * X + k01 * Y + k02 * Z) * inv_z
    v_raw = (k10 * X + k11 * Y + k12 * Z) * inv_z
    u = torch.maximum(torch.minimum(u_raw, ub_u), lb_u)
    v = torch.maximum(torch.minimum(v_raw, ub_v), lb_v)
    if not out_jac:
        return u, v, None, None
    # d(u, v)/dX_cam rows (2x3), with clamped z and clamped u, v
    a0, a1, a2 = k00 * inv_z, k01 * inv_z, (k02 - u) * inv_z
    b0, b1, b2 = k10 * inv_z, k11 * inv_z, (k12 - v) * inv_z
    if clip_jac:
        z_ok = Z > camera.z_min
        mask_u = (z_ok & (u_raw > lb_u) & (u_raw < ub_u)).to(u.dtype)
        mask_v = (z_ok & (v_raw > lb_v) & (v_raw < ub_v)).to(v.dtype)
        a0, a1, a2 = a0 * mask_u, a1 * mask_u, a2 * mask_u
        b0, b1, b2 = b0 * mask_v, b1 * mask_v, b2 * mask_v
    if d == 4:
        # dXrot/dyaw = (zr, 0, -xr)
        jac_u = torch.stack([a0, a1, a2, a0 * zr - a2 * xr], dim=-1)
        jac_v = torch.stack([b0, b1, b2, b0 * zr - b2 * xr], dim=-1)
    else:
        # row · skew(2 Xrot) = row × (2 Xrot)
        xr2, yr2, zr2 = 2 * xr, 2 * yr, 2 * zr
        jac_u = torch.stack([a0, a1, a2, a1 * zr2 - a2 * yr2, a2 * xr2 - a0 * zr2, a0 * yr2 - a1 * xr2], dim=-1)
        jac_v = torch.stack([b0, b1, b2, b1 * zr2 - b2 * yr2, b2 * xr2 - b0 * zr2, b0 * yr2 - b1 * xr2], dim=-1)
    return u, v, jac_u, jac_v


def project(x3d: Tensor, pose: Tensor, camera: CameraParams, out_jac: bool = False,
            clip_jac: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """Project object points into the image.

    Args:
        x3d: (*, N, n, 3) metres, object frame.
        pose: (*, N, 4) ``[x, y, z, yaw]`` or (*, N, 7) ``[x, y, z, w, i, j, k]``, camera frame.
        camera: per-object :class:`CameraParams` with tensors (N, ...).
        out_jac: also return the Jacobian w.r.t. the local pose parameters.
        clip_jac: zero Jacobian rows where the depth or the coordinate was clamped.

    Returns:
        x2d: (*, N, n, 2) pixels (original image, clamped to ``[lb, ub]``).
        jac: (*, N, n, 2, 4) or (*, N, n, 2, 6), or ``None``.

    >>> K = torch.tensor([[[100., 0, 50], [0, 100, 40], [0, 0, 1]]])
    >>> cam = CameraParams.from_image_shape(K, [[80, 100]])
    >>> project(torch.zeros(1, 1, 3), torch.tensor([[1., 0, 10, 0]]), cam)[0]
    tensor([[[60., 40.]]])
    """
    u, v, jac_u, jac_v = project_planar(x3d, pose, camera, out_jac, clip_jac)
    x2d = torch.stack([u, v], dim=-1)
    jac = torch.stack([jac_u, jac_v], dim=-2) if out_jac else None
    return x2d, jac
