"""Rotation helpers (docs/method.md §0.1, §2.1, §2.2).

**Convention**: column vectors, ``X_cam = R · X_obj + t``. Camera frame is OpenCV (+x right, +y down, +z forward).
Yaw rotates about the camera +y axis::

    R(yaw) = [[ cos, 0, sin],
              [   0, 1,   0],
              [-sin, 0, cos]]

so the object heading (local +x) in the camera frame is ``(cos yaw, 0, -sin yaw)``; this equals KITTI
``rotation_y`` and mmdet3d 1.x ``CameraInstance3DBoxes`` yaw. Quaternions are unit, real-first ``[w, i, j, k]``.
The 6-DoF tangent update is ``q <- normalize(q + T(q) δ)`` (δ ∈ R³), a left (camera-frame) rotation by angle
``-2|δ|`` about ``δ``, so ``dX_cam/dδ = skew(2 · R x_obj)``.
"""
import math

import torch
from torch import Tensor

__all__ = ['yaw_to_rot_mat', 'rot_mat_to_yaw', 'quaternion_to_rot_mat', 'skew', 'quaternion_tangent_matrix',
           'quaternion_retract', 'wrap_angle', 'random_quaternion']


def yaw_to_rot_mat(yaw: Tensor) -> Tensor:
    """(...,) yaw in radians -> (..., 3, 3) rotation about the camera y axis (see module docstring)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).reshape(*yaw.shape, 3, 3)


def rot_mat_to_yaw(rot_mat: Tensor) -> Tensor:
    """(..., 3, 3) rotation (possibly slightly pitched) -> (...,) yaw = atan2(R02 − R20, R00 + R22)."""
    return torch.atan2(rot_mat[..., 0, 2] - rot_mat[..., 2, 0], rot_mat[..., 0, 0] + rot_mat[..., 2, 2])


def quaternion_to_rot_mat(quat: Tensor) -> Tensor:
    """(..., 4) unit quaternion ``[w, i, j, k]`` -> (..., 3, 3) rotation matrix (input assumed unit)."""
    w, i, j, k = quat.unbind(-1)
    ii, jj, kk = i * i, j * j, k * k
    ij, ik, jk = i * j, i * k, j * k
    wi, wj, wk = w * i, w * j, w * k
    mat = torch.stack([
        1 - 2 * (jj + kk), 2 * (ij - wk), 2 * (ik + wj),
        2 * (ij + wk), 1 - 2 * (ii + kk), 2 * (jk - wi),
        2 * (ik - wj), 2 * (jk + wi), 1 - 2 * (ii + jj)], dim=-1)
    return mat.reshape(*quat.shape[:-1], 3, 3)


def skew(vec: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix: ``skew(a) @ b == a × b``."""
    x0, x1, x2 = vec.unbind(-1)
    zero = torch.zeros_like(x0)
    return torch.stack([zero, -x2, x1, x2, zero, -x0, -x1, x0, zero], dim=-1).reshape(*vec.shape, 3)


def quaternion_tangent_matrix(quat: Tensor) -> Tensor:
    """(..., 4) ``[w, i, j, k]`` -> (..., 4, 3) ``T(q) = [[i,j,k],[-w,-k,j],[k,-w,-i],[-j,i,-w]]``
    (docs/method.md §2.2)."""
    w, i, j, k = quat.unbind(-1)
    return torch.stack([i, j, k, -w, -k, j, k, -w, -i, -j, i, -w], dim=-1).reshape(*quat.shape[:-1], 4, 3)


def quaternion_retract(quat: Tensor, delta: Tensor, eps: float = 1e-12) -> Tensor:
    """Tangent update ``normalize(q + T(q) δ)``: quat (..., 4), delta (..., 3) -> (..., 4)."""
    q = quat + (quaternion_tangent_matrix(quat) @ delta.unsqueeze(-1)).squeeze(-1)
    return q / q.norm(dim=-1, keepdim=True).clamp(min=eps)


def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap radians into ``[-π, π)`` (differentiable, gradient 1)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def random_quaternion(shape, dtype=None, device=None, generator=None) -> Tensor:
    """Uniformly distributed unit quaternions (*shape, 4): normalised N(0, I4) draws (identity if norm ~ 0)."""
    q = torch.randn(*shape, 4, dtype=dtype, device=device, generator=generator)
    norm = q.norm(dim=-1, keepdim=True)
    ident = torch.zeros_like(q)
    ident[..., 0] = 1
    return torch.where(norm > 1e-6, q / norm.clamp(min=1e-6), ident)
