"""Proposal distributions: normalisation by quadrature, sample moments vs density, sampler vs density (KS / χ²),
generator reproducibility, Cholesky fallback."""
import math

import pytest
import torch

from epropnp_det.ops.pnp.distributions import (
    AngularCentralGaussian,
    MultivariateStudentT,
    VonMisesUniformMix,
    cholesky_with_fallback,
    sample_von_mises,
)

DT = torch.float64


def _midpoints(lo, hi, m):
    return lo + (torch.arange(m, dtype=DT) + 0.5) * (hi - lo) / m, (hi - lo) / m


# ------------------------------------------------------------------------------------------------ Student-t
L_T = torch.tensor([[0.5, 0., 0.], [0.2, 0.3, 0.], [-0.4, 0.1, 2.0]], dtype=DT)
MU_T = torch.tensor([1.0, -2.0, 30.0], dtype=DT)


def test_student_t_integrates_to_one():
    """Quadrature in whitened coordinates mapped by y = tan(θ) per axis (heavy tails: density ~ r⁻⁶)."""
    th, h = _midpoints(-math.pi / 2, math.pi / 2, 160)
    T = torch.stack(torch.meshgrid(th, th, th, indexing='ij'), -1).reshape(-1, 3)
    u = torch.tan(T)
    jac = (1 / torch.cos(T) ** 2).prod(-1) * torch.det(L_T)
    dist = MultivariateStudentT(MU_T, L_T)
    total = (dist.log_prob(MU_T + u @ L_T.T).exp() * jac).sum() * h ** 3
    assert abs(total.item() - 1) < 1e-3


def test_student_t_matches_reference_and_samples():
    scipy_stats = pytest.importorskip('scipy.stats')
    dist = MultivariateStudentT(MU_T, L_T)
    x = torch.randn(50, 3, dtype=DT, generator=torch.Generator().manual_seed(0)) * 3 + MU_T
    ref = scipy_stats.multivariate_t(MU_T.numpy(), (L_T @ L_T.T).numpy(), df=3).logpdf(x.numpy())
    torch.testing.assert_close(dist.log_prob(x), torch.from_numpy(ref), rtol=1e-10, atol=1e-10)
    # samples: median = μ (component-wise, heavy tails make means noisy), Mahalanobis² / 3 ~ F(3, 3)
    s = dist.sample((200000,), generator=torch.Generator().manual_seed(1))
    assert (s.median(0).values - MU_T).abs().max() < 0.02
    y = torch.linalg.solve_triangular(L_T, (s - MU_T).T, upper=False).T
    f = (y.square().sum(-1) / 3).numpy()
    ks = scipy_stats.kstest(f, scipy_stats.f(3, 3).cdf)
    assert ks.pvalue > 1e-3, ks


def test_student_t_broadcasting_proposals_vs_samples():
    """Proposals (I, 1, N, 3) against samples (S, N, 3) -> (I, S, N), equal to a loop."""
    g = torch.Generator().manual_seed(2)
    I, S, N = 3, 5, 4
    loc = torch.randn(I, 1, N, 3, dtype=DT, generator=g)
    A = torch.randn(I, 1, N, 3, 3, dtype=DT, generator=g)
    tril = torch.linalg.cholesky(A @ A.transpose(-1, -2) + torch.eye(3, dtype=DT))
    x = torch.randn(S, N, 3, dtype=DT, generator=g)
    lp = MultivariateStudentT(loc, tril).log_prob(x)
    assert lp.shape == (I, S, N)
    for i in range(I):
        for n in range(N):
            torch.testing.assert_close(lp[i, :, n], MultivariateStudentT(loc[i, 0, n], tril[i, 0, n]).log_prob(x[:, n]))


