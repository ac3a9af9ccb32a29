"""EPro-PnP layer: batched, stateless, torch-only PnP solvers and the Monte-Carlo pose posterior.

Importing this package loads torch only (no mmcv/mmdet/mmdet3d/mmengine). Public API (shapes: ``N`` objects,
``n`` points, ``K`` samples; ``x3d (N, n, 3)`` metres object frame, ``x2d (N, n, 2)`` pixels, ``w2d (N, n, 2)``,
poses ``(N, 4)`` ``[x, y, z, yaw]`` camera frame or ``(N, 7)`` ``[x, y, z, w, i, j, k]``):

* geometry / cost: :class:`CameraParams`, :func:`project`, :func:`evaluate_pnp`, :func:`pnp_cost`,
  :func:`adaptive_huber_delta`, :func:`pnp_normalize` / :func:`pnp_denormalize`;
* solvers: :func:`solve_pnp` -> :class:`PnPSolution`, :class:`PnPSolver`, :func:`gn_step`,
  :func:`compute_pose_plus`;
* Monte Carlo: :class:`EProPnP4DoF` / :class:`EProPnP6DoF` (``.solve`` and ``.monte_carlo_forward`` ->
  :class:`PoseSamples`), :func:`sampled_pnp_cost`, the proposal distributions;
* losses: :func:`monte_carlo_kl_loss`, :class:`MonteCarloPoseLoss`, :func:`derivative_regularization`,
  :func:`derivative_reg_losses`.

See ``docs/pnp_layer.md`` for a runnable example.
"""
from .camera import project
from .cost import adaptive_huber_delta, evaluate_pnp, pnp_cost
from .distributions import AngularCentralGaussian, MultivariateStudentT, VonMisesUniformMix, cholesky_with_fallback
from .epropnp import (
                      EProPnP4DoF,
                      EProPnP6DoF,
                      EProPnPBase,
                      PoseSamples,
                      Proposal4DoF,
                      Proposal6DoF,
                      amis,
                      sampled_pnp_cost,
)
from .losses import MonteCarloLossOutput, MonteCarloPoseLoss, monte_carlo_kl, monte_carlo_kl_loss
from .normalize import pnp_denormalize, pnp_normalize
from .regularization import derivative_reg_losses, derivative_regularization
from .rotation import quaternion_to_rot_mat, rot_mat_to_yaw, wrap_angle, yaw_to_rot_mat
from .solver import PnPSolver, compute_pose_plus, gn_step, solve_pnp
from .types import CameraParams, PnPSolution

__all__ = [
    'CameraParams', 'PnPSolution', 'project', 'evaluate_pnp', 'pnp_cost', 'adaptive_huber_delta',
    'pnp_normalize', 'pnp_denormalize', 'yaw_to_rot_mat', 'rot_mat_to_yaw', 'quaternion_to_rot_mat', 'wrap_angle',
    'solve_pnp', 'PnPSolver', 'gn_step', 'compute_pose_plus',
    'EProPnPBase', 'EProPnP4DoF', 'EProPnP6DoF', 'PoseSamples', 'Proposal4DoF', 'Proposal6DoF', 'amis',
    'sampled_pnp_cost', 'MultivariateStudentT', 'VonMisesUniformMix', 'AngularCentralGaussian',
    'cholesky_with_fallback',
    'monte_carlo_kl', 'monte_carlo_kl_loss', 'MonteCarloLossOutput', 'MonteCarloPoseLoss',
    'derivative_regularization', 'derivative_reg_losses',
]
