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
from typing import List, Optional

import torch
from torch import Tensor

__all__ = ['spd_solve', 'spd_inverse', 'ldl_solve_planes']


def _default_floor(dtype: torch.dtype) -> float:
    return 1e-15 if dtype == torch.float64 else 1e-6


def ldl_solve_planes(A: List[List[Tensor]], b: List[Tensor], damp: Optional[List[Tensor]] = None,
                     pivot_floor: Optional[float] = None) -> List[Tensor]:
    """Solve ``(A + diag(damp)) x = b`` with A given as a D×D list of planes (*,) (symmetric; the lower triangle
    is read) and b as D planes (*,) or (*, R). Returns x as D planes. See the module docstring."""
    D = len(A)
    dtype = A[0][0].dtype
    floor = _default_floor(dtype) if pivot_floor is None else pivot_floor
    diag = [A[i][i] if damp is None else A[i][i] + damp[i] for i in range(D)]
    # tiny absolute floor keeps rsqrt finite for all-zero rows; values below are meaningless anyway
    scale = [d.clamp(min=torch.finfo(dtype).tiny ** 0.5).rsqrt() for d in diag]
    a = [[A[i][j] * (scale[i] * scale[j]) if i != j else diag[i] * scale[i].square() for j in range(i + 1)]
         for i in range(D)]
    L = [[None] * D for _ in range(D)]
    d = [None] * D
    for j in range(D):
        v = [L[j][k] * d[k] for k in range(j)]  # L_jk d_k, reused by the column below
        dj = a[j][j]
        for k in range(j):
            dj = dj - L[j][k] * v[k]
        dj = dj.clamp(min=floor)
        d[j] = dj
        inv_dj = dj.reciprocal()
        for i in range(j + 1, D):
            acc = a[i][j]
            for k in range(j):
                acc = acc - L[i][k] * v[k]
            L[i][j] = acc * inv_dj
    extra = b[0].dim() - scale[0].dim()

    def ex(t):
        return t.reshape(*t.shape, *([1] * extra))
    y = [b[i] * ex(scale[i]) for i in range(D)]
    for i in range(D):  # forward substitution, unit lower L
        for k in range(i):
            y[i] = y[i] - ex(L[i][k]) * y[k]
    x = [y[i] / ex(d[i]) for i in range(D)]
    for i in reversed(range(D)):  # back substitution with Lᵀ
        for k in range(i + 1, D):
            x[i] = x[i] - ex(L[k][i]) * x[k]
    return [x[i] * ex(scale[i]) for i in range(D)]


def _planes(A: Tensor) -> List[List[Tensor]]:
    D = A.shape[-1]
    return [[A[..., i, j] for j in range(D)] for i in range(D)]


def spd_solve(A: Tensor, b: Tensor, pivot_floor: Optional[float] = None) -> Tensor:
    """Solve ``A x = b`` for symmetric positive (semi-)definite ``A`` (*, D, D) and ``b`` (*, D) -> x (*, D).

    ``pivot_floor`` (default 1e-15 in float64, 1e-6 otherwise) bounds the Jacobi-scaled LDLᵀ pivots from below.
    """
    A, b = torch.broadcast_tensors(A, b.unsqueeze(-1).expand(*b.shape, A.shape[-1]))
    x = ldl_solve_planes(_planes(A), [b[..., i, 0] for i in range(A.shape[-1])], pivot_floor=pivot_floor)
    return torch.stack(x, dim=-1)


def spd_inverse(A: Tensor, pivot_floor: Optional[float] = None) -> Tensor:
    """Inverse of symmetric positive (semi-)definite ``A`` (*, D, D) (same safeguards as :func:`spd_solve`)."""
    D = A.shape[-1]
    eye = torch.eye(D, dtype=A.dtype, device=A.device).expand_as(A)
    inv = torch.stack(ldl_solve_planes(_planes(A), [eye[..., i, :] for i in range(D)], pivot_floor=pivot_floor),
                      dim=-2)
    return 0.5 * (inv + inv.transpose(-1, -2))
