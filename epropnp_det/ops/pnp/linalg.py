"""Batched small symmetric positive (semi-)definite solves, unrolled for D = 4 or 6.

Why not ``torch.linalg.solve``: the PnP solvers solve 10⁴–10⁵ independent 4×4 systems per iteration, where
LAPACK's per-matrix overhead dominates and a singular matrix raises (or needs an ``info`` check = host sync).
Here an LDLᵀ factorisation is written entry by entry on ``(*,)`` tensors (≈50 element-wise ops for D = 4), with

* Jacobi scaling ``A' = S A S``, ``S = diag(A)^(-1/2)`` (unit diagonal; helps float32), and
* pivots floored at ``pivot_floor`` (relative to the unit diagonal), so singular or indefinite inputs (all-zero
  weights, coincident points, rounding) give a finite, damped solution instead of NaN/Inf. For well-conditioned
  systems (pivots above the floor) the result equals the exact solution.

Everything is differentiable by autograd and free of host synchronisation.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ['spd_solve', 'spd_inverse']


def _default_floor(dtype: torch.dtype) -> float:
    return 1e-15 if dtype == torch.float64 else 1e-6


def _ldl_solve(A: Tensor, B: Tensor, pivot_floor: Optional[float]) -> Tensor:
    """A (*, D, D) symmetric, B (*, D, R) -> X (*, D, R)."""
    D = A.shape[-1]
    floor = _default_floor(A.dtype) if pivot_floor is None else pivot_floor
    diag = A.diagonal(dim1=-2, dim2=-1)
    # tiny absolute floor keeps rsqrt finite for all-zero rows; values below are meaningless anyway
    scale = diag.clamp(min=torch.finfo(A.dtype).tiny ** 0.5).rsqrt()  # (*, D)
    a = [[A[..., i, j] * (scale[..., i] * scale[..., j]) for j in range(i + 1)] for i in range(D)]  # lower
    L = [[None] * D for _ in range(D)]
    d = [None] * D
    for j in range(D):
        # v_k = L_jk d_k for k < j (reused by the column below)
        v = [L[j][k] * d[k] for k in range(j)]
        dj = a[j][j]
        for k in range(j):
            dj = dj - L[j][k] * v[k]
        dj = dj.clamp(min=floor)
        d[j] = dj
        inv_dj = 1 / dj
        for i in range(j + 1, D):
            acc = a[i][j]
            for k in range(j):
                acc = acc - L[i][k] * v[k]
            L[i][j] = acc * inv_dj
    rhs = B * scale.unsqueeze(-1)
    y = [rhs[..., i, :] for i in range(D)]
    for i in range(D):  # forward substitution, unit lower L
        for k in range(i):
            y[i] = y[i] - L[i][k].unsqueeze(-1) * y[k]
    x = [y[i] / d[i].unsqueeze(-1) for i in range(D)]
    for i in reversed(range(D)):  # back substitution with Lᵀ
        for k in range(i + 1, D):
            x[i] = x[i] - L[k][i].unsqueeze(-1) * x[k]
    return torch.stack(x, dim=-2) * scale.unsqueeze(-1)


def spd_solve(A: Tensor, b: Tensor, pivot_floor: Optional[float] = None) -> Tensor:
    """Solve ``A x = b`` for symmetric positive (semi-)definite ``A`` (*, D, D) and ``b`` (*, D) -> x (*, D).

    ``pivot_floor`` (default 1e-15 in float64, 1e-6 otherwise) bounds the Jacobi-scaled LDLᵀ pivots from below.
    """
    A, b = torch.broadcast_tensors(A, b.unsqueeze(-1).expand(*b.shape, A.shape[-1]))
    return _ldl_solve(A, b[..., :1], pivot_floor).squeeze(-1)


def spd_inverse(A: Tensor, pivot_floor: Optional[float] = None) -> Tensor:
    """Inverse of symmetric positive (semi-)definite ``A`` (*, D, D) (same safeguards as :func:`spd_solve`)."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    inv = _ldl_solve(A, eye, pivot_floor)
    return 0.5 * (inv + inv.transpose(-1, -2))