# ------------------------------------------------------------------------------------------------ von Mises
@pytest.mark.parametrize('kappa', [0.0, 0.3, 2.0, 50.0, 3e4])
def test_von_mises_mix_integrates_to_one_and_moments(kappa):
    mu = 2.5
    x, h = _midpoints(-math.pi, math.pi, 20000)
    dist = VonMisesUniformMix(torch.tensor(mu, dtype=DT), torch.tensor(kappa, dtype=DT))
    p = dist.log_prob(x).exp()
    if kappa < 1e4:  # the peak of κ = 3e4 is ~0.006 rad wide: the grid resolves it, but keep the check honest
        assert abs((p.sum() * h).item() - 1) < 1e-9
    # sample moments: E cos(x − μ) = 0.75 · I₁(κ)/I₀(κ), E sin(x − μ) = 0
    s = dist.sample(100000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (100000,) and s.min() >= -math.pi and s.max() < math.pi
    k = torch.tensor(kappa, dtype=DT)
    ratio = (torch.special.i1e(k) / torch.special.i0e(k)).item()
    assert abs(torch.cos(s - mu).mean().item() - 0.75 * ratio) < 0.006
    assert abs(torch.sin(s - mu).mean().item()) < 0.006
    # stratification: the first round(0.25 S) samples are the uniform part
    first = s[:25000]
    assert abs(torch.cos(first - mu).mean().item()) < 0.015 and first.std() > 1.7


@pytest.mark.parametrize('kappa', [0.05, 1.0, 8.0, 400.0])
def test_von_mises_sampler_ks_against_density(kappa):
    """Kolmogorov–Smirnov distance of 40k Best–Fisher samples to the CDF integrated from the density."""
    mu = -1.0
    x = sample_von_mises(torch.tensor(mu, dtype=DT), torch.tensor(kappa, dtype=DT), 40000,
                         generator=torch.Generator().manual_seed(3))
    d = torch.remainder(x - mu + math.pi, 2 * math.pi) - math.pi  # centred at 0
    grid, h = _midpoints(-math.pi, math.pi, 200000)
    pdf = torch.exp(kappa * (torch.cos(grid) - 1)) / (2 * math.pi * torch.special.i0e(torch.tensor(kappa, dtype=DT)))
    cdf = torch.cumsum(pdf, 0) * h
    emp = torch.searchsorted(d.sort().values, grid).to(DT) / d.numel()
    ks = (emp - cdf).abs().max().item()
    assert ks < 1.63 / math.sqrt(d.numel())  # 1 % critical value


def test_von_mises_mix_histogram_chi2():
    """χ² of a 36-bin histogram of the mixture sampler vs bin probabilities integrated from log_prob."""
    dist = VonMisesUniformMix(torch.tensor(0.7, dtype=DT), torch.tensor(3.0, dtype=DT))
    S = 36000
    s = dist.sample(S, generator=torch.Generator().manual_seed(4))
    edges = torch.linspace(-math.pi, math.pi, 37, dtype=DT)
    counts = torch.histc(s, bins=36, min=-math.pi, max=math.pi)
    x, h = _midpoints(-math.pi, math.pi, 36 * 400)
    probs = (dist.log_prob(x).exp() * h).reshape(36, 400).sum(-1)
    assert abs(probs.sum().item() - 1) < 1e-9 and edges.numel() == 37
    chi2 = ((counts - S * probs) ** 2 / (S * probs)).sum().item()
    assert chi2 < 67.0  # 99.9 % quantile of χ²(35) ≈ 66.6


def test_von_mises_broadcast_and_generator():
    loc = torch.tensor([0.0, 1.0, -2.0])
    kappa = torch.tensor([0.5, 10.0, 1000.0])
    a = VonMisesUniformMix(loc, kappa).sample(16, generator=torch.Generator().manual_seed(9))
    b = VonMisesUniformMix(loc, kappa).sample(16, generator=torch.Generator().manual_seed(9))
    c = VonMisesUniformMix(loc, kappa).sample(16, generator=torch.Generator().manual_seed(10))
    assert a.shape == (16, 3) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    lp = VonMisesUniformMix(loc[:, None].expand(3, 1).reshape(3, 1, 1), kappa.reshape(3, 1, 1)).log_prob(
        torch.zeros(5, 1))
    assert lp.shape == (3, 5, 1) and torch.isfinite(lp).all()


# ------------------------------------------------------------------------------------------------ ACG
def _s3_grid(m):
    """Hyperspherical midpoint grid on S³: points (G, 4) and surface weights (G,)."""
    psi, hp = _midpoints(0, math.pi, m)
    th, ht = _midpoints(0, math.pi, m)
    ph, hf = _midpoints(0, 2 * math.pi, 2 * m)
    P, T, F = torch.meshgrid(psi, th, ph, indexing='ij')
    x = torch.stack([torch.cos(P), torch.sin(P) * torch.cos(T), torch.sin(P) * torch.sin(T) * torch.cos(F),
                     torch.sin(P) * torch.sin(T) * torch.sin(F)], -1).reshape(-1, 4)
    w = (torch.sin(P) ** 2 * torch.sin(T)).reshape(-1) * hp * ht * hf
    return x, w


def test_acg_integrates_to_one_and_second_moment():
    A = torch.tensor([[3.0, 0.5, 0, 0], [0.5, 1.0, 0.2, 0], [0, 0.2, 0.3, 0], [0, 0, 0, 0.1]], dtype=DT)
    dist = AngularCentralGaussian(torch.linalg.cholesky(A))
    x, w = _s3_grid(120)
    p = dist.log_prob(x).exp()
    assert abs((p * w).sum().item() - 1) < 5e-4  # midpoint-rule error of the peaked density at m = 120
    area = w.sum().item()
    assert abs(area - 2 * math.pi ** 2) < 1e-3
    # E[x xᵀ] from samples vs quadrature
    m2_quad = torch.einsum('g,gi,gj->ij', p * w, x, x)
    s = dist.sample((200000,), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(200000, dtype=DT))
    m2_mc = s.T @ s / s.shape[0]
    assert (m2_mc - m2_quad).abs().max() < 0.01


# ------------------------------------------------------------------------------------------------ Cholesky
def test_cholesky_with_fallback():
    good = torch.tensor([[4.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 9.0]])
    bad = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # indefinite
    nan = torch.full((3, 3), float('nan'))
    L = cholesky_with_fallback(torch.stack([good, bad, nan, torch.zeros(3, 3)]), (1.0, 1.0, 4.0))
    torch.testing.assert_close(L[0] @ L[0].T, good)
    for i in (1, 2, 3):
        torch.testing.assert_close(L[i], torch.diag(torch.tensor([1.0, 1.0, 4.0])))


@pytest.mark.parametrize('p', [2, 3, 4, 6])
def test_cholesky_with_fallback_equals_lapack(p):
    """The unrolled factorisation (p ≤ 4) and the cholesky_ex path (p > 4) against LAPACK on random SPD matrices."""
    A = torch.randn(200, p, p + 2, generator=torch.Generator().manual_seed(p), dtype=torch.float64)
    M = A @ A.transpose(-1, -2)
    torch.testing.assert_close(cholesky_with_fallback(M, [1.0] * p), torch.linalg.cholesky(M), rtol=1e-12,
                               atol=1e-12)
