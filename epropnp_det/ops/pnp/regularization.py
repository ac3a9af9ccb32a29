"""Derivative regularisation (``docs/method.md``): losses on ``y⁺ = y* + Δy`` (one differentiable GN step).

``loss_reg_pos = SmoothL1(‖t⁺ − t_gt‖₂, β)`` (the distance itself is the input, target 0) and an orientation
loss that equals ``1 − cos θ`` for the rotation angle θ between ``y⁺`` and the target:

* 4-DoF ``[x, y, z, yaw]``: ``1 − cos(yaw⁺ − yaw_gt)``;
* 6-DoF ``[x, y, z, w, i, j, k]``: the quaternion distance ``2 (1 − ⟨q⁺, q_gt⟩²)`` (= ``2 sin²(θ/2)`` =
  ``1 − cos θ``, sign-invariant: ``q`` and ``−q`` are the same rotation), as the original's 6-DoF training uses.

Per object, unreduced and unweighted (the caller applies ``sample_weights``, ``avg_factor`` and the loss weight:
0.05 in the detector, 0.1 each in the original's 6-DoF demo). Poses in the camera frame, metres and radians.

Which ``y*``: the detector regularises an **independent** solve (RSLM start only, the target does not compete);
the original's 6-DoF training and demo regularise the **training** solution (the solve in which the target
competed as a start, i.e. the Monte-Carlo forward's ``pose_opt``). :func:`derivative_regularization` does either
(``solution='independent'`` or ``'training'``), or takes a ``pose_opt`` computed elsewhere;
``EProPnPBase.monte_carlo_forward(..., with_pose_plus=True).pose_plus`` is ``y⁺`` of the training solution
without a second solve.
"""
from typing import Dict, Optional

import torch
from torch import Tensor

from ._amp import fp32
from .solver import compute_pose_plus, solve_pnp
from .types import CameraParams

__all__ = ['derivative_reg_losses', 'derivative_regularization', 'quaternion_distance_loss']


