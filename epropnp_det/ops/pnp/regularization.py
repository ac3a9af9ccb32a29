"""Derivative regularisation (spec §2.12, §5.5): losses on ``y⁺ = y* + Δy`` (one differentiable GN step).

``loss_reg_pos = SmoothL1(‖t⁺ − t_gt‖₂, β)`` (the distance itself is the input, target 0) and
``loss_reg_orient = 1 − cos(yaw⁺ − yaw_gt)``; per object, unreduced and unweighted (the caller applies
``sample_weights``, ``avg_factor`` and the 0.05 loss weight). 4-DoF poses ``[x, y, z, yaw]``, camera frame.
"""
from typing import Dict, Optional

import torch
from torch import Tensor

from ._amp import fp32
from .solver import compute_pose_plus, solve_pnp
from .types import CameraParams

__all__ = ['derivative_reg_losses', 'derivative_regularization']


def derivative_reg_losses(pose_plus: Tensor, pose_gt: Tensor, beta: float = 1.0):
    """pose_plus, pose_gt: (N, 4) -> (loss_pos (N,), loss_orient (N,)); finite gradients even at ``t⁺ = t_gt``."""
    if pose_plus.shape[-1] != 4 or pose_gt.shape != pose_plus.shape:
        raise ValueError(f'pose_plus and pose_gt must both be (N, 4), got {tuple(pose_plus.shape)} and '
                         f'{tuple(pose_gt.shape)}')
    # floored norm: d‖x‖/dx is undefined at 0
    dist = (pose_plus[..., :3] - pose_gt[..., :3]).square().sum(dim=-1).clamp(min=1e-30).sqrt()
    loss_pos = torch.where(dist < beta, 0.5 * dist.square() / beta, dist - 0.5 * beta)
    loss_orient = 1 - torch.cos(pose_plus[..., 3] - pose_gt[..., 3])
    return loss_pos, loss_orient


@fp32
def derivative_regularization(x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Tensor,
                              pose_gt: Tensor, *, beta: float = 1.0, num_iter: int = 10, normalize: bool = True,
                              generator: Optional[torch.Generator] = None, pose_opt: Optional[Tensor] = None,
                              **solve_kwargs) -> Dict[str, Tensor]:
    """Independent solve (RSLM + trust-region LM, no gt init, no grad), then ``y⁺`` and the two losses.

    Args:
        x3d (N, n, 3) object frame metres, x2d (N, n, 2) pixels, w2d (N, n, 2), delta (N,): may require grad
        (v1 passes ``x3d = noc·dims.detach()``, ``w2d·scale.detach()``, ``δ.detach()``).
        pose_gt: (N, 4) camera frame.
        pose_opt: (N, 4) camera frame, an independent solution ``y*`` computed elsewhere (e.g.
            ``PoseSamples.pose_free`` of the Monte-Carlo forward, which shares its RSLM draws); skips the solve.

    Returns:
        dict(loss_pos (N,), loss_orient (N,), pose_opt (N, 4) detached, pose_plus (N, 4) differentiable).
    """
    if pose_opt is None:
        pose_opt = solve_pnp(x3d, x2d, w2d, camera, delta, num_iter=num_iter, normalize=normalize,
                             generator=generator, **solve_kwargs).pose
    pose_opt = pose_opt.detach()
    pose_plus = compute_pose_plus(x3d, x2d, w2d, pose_opt, camera, delta, normalize=normalize)
    loss_pos, loss_orient = derivative_reg_losses(pose_plus, pose_gt.to(pose_plus), beta)
    return dict(loss_pos=loss_pos, loss_orient=loss_orient, pose_opt=pose_opt, pose_plus=pose_plus)
