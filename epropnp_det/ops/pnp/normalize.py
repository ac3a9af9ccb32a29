"""Centring normalisation of PnP problems (docs/method.md §2.6).

``offset = mean(x3d.detach())`` over the points; ``x3d_n = x3d − offset`` and the pose maps as
``t_n = t + R·offset`` (rotation unchanged), inverse ``t = t_n − R·offset``. The map has unit Jacobian determinant
(densities/weights unchanged) and decorrelates translation and rotation.

Shapes: ``x3d (*, N, n, 3)`` metres object frame; ``offset (*, N, 3)``; poses ``(*, N, 4|7)`` camera frame with
leading dims broadcasting against the offset (e.g. samples ``(S, N, 4)`` with ``offset (N, 3)``).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .rotation import quaternion_to_rot_mat, skew

__all__ = ['pnp_normalize', 'pnp_denormalize', 'pnp_denormalize_cov', 'rotate_offset']


def rotate_offset(pose: Tensor, offset: Tensor) -> Tensor:
    """``R(pose) · offset``: pose (*, N, 4|7), offset (*, N, 3) -> (*, N, 3) (differentiable in the rotation)."""
    if pose.shape[-1] == 4:
        cos, sin = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        ox, oy, oz = offset.unbind(-1)
        return torch.stack([cos * ox + sin * oz, oy.expand_as(cos * ox), cos * oz - sin * ox], dim=-1)
    if pose.shape[-1] == 7:
        return (quaternion_to_rot_mat(pose[..., 3:]) @ offset.unsqueeze(-1)).squeeze(-1)
    raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(pose.shape)}')


def pnp_normalize(x3d: Tensor, pose: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Centre the object points.

    Returns:
        offset: (*, N, 3) detached mean of x3d; x3d_n: (*, N, n, 3) centred points (gradient flows to x3d);
        pose_n: normalised ``pose`` (same shape) or ``None``.
    """
    offset = x3d.detach().mean(dim=-2)
    x3d_n = x3d - offset.unsqueeze(-2)
    pose_n = None
    if pose is not None:
        pose_n = torch.cat([pose[..., :3] + rotate_offset(pose, offset), pose[..., 3:]], dim=-1)
    return offset, x3d_n, pose_n


def pnp_denormalize(offset: Tensor, pose_n: Tensor) -> Tensor:
    """Inverse of :func:`pnp_normalize` for poses: ``t = t_n − R(pose_n)·offset`` (rotation of pose_n itself)."""
    return torch.cat([pose_n[..., :3] - rotate_offset(pose_n, offset), pose_n[..., 3:]], dim=-1)


def pnp_denormalize_cov(offset: Tensor, pose_n: Tensor, cov_n: Tensor) -> Tensor:
    """Map a local-parameter covariance (*, N, T, T) from the normalised to the original frame.

    Linearisation of ``t = t_n − R·offset`` around ``pose_n``: ``cov = M cov_n Mᵀ`` with
    ``M = [[I, −d(R·offset)/dθ], [0, I]]``; 4-DoF: ``d(R·o)/dyaw = (R·o)_z, 0, −(R·o)_x``;
    6-DoF (left tangent δ, see :mod:`.rotation`): ``d(R·o)/dδ = skew(2 R·o)``.
    """
    ro = rotate_offset(pose_n, offset)
    T = cov_n.shape[-1]
    M = torch.eye(T, dtype=cov_n.dtype, device=cov_n.device).expand(*ro.shape[:-1], T, T).clone()
    if pose_n.shape[-1] == 4:
        M[..., 0, 3] = -ro[..., 2]
        M[..., 2, 3] = ro[..., 0]
    else:
        M[..., :3, 3:] = -skew(2 * ro)
    return M @ cov_n @ M.transpose(-1, -2)
