"""Robust per-point costs ``ρ(s; δ)`` of the weighted reprojection residual norm ``s`` (pixels · weight).

Both costs behave as ``s²/2`` near zero and are used the same way: the object's cost is ``Σ_i ρ(s_i)`` and the pose
density is ``p(y | X) ∝ exp(−cost(y))`` (``docs/method.md``, the layer's equations), so the Monte-Carlo KL loss, the
AMIS normaliser and the Laplace covariance mean the same thing for either. ``δ`` is the scale of the robust
cost (:func:`.cost.adaptive_huber_delta` for both).

* ``'huber'`` (default, the published method)::

      ρ(s) = s²/2 (s ≤ δ),   δ s − δ²/2 (s > δ)          written as  m (s − m/2),  m = min(s, δ)

  tails ``exp(−δ s)``: an outlier's pull on the pose is bounded.
* ``'cauchy'`` (Lorentzian)::

      ρ(s) = (δ²/2) · log(1 + s²/δ²)

  tails ``(1 + s²/δ²)^(−δ²/2)``: an outlier's pull decays like ``1/s`` (redescending), so gross outliers are
  ignored instead of bounded; the cost is not convex, so a good initialisation (RSLM) matters more.

For Gauss-Newton / IRLS the solvers use the weight ``ω(s) = ρ'(s)/s``: Huber ``min(1, δ/s)``, Cauchy
``1 / (1 + s²/δ²)``; ``Jᵀ ω r`` is the exact cost gradient and ``Jᵀ ω J`` the (IRLS) Gauss-Newton Hessian.

Where the arithmetic lives (copies kept for speed, all equal up to float rounding): :mod:`.cost`
(:func:`.cost.evaluate_pnp`, reference formulation with explicit Jacobians), :mod:`.kernels` (``_residuals``,
the in-place branch of ``cost_prepared`` and ``normal_equations_planes``: the solvers), :mod:`.sampled_cost`
(``_projection_terms`` / ``_planar_grads`` for the compiled kernels, ``_chunk_forward`` and the eager backward of
``_SampledCost``: the Monte-Carlo samples). The projection itself is written in :func:`.camera.project_planar`,
``kernels._coefficients`` (folded ``[K·R | K·t]`` rows with derivatives) and ``sampled_cost._pose_affine``.
On the CPU the native kernels repeat the cost once more: ``csrc/common.h`` (``rho``, ``irls_weight``),
``csrc/solver.cpp`` (the LM/GN loop and the cost of many poses) and ``csrc/sampled_cost.cpp`` (the Monte-Carlo
samples, forward and backward), checked against the torch code by ``tests/test_ops/test_pnp_native_solver.py`` and
``tests/test_ops/test_pnp_native_sampled.py`` (both costs, values, normal equations and gradients).
They are kept equal by ``tests/test_ops/test_pnp_cost.py`` (Huber: ``evaluate_pnp`` vs the formula, ``pnp_cost``
vs ``evaluate_pnp``, normal equations vs explicit Jacobians), ``tests/test_ops/test_pnp_amis.py`` (Huber:
``sampled_pnp_cost`` eager and compiled vs ``pnp_cost``, values and gradients), ``tests/test_ops/test_pnp_robust.py``
(Cauchy: ``evaluate_pnp``, both branches of ``pnp_cost``, ``normal_equations`` and the eager ``sampled_pnp_cost``
vs the closed form; normal equations vs explicit Jacobians) and ``tests/test_ops/test_pnp_compile.py`` (the planar
kernels vs the eager chunks, values and gradients, for both costs; the compiled path vs eager).

Shapes: element-wise; ``s`` and ``delta`` broadcast (``delta`` is usually ``(*, N, 1)`` against ``s (*, N, n)``).
"""
import torch
from torch import Tensor

__all__ = ['ROBUST_COSTS', 'check_robust', 'rho', 'irls_weight', 'drho_ddelta']

ROBUST_COSTS = ('huber', 'cauchy')

# floor of δ in the Cauchy terms (δ = 0, e.g. all-zero weights, would divide by zero); as the Huber IRLS floor
DELTA_FLOOR = 1e-10


def check_robust(robust: str) -> str:
    if robust not in ROBUST_COSTS:
        raise ValueError(f'robust must be one of {ROBUST_COSTS}, got {robust!r}')
    return robust


def rho(s: Tensor, delta: Tensor, robust: str = 'huber') -> Tensor:
    """Per-point cost ``ρ(s; δ)`` from the residual norm ``s ≥ 0`` (differentiable in both)."""
    if robust == 'huber':
        m = torch.minimum(s, delta)  # s in the quadratic zone, δ in the linear zone
        return m * (s - 0.5 * m)
    if robust == 'cauchy':
        d2 = delta.clamp(min=DELTA_FLOOR).square()
        return 0.5 * d2 * torch.log1p(s * s / d2)
    raise ValueError(f'robust must be one of {ROBUST_COSTS}, got {robust!r}')


def irls_weight(s: Tensor, delta: Tensor, robust: str = 'huber') -> Tensor:
    """``ω = ρ'(s)/s``: Huber ``min(1, δ/s)`` (δ and s floored at 1e-10), Cauchy ``1/(1 + s²/δ²)``."""
    if robust == 'huber':
        return (delta.clamp(min=1e-10) / s.clamp(min=1e-10)).clamp(max=1.0)
    if robust == 'cauchy':
        return (1 + s * s / delta.clamp(min=DELTA_FLOOR).square()).reciprocal()
    raise ValueError(f'robust must be one of {ROBUST_COSTS}, got {robust!r}')


def drho_ddelta(s: Tensor, delta: Tensor, robust: str = 'huber') -> Tensor:
    """``∂ρ/∂δ``: Huber ``s − m`` (zero in the quadratic zone); Cauchy ``δ log(1 + x) − δ x/(1 + x)``,
    ``x = s²/δ²``."""
    if robust == 'huber':
        return s - torch.minimum(s, delta)
    if robust == 'cauchy':
        d = delta.clamp(min=DELTA_FLOOR)
        x = s * s / (d * d)
        return d * (torch.log1p(x) - x / (1 + x))
    raise ValueError(f'robust must be one of {ROBUST_COSTS}, got {robust!r}')
