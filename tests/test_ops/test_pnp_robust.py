"""Cauchy (Lorentzian) robust cost: every copy of the arithmetic vs the formula, gradients by finite differences,
normal equations vs explicit Jacobians, the Monte-Carlo normaliser vs quadrature, and what it is for (outliers).

References are independent of the code under test: the cost from :func:`project` and the closed form
``(δ²/2) log(1 + s²/δ²)`` written here; gradients by ``torch.autograd.gradcheck`` (finite differences, float64);
``log Z`` by a midpoint rule on a whitened 4-D grid (as ``test_pnp_amis.py`` does for Huber).
"""
import math

import pytest
import torch

from epropnp_det.ops.pnp import (
    EProPnP4DoF,
    Proposal4DoF,
    amis,
    evaluate_pnp,
    pnp_cost,
    pnp_normalize,
    project,
    sampled_pnp_cost,
    solve_pnp,
)
from epropnp_det.ops.pnp.cost import normal_equations
from epropnp_det.ops.pnp.robust import drho_ddelta, irls_weight, rho
from epropnp_det.ops.pnp.testing import make_problems

D64 = torch.float64


def _cauchy_reference(x3d, x2d, w2d, pose, camera, delta):
    """Σ_i (δ²/2) log(1 + s_i²/δ²) with s_i = ‖(proj − x2d) ⊙ w2d‖ (written out, no library cost code)."""
    proj, _ = project(x3d, pose, camera)
    s2 = ((proj - x2d) * w2d).square().sum(-1)
    d2 = torch.as_tensor(delta, dtype=x3d.dtype).unsqueeze(-1) ** 2
    return (0.5 * d2 * torch.log(1 + s2 / d2)).sum(-1)


def _problem(dof=4, N=4, n=12, seed=0, noise=3.):
    p = make_problems(N, n, noise_px=noise, dtype=D64, generator=torch.Generator().manual_seed(seed), dof=dof)
    g = torch.Generator().manual_seed(seed + 1)
    poses = p['pose_gt'].expand(5, N, p['pose_gt'].shape[-1]).clone()
    poses[..., :3] += 0.3 * torch.randn(5, N, 3, generator=g, dtype=D64)
    if dof == 4:
        poses[..., 3] += 0.1 * torch.randn(5, N, generator=g, dtype=D64)
    else:
        poses[..., 3:] = torch.nn.functional.normalize(poses[..., 3:] + 0.05 * torch.randn(5, N, 4, generator=g,
                                                                                            dtype=D64), dim=-1)
    delta = torch.rand(N, generator=g, dtype=D64) * 0.05 + 0.01  # ~ a few weighted pixels: both regimes occur
    return p, poses, delta