def quaternion_distance_loss(q: Tensor, q_gt: Tensor) -> Tensor:
    """``2 (1 − ⟨q̂, q̂_gt⟩²)`` for quaternions (*, 4) (normalised here) -> (*,); equals ``1 − cos θ`` of the
    rotation angle θ between them, in [0, 2]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    q_gt = q_gt / q_gt.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return 2 * (1 - (q * q_gt).sum(dim=-1).square())


def derivative_reg_losses(pose_plus: Tensor, pose_gt: Tensor, beta: float = 1.0):
    """pose_plus, pose_gt: both (N, 4) ``[x, y, z, yaw]`` or both (N, 7) ``[x, y, z, w, i, j, k]``, camera frame
    -> ``(loss_pos (N,), loss_orient (N,))``; finite gradients even at ``t⁺ = t_gt``."""
    if pose_plus.shape[-1] not in (4, 7) or pose_gt.shape != pose_plus.shape:
        raise ValueError(f'pose_plus and pose_gt must both be (N, 4) [x, y, z, yaw] or both (N, 7) '
                         f'[x, y, z, w, i, j, k], got {tuple(pose_plus.shape)} and {tuple(pose_gt.shape)}')
    # floored norm: d‖x‖/dx is undefined at 0
    dist = (pose_plus[..., :3] - pose_gt[..., :3]).square().sum(dim=-1).clamp(min=1e-30).sqrt()
    loss_pos = torch.where(dist < beta, 0.5 * dist.square() / beta, dist - 0.5 * beta)
    if pose_plus.shape[-1] == 4:
        loss_orient = 1 - torch.cos(pose_plus[..., 3] - pose_gt[..., 3])
    else:
        loss_orient = quaternion_distance_loss(pose_plus[..., 3:], pose_gt[..., 3:])
    return loss_pos, loss_orient


@fp32
def derivative_regularization(x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Tensor,
                              pose_gt: Tensor, *, beta: float = 1.0, num_iter: int = 10, normalize: bool = True,
                              generator: Optional[torch.Generator] = None, pose_opt: Optional[Tensor] = None,
                              solution: str = 'independent', dof: Optional[int] = None,
                              robust: str = 'huber', **solve_kwargs) -> Dict[str, Tensor]:
    """Solve (no grad), then ``y⁺`` (one differentiable GN step) and the two losses.

    Args:
        x3d (N, n, 3) object frame metres, x2d (N, n, 2) pixels, w2d (N, n, 2), delta (N,): may require grad
        (the detector passes ``x3d = noc·dims.detach()``, ``w2d·scale.detach()``, ``δ.detach()``).
        pose_gt: (N, 4) ``[x, y, z, yaw]`` or (N, 7) ``[x, y, z, w, i, j, k]``, camera frame; its width selects
            the DoF unless ``dof`` is given.
        solution: which ``y*`` is regularised when ``pose_opt`` is not given: ``'independent'`` (RSLM start
            only, trust-region LM; the detector) or ``'training'`` (the target competes with the RSLM start,
            ``force_init_solve``, as in the Monte-Carlo forward; the original's 6-DoF training and demo).
        pose_opt: (N, D) camera frame, a solution ``y*`` computed elsewhere (e.g. ``PoseSamples.pose_free`` of the
            Monte-Carlo forward, which shares its RSLM draws, or ``PoseSamples.pose_opt``); skips the solve.
        dof: 4 or 6; a ``pose_gt`` of the other width raises a ``ValueError`` (a (N, 7) target never silently
            runs a 4-DoF solve).
        robust: ``'huber'`` or ``'cauchy'`` (:mod:`.robust`), for the solve and the GN step.
        **solve_kwargs: further :func:`.solver.solve_pnp` arguments (``backend``, ``fast_mode``, ...).

    Returns:
        dict(loss_pos (N,), loss_orient (N,), pose_opt (N, D) detached, pose_plus (N, D) differentiable).
    """
    width = pose_gt.shape[-1]
    if dof is None:
        if width not in (4, 7):
            raise ValueError(f'pose_gt must be (N, 4) [x, y, z, yaw] or (N, 7) [x, y, z, w, i, j, k], '
                             f'got {tuple(pose_gt.shape)}')
        dof = 4 if width == 4 else 6
    if dof not in (4, 6):
        raise ValueError(f'dof must be 4 or 6, got {dof}')
    want = 4 if dof == 4 else 7
    if pose_gt.dim() != 2 or width != want:
        raise ValueError(f'derivative_regularization with dof={dof} needs pose_gt (N, {want}), got '
                         f'{tuple(pose_gt.shape)}' + ('; (N, 7) quaternion poses need dof=6' if dof == 4 else ''))
    if solution not in ('independent', 'training'):
        raise ValueError(f"solution must be 'independent' or 'training', got {solution!r}")
    if pose_opt is None:
        init = dict(pose_init=pose_gt.detach(), force_init_solve=True) if solution == 'training' else {}
        pose_opt = solve_pnp(x3d, x2d, w2d, camera, delta, num_iter=num_iter, normalize=normalize, dof=dof,
                             generator=generator, robust=robust, **init, **solve_kwargs).pose
    elif pose_opt.shape != pose_gt.shape:
        raise ValueError(f'pose_opt must be {tuple(pose_gt.shape)} like pose_gt, got {tuple(pose_opt.shape)}')
    pose_opt = pose_opt.detach()
    pose_plus = compute_pose_plus(x3d, x2d, w2d, pose_opt, camera, delta, normalize=normalize, robust=robust)
    loss_pos, loss_orient = derivative_reg_losses(pose_plus, pose_gt.to(pose_plus), beta)
    return dict(loss_pos=loss_pos, loss_orient=loss_orient, pose_opt=pose_opt, pose_plus=pose_plus)
