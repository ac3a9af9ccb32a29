"""Proposal distributions of the AMIS Monte-Carlo PnP (docs/method.md §2.8–2.10), in plain torch.

Every sampler takes an optional ``torch.Generator`` and uses only ``torch.randn`` / ``torch.rand`` with it, so a
seeded generator reproduces the draws bit for bit on one device, and nothing leaves the device (this fixes
docs/method.md §13.18: the original drew the von Mises part with the global NumPy RNG and a GPU→CPU round trip per AMIS
iteration). There is no data-dependent loop length: the von Mises rejection sampler runs a fixed number of
vectorised rounds.

Distributions are small frozen dataclasses of parameter tensors. ``log_prob`` broadcasts the parameters'
batch shape against the value's batch shape, e.g. proposals ``loc (I, 1, N, 3)`` against samples ``(S, N, 3)``
give log-densities ``(I, S, N)``.

Densities:

* :class:`MultivariateStudentT` — w.r.t. Lebesgue measure on R^p (translation in metres).
* :class:`VonMisesUniformMix` — w.r.t. Lebesgue measure on one period of the angle (radians); 2π-periodic.
* :class:`AngularCentralGaussian` — w.r.t. the surface measure of the unit sphere S^(q-1) (area 2π^(q/2)/Γ(q/2)),
  for unit quaternions (q = 4, antipodally symmetric).
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ['MultivariateStudentT', 'VonMisesUniformMix', 'AngularCentralGaussian', 'cholesky_with_fallback',
           'tril_solve', 'sample_von_mises', 'log_i0']

_Shape = Union[int, Sequence[int], torch.Size]


def _as_shape(shape: _Shape) -> tuple:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def tril_solve(L: Tensor, b: Tensor) -> Tensor:
    """Forward substitution ``L⁻¹ b`` for small lower-triangular ``L`` (*, p, p) and ``b`` (*, p), broadcasting.

    Unrolled over p (element-wise ops only), which is much faster than batched LAPACK calls for 10⁵–10⁶ tiny
    systems and broadcasts a few proposals against many samples without materialising expanded matrices.
    """
    p = L.shape[-1]
    ys = []
    for i in range(p):
        acc = b[..., i]
        for k in range(i):
            acc = acc - L[..., i, k] * ys[k]
        ys.append(acc / L[..., i, i])
    return torch.stack(ys, dim=-1)


def cholesky_with_fallback(mat: Tensor, default_diag: Sequence[float]) -> Tensor:
    """Batched Cholesky factor of (*, p, p) SPD matrices; failing or non-finite ones get ``diag(default_diag)``.

    ``default_diag`` is the diagonal of the substituted **lower-triangular factor** (docs/method.md §2.8: ``[1, 1, 4]``
    for the translation, i.e. covariance ``diag(1, 1, 16)``). No per-matrix Python loop and no host
    synchronisation: for p ≤ 4 (every proposal) the factorisation is unrolled into element-wise ops, which a CUDA
    graph can capture and which beat batched LAPACK/cuSOLVER calls on millions of tiny matrices; larger p use
    one ``cholesky_ex`` call. A matrix fails when a pivot is not positive or anything is non-finite.
    """
    p = mat.shape[-1]
    # built from Python scalars on the device: no host-to-device copy (capturable in a CUDA graph)
    eye = torch.eye(p, dtype=mat.dtype, device=mat.device)
    default = torch.stack([eye[i] * float(v) for i, v in enumerate(default_diag)])
    if p > 4:
        L, info = torch.linalg.cholesky_ex(mat)
        ok = (info == 0) & torch.isfinite(L).flatten(-2).all(dim=-1)
        return torch.where(ok[..., None, None], L, default)
    ok = torch.isfinite(mat).flatten(-2).all(dim=-1)
    cols = [[None] * p for _ in range(p)]
    for j in range(p):
        d = mat[..., j, j]
        for k in range(j):
            d = d - cols[j][k] * cols[j][k]
        ok = ok & (d > 0)
        ljj = d.clamp(min=torch.finfo(mat.dtype).tiny).sqrt()
        cols[j][j] = ljj
        for i in range(j + 1, p):
            acc = mat[..., i, j]
            for k in range(j):
                acc = acc - cols[i][k] * cols[j][k]
            cols[i][j] = acc / ljj
    zero = torch.zeros_like(mat[..., 0, 0])
    L = torch.stack([torch.stack([cols[i][j] if j <= i else zero for j in range(p)], dim=-1) for i in range(p)],
                    dim=-2)
    ok = ok & torch.isfinite(L).flatten(-2).all(dim=-1)
    return torch.where(ok[..., None, None], L, default)


def log_i0(kappa: Tensor) -> Tensor:
    """``log I₀(κ)`` for κ ≥ 0, stable for large κ: ``log(i0e(κ)) + κ``."""
    return torch.log(torch.special.i0e(kappa)) + kappa


# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MultivariateStudentT:
    """Multivariate Student-t with integer ``df`` (docs/method.md §2.9).

    Attributes:
        loc: (*, p) mode (metres for the translation proposal).
        scale_tril: (*, p, p) lower-triangular scale factor ``L`` (positive diagonal).
        df: degrees of freedom ν (a positive integer; the proposals use 3).

    Sampling: ``x = μ + L z · sqrt(ν / g)`` with ``z ~ N(0, I_p)`` and ``g ~ χ²_ν`` drawn as the squared norm of
    ν standard normals (exact for integer ν, and needs nothing but ``torch.randn`` with the generator).
    """
    loc: Tensor
    scale_tril: Tensor
    df: int = 3

    def __post_init__(self):
        p = self.loc.shape[-1]
        if self.scale_tril.shape[-2:] != (p, p):
            raise ValueError(f'scale_tril must be (*, {p}, {p}) for loc (*, {p}), got {tuple(self.scale_tril.shape)}')
        if int(self.df) != self.df or self.df < 1:
            raise ValueError(f'df must be a positive integer, got {self.df}')

    @property
    def batch_shape(self) -> torch.Size:
        return torch.broadcast_shapes(self.loc.shape[:-1], self.scale_tril.shape[:-2])

    def sample(self, sample_shape: _Shape = (), generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw (*sample_shape, *batch_shape, p) samples (not differentiable)."""
        p, nu = self.loc.shape[-1], int(self.df)
        shape = _as_shape(sample_shape) + tuple(self.batch_shape)
        kw = dict(dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        z = torch.randn(*shape, p, **kw)
        g = torch.randn(*shape, nu, **kw).square().sum(dim=-1, keepdim=True)
        z = z * torch.sqrt(nu / g.clamp(min=torch.finfo(g.dtype).tiny))
        return self.loc.detach() + (self.scale_tril.detach() @ z.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density (*broadcast batch,) of ``value`` (*, p); broadcasts like ``value - loc``."""
        p, nu = self.loc.shape[-1], float(self.df)
        y = tril_solve(self.scale_tril, value - self.loc)
        maha = y.square().sum(dim=-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)
        const = math.lgamma((nu + p) / 2) - math.lgamma(nu / 2) - 0.5 * p * math.log(nu * math.pi)
        return const - log_det - 0.5 * (nu + p) * torch.log1p(maha / nu)


# --------------------------------------------------------------------------------------------------------------
def sample_von_mises(loc: Tensor, kappa: Tensor, sample_shape: _Shape = (),
                     generator: Optional[torch.Generator] = None, rounds: int = 12) -> Tensor:
    """Von Mises samples in ``[-π, π)`` by Best–Fisher (1979) rejection with a fixed number of rounds.

    Every sample gets ``rounds`` candidate draws at once; the first accepted candidate is taken. The acceptance
    rate is ≥ 0.65 for every κ, so with 12 rounds the fallback (the last candidate, a draw from the
    wrapped-Cauchy-like envelope) is used with probability < 3e-6 per sample. Arithmetic in float64 (``acos``
    near ±1 for κ ~ 10⁴ needs it), returned in ``loc.dtype``.

    Args:
        loc: (*batch) mean direction, radians.
        kappa: (*batch) concentration ≥ 0 (κ → 0 gives the uniform distribution).
        sample_shape: leading sample dims.
        rounds: candidates per sample.

    Returns:
        (*sample_shape, *batch) angles.
    """
    loc, kappa = torch.broadcast_tensors(loc.detach(), kappa.detach())
    shape = _as_shape(sample_shape) + tuple(loc.shape)
    k = kappa.double().clamp(min=1e-12)
    # ρ = (τ − sqrt(2τ)) / (2κ) with τ = 1 + sqrt(1 + 4κ²), rewritten without cancellation for small κ
    root = torch.sqrt(1 + 4 * k * k)
    tau = 1 + root
    rho = 2 * k * tau / ((root + 1) * (tau + torch.sqrt(2 * tau)))
    r = (1 + rho * rho) / (2 * rho)
    # float32 uniforms (3x cheaper to draw than float64; 2^-24 resolution is ample for the accept tests),
    # the arithmetic is float64
    u = torch.rand(rounds, 3, *shape, dtype=torch.float32, device=loc.device, generator=generator).double()
    zc = torch.cos(u[:, 0].mul_(math.pi))
    f = (r * zc).add_(1).div_(zc.add_(r))  # (1 + r z) / (r + z)
    c = (r - f).mul_(k)
    # exact Best-Fisher test log(c / u2) + 1 - c >= 0, i.e. u2 <= c exp(1 - c) (its quick pre-test is implied)
    accept = u[:, 1] <= c * torch.exp(1 - c)
    # first accepted round = number of leading rejections (the last round if none was accepted)
    first = (accept.cumsum(dim=0) == 0).sum(dim=0, keepdim=True).clamp_(max=rounds - 1)
    f = f.gather(0, first).squeeze(0)
    sign = torch.sign(u[:, 2].gather(0, first).squeeze(0) - 0.5)
    theta = sign * torch.acos(f.clamp(-1.0, 1.0))
    out = torch.remainder(theta + loc.double() + math.pi, 2 * math.pi) - math.pi
    return out.to(loc.dtype)


@dataclass(frozen=True)
class VonMisesUniformMix:
    """Yaw proposal ``(1 − a)·VonMises(loc, κ) + a·Uniform(−π, π)`` with ``a = uniform_mix = 0.25``
    (docs/method.md §2.9).

    Attributes:
        loc: (*batch) mode, radians (any real; the density is 2π-periodic).
        kappa: (*batch) concentration ≥ 0.
        uniform_mix: weight of the uniform component.

    Sampling is stratified: of ``S`` samples along the first sample dim, the first ``round(a·S)`` are uniform on
    ``[-π, π)`` and the rest von Mises; all values lie in ``[-π, π)``.
    """
    loc: Tensor
    kappa: Tensor
    uniform_mix: float = 0.25

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw (num_samples, *batch) angles (first ``round(a·num_samples)`` from the uniform part)."""
        loc, kappa = torch.broadcast_tensors(self.loc.detach(), self.kappa.detach())
        n_uni = int(round(self.uniform_mix * num_samples))
        uni = (torch.rand(n_uni, *loc.shape, dtype=loc.dtype, device=loc.device, generator=generator) * 2 - 1) \
            * math.pi
        vm = sample_von_mises(loc, kappa, num_samples - n_uni, generator=generator)
        return torch.cat([uni, vm], dim=0)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of ``value`` (broadcast with the batch), per radian."""
        a = self.uniform_mix
        kappa = self.kappa
        # log[(1-a) exp(κ cos(x-μ)) / (2π I₀(κ))] with I₀ = i0e·e^κ, written as κ(cos − 1) − log(2π i0e(κ))
        log_vm = math.log1p(-a) + kappa * (torch.cos(value - self.loc) - 1) \
            - torch.log(2 * math.pi * torch.special.i0e(kappa))
        if a <= 0:
            return log_vm
        return torch.logaddexp(log_vm, torch.full_like(log_vm, math.log(a / (2 * math.pi))))


# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AngularCentralGaussian:
    """Angular central Gaussian on the unit sphere S^(q-1) (docs/method.md §2.9; q = 4 for quaternions).

    Attributes:
        scale_tril: (*batch, q, q) lower-triangular factor ``L`` of ``Σ`` (only the shape of Σ matters: the
            density is invariant to scaling Σ).

    ``log p(x) = −(q/2) log(xᵀ Σ⁻¹ x) − log|L| − log(2π^(q/2) / Γ(q/2))`` w.r.t. the surface measure;
    samples are ``L z / ‖L z‖`` with ``z ~ N(0, I_q)`` (fallback ``e₀ = [1, 0, ..., 0]`` if the norm < 1e-6).
    """
    scale_tril: Tensor

    @property
    def dim(self) -> int:
        return self.scale_tril.shape[-1]

    def sample(self, sample_shape: _Shape = (), generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw (*sample_shape, *batch, q) unit vectors (not differentiable)."""
        L = self.scale_tril.detach()
        q = self.dim
        shape = _as_shape(sample_shape) + tuple(L.shape[:-2])
        z = torch.randn(*shape, q, dtype=L.dtype, device=L.device, generator=generator)
        x = (L @ z.unsqueeze(-1)).squeeze(-1)
        norm = x.norm(dim=-1, keepdim=True)
        e0 = torch.zeros_like(x)
        e0[..., 0] = 1
        return torch.where(norm > 1e-6, x / norm.clamp(min=1e-6), e0)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of unit vectors ``value`` (*, q), broadcast against the batch."""
        q = self.dim
        maha = tril_solve(self.scale_tril, value).square().sum(dim=-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)
        log_area = math.log(2.0) + 0.5 * q * math.log(math.pi) - math.lgamma(0.5 * q)
        return -0.5 * q * torch.log(maha) - log_det - log_area