def test_per_point_terms_are_consistent():
    """ω = ρ'(s)/s and ∂ρ/∂δ of :mod:`.robust` equal autograd of ρ, for both costs."""
    s = torch.linspace(0.01, 10, 57, dtype=D64).requires_grad_()
    delta = torch.tensor(1.3, dtype=D64, requires_grad=True)
    for robust in ('huber', 'cauchy'):
        ds, dd = torch.autograd.grad(rho(s, delta, robust).sum(), (s, delta))
        torch.testing.assert_close(irls_weight(s, delta, robust), ds / s, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(drho_ddelta(s, delta, robust).sum(), dd, rtol=1e-12, atol=1e-14)
    small = torch.tensor([1e-4], dtype=D64)  # both tend to s²/2 at small s
    torch.testing.assert_close(rho(small, torch.tensor(1., dtype=D64), 'cauchy'), small ** 2 / 2, rtol=1e-7,
                               atol=0)


@pytest.mark.parametrize('dof', [4, 6])
def test_every_cost_copy_equals_the_formula(dof):
    p, poses, delta = _problem(dof)
    ref = _cauchy_reference(p['x3d'], p['x2d'], p['w2d'], poses, p['camera'], delta)
    args = (p['x3d'], p['x2d'], p['w2d'], poses, p['camera'], delta)
    torch.testing.assert_close(pnp_cost(*args, robust='cauchy'), ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(evaluate_pnp(*args, out_cost=True, out_residual=True, robust='cauchy')[2], ref,
                               rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # the in-place no-grad branch of the solvers' kernel
        torch.testing.assert_close(pnp_cost(*args, robust='cauchy'), ref, rtol=1e-9, atol=1e-12)
    _, _, cost_ne = normal_equations(*args, robust='cauchy')
    torch.testing.assert_close(cost_ne, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sampled_pnp_cost(*args, backend='eager', robust='cauchy'), ref, rtol=1e-6, atol=1e-9)
    # the Cauchy cost is below the Huber cost (log(1+x) < ... ) and differs from it
    huber = pnp_cost(*args)
    assert (ref <= huber + 1e-12).all() and (huber - ref).abs().max() > 1e-3


@pytest.mark.parametrize('dof', [4, 6])
def test_cost_gradients_by_finite_differences(dof):
    p, poses, delta = _problem(dof, n=6, N=2)
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    d = delta.clone().requires_grad_()
    cam = p['camera']
    assert torch.autograd.gradcheck(lambda a, b, c, e: pnp_cost(a, b, c, poses, cam, e, robust='cauchy'),
                                    (x3d, x2d, w2d, d))
    # the hand-written backward of the fused sampled cost
    assert torch.autograd.gradcheck(
        lambda a, b, c, e: sampled_pnp_cost(a, b, c, poses, cam, e, backend='eager', robust='cauchy'),
        (x3d, x2d, w2d, d))


@pytest.mark.parametrize('dof', [4, 6])
def test_normal_equations_match_explicit_jacobian(dof):
    """J̃ᵀr̃ = Jᵀ ω r is the cost gradient w.r.t. the local pose (finite differences), J̃ᵀJ̃ = Jᵀ ω J."""
    p, poses, delta = _problem(dof, N=3, n=10)
    pose = poses[0]
    jtj, jtr, _ = normal_equations(p['x3d'], p['x2d'], p['w2d'], pose, p['camera'], delta, clip_jac=False,
                                   robust='cauchy')
    proj, J = project(p['x3d'], pose, p['camera'], out_jac=True, clip_jac=False)  # J (N, n, 2, T)
    r = (proj - p['x2d']) * p['w2d']
    s = r.norm(dim=-1)
    omega = 1 / (1 + s.square() / delta[:, None] ** 2)
    Jw = J * p['w2d'][..., None]
    ref_jtj = torch.einsum('nk,nkai,nkaj->nij', omega, Jw, Jw)
    ref_jtr = torch.einsum('nk,nkai,nka->ni', omega, Jw, r)
    torch.testing.assert_close(jtj, ref_jtj, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(jtr, ref_jtr, rtol=1e-8, atol=1e-10)
    if dof == 4:  # the gradient itself, by central differences of the reference cost
        eps = 1e-6
        fd = torch.stack([(_cauchy_reference(p['x3d'], p['x2d'], p['w2d'], pose + eps * e, p['camera'], delta)
                           - _cauchy_reference(p['x3d'], p['x2d'], p['w2d'], pose - eps * e, p['camera'], delta))
                          / (2 * eps) for e in torch.eye(4, dtype=D64)], -1)
        torch.testing.assert_close(jtr, fd, rtol=1e-5, atol=1e-6)


def test_monte_carlo_normaliser_matches_quadrature():
    """log Z = log ∫ exp(−cost) dy with the Cauchy cost: AMIS (K = 512, 20 runs) vs a 20⁴ midpoint grid."""
    g = torch.Generator().manual_seed(5)
    N, n = 3, 16
    p = make_problems(N, n, dtype=D64, generator=g)
    pose = p['pose_gt'].clone()
    pose[:, 0], pose[:, 1], pose[:, 2] = torch.tensor([-2., 0., 2.], dtype=D64), 1.0, torch.tensor(
        [10., 15., 20.], dtype=D64)
    x2d, _ = project(p['x3d'], pose, p['camera'])
    x2d = x2d + torch.randn(N, n, 2, generator=g, dtype=D64) * 2
    w2d = torch.ones_like(x2d)
    delta = torch.full((N,), 4.0, dtype=D64)  # 2 px noise, δ = 4 px: the log tails matter
    cam = p['camera']
    offset, x3d_n, pose_n = pnp_normalize(p['x3d'], pose)
    sol = solve_pnp(x3d_n, x2d, w2d, cam, delta, normalize=False, with_cov=True, pose_init=pose_n,
                    robust='cauchy')
    L = torch.linalg.cholesky(sol.cov * 2.0)
    M, R = 20, 7.0
    u = (torch.arange(M, dtype=D64) + 0.5) / M * 2 * R - R
    U = torch.stack(torch.meshgrid(u, u, u, u, indexing='ij'), -1).reshape(-1, 4)
    grid = sol.pose[:, None] + U @ L.transpose(-1, -2)  # (N, G, 4)
    log_cell = 4 * math.log(2 * R / M) + torch.logdet(L)
    logZ = torch.stack([torch.logsumexp(-_cauchy_reference(x3d_n[i:i + 1], x2d[i:i + 1], w2d[i:i + 1],
                                                            grid[i][:, None], cam.index(slice(i, i + 1)),
                                                            delta[i:i + 1])[:, 0], 0)
                        for i in range(N)]) + log_cell
    prop0 = Proposal4DoF.initial_fit(sol.pose, sol.cov)
    gen = torch.Generator().manual_seed(0)
    est = torch.stack([torch.logsumexp(amis(x3d_n, x2d, w2d, cam, delta, prop0, num_samples=512, num_iter=4,
                                            generator=gen, backend='eager', robust='cauchy')[1], 0) - math.log(512)
                       for _ in range(20)])
    ratio = (est - logZ).exp()
    mean, se = ratio.mean(0), ratio.std(0) / math.sqrt(20)
    # AMIS's O(1/K) low bias (≈ 2.5 % at K = 512 for Huber, see test_pnp_amis.py) plus 3 standard errors
    assert ((mean - 1).abs() < 3 * se + 0.05).all(), (mean, se)
    # and the Cauchy normaliser is not the Huber one (the test would not notice a silently ignored option)
    est_huber = torch.logsumexp(amis(x3d_n, x2d, w2d, cam, delta, prop0, num_samples=512, num_iter=4,
                                     generator=gen, backend='eager')[1], 0) - math.log(512)
    assert ((est_huber - logZ).abs() > 0.2).all()


def test_cauchy_ignores_gross_outliers_where_huber_is_pulled():
    """30 % of the points moved by 150 px: the redescending Cauchy cost keeps the pose, Huber is pulled."""
    g = torch.Generator().manual_seed(6)
    N, n = 64, 40
    p = make_problems(N, n, noise_px=1., dtype=D64, generator=g)
    x2d = p['x2d'].clone()
    out = torch.rand(N, n, generator=g) < 0.3
    x2d[out] += 150 * torch.nn.functional.normalize(torch.randn(int(out.sum()), 2, generator=g, dtype=D64), dim=-1)
    w2d = torch.ones_like(x2d)
    delta = torch.full((N,), 3.0, dtype=D64)
    errs = {}
    for robust in ('huber', 'cauchy'):
        sol = solve_pnp(p['x3d'], x2d, w2d, p['camera'], delta, pose_init=p['pose_gt'], robust=robust,
                        num_iter=20)
        errs[robust] = (sol.pose[:, :3] - p['pose_gt'][:, :3]).norm(dim=-1).median()
    assert errs['cauchy'] < 0.5 * errs['huber'], errs


def test_layer_option_reaches_every_stage():
    p = make_problems(4, 16, dtype=D64, generator=torch.Generator().manual_seed(7))
    delta = torch.full((4,), 3.0, dtype=D64)
    kw = dict(delta=delta, pose_init=p['pose_gt'], generator=torch.Generator().manual_seed(0))
    mc_c = EProPnP4DoF(mc_samples=32, robust='cauchy').monte_carlo_forward(p['x3d'], p['x2d'], p['w2d'],
                                                                          p['camera'], **kw)
    ref = _cauchy_reference(p['x3d'], p['x2d'], p['w2d'], mc_c.pose_opt, p['camera'], delta)
    torch.testing.assert_close(mc_c.cost_opt, ref, rtol=1e-9, atol=1e-12)
    ref_init = _cauchy_reference(p['x3d'], p['x2d'], p['w2d'], p['pose_gt'], p['camera'], delta)
    torch.testing.assert_close(mc_c.cost_init, ref_init, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match='robust'):
        EProPnP4DoF(robust='tukey')
