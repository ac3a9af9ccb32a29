"""Solvers (docs/method.md §2.4-2.6): exact recovery, RSLM success rate, best-of init, covariance, robustness."""
import math

import pytest
import torch

from epropnp_det.ops.pnp.camera import project
from epropnp_det.ops.pnp.cost import adaptive_huber_delta, evaluate_pnp, pnp_cost
from epropnp_det.ops.pnp.linalg import spd_inverse, spd_solve
from epropnp_det.ops.pnp.normalize import pnp_denormalize, pnp_denormalize_cov, pnp_normalize
from epropnp_det.ops.pnp.regularization import derivative_reg_losses
from epropnp_det.ops.pnp.rotation import quaternion_to_rot_mat, wrap_angle
from epropnp_det.ops.pnp.solver import (
    PnPSolver,
    compute_pose_plus,
    lm_solve,
    retract,
    rslm_init,
    sample_subsets,
    solve_pnp,
)
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.ops.pnp.types import CameraParams

D64 = torch.float64


def _pose_err(pose, gt):
    te = (pose[:, :3] - gt[:, :3]).norm(dim=-1)
    if pose.shape[-1] == 4:
        re = wrap_angle(pose[:, 3] - gt[:, 3]).abs()
    else:
        re = (quaternion_to_rot_mat(pose[:, 3:]) - quaternion_to_rot_mat(gt[:, 3:])).flatten(1).norm(dim=-1)
    return te, re


def test_spd_solve_and_inverse():
    g = torch.Generator().manual_seed(0)
    for D in (4, 6):
        J = torch.randn(200, 12, D, dtype=D64, generator=g)
        A = J.transpose(-1, -2) @ J
        b = torch.randn(200, D, dtype=D64, generator=g)
        assert torch.allclose(spd_solve(A, b), torch.linalg.solve(A, b), rtol=1e-9, atol=1e-10)
        assert torch.allclose(spd_inverse(A), torch.linalg.inv(A), rtol=1e-9, atol=1e-10)
    # singular / zero / indefinite (rounding) systems give finite results
    A = torch.zeros(3, 4, 4)
    A[1] = torch.ones(4, 4)
    A[2] = -torch.eye(4)
    assert torch.isfinite(spd_solve(A + 1e-5 * torch.eye(4), torch.ones(3, 4))).all()


@pytest.mark.parametrize('dof', [4, 6])
def test_normalization_round_trip_and_cov(dof):
    p = make_problems(10, 20, dtype=D64, generator=torch.Generator().manual_seed(0), dof=dof)
    offset, x3d_n, pose_n = pnp_normalize(p['x3d'], p['pose_gt'])
    assert torch.allclose(x3d_n.mean(1), torch.zeros(10, 3, dtype=D64), atol=1e-12)
    assert torch.allclose(pnp_denormalize(offset, pose_n), p['pose_gt'], atol=1e-12)
    # same projections in both frames
    cost = lambda x, q: pnp_cost(x, p['x2d'], p['w2d'], q, p['camera'], torch.ones(10, dtype=D64))
    assert torch.allclose(cost(x3d_n, pose_n), cost(p['x3d'], p['pose_gt']), rtol=1e-10)
    # covariance mapping = linearisation of the denormalisation in local coordinates
    T = 4 if dof == 4 else 6
    M = torch.zeros(10, T, T, dtype=D64)
    h = 1e-6
    for k in range(T):
        e = torch.zeros(10, T, dtype=D64)
        e[:, k] = h
        dp = pnp_denormalize(offset, retract(pose_n, e)) - pnp_denormalize(offset, retract(pose_n, -e))
        M[:, :3, k] = dp[:, :3] / (2 * h)
        M[:, 3:, k] = torch.eye(T, dtype=D64)[3:, k]
    cov_n = torch.diag_embed(torch.rand(10, T, dtype=D64)) + 0.1
    assert torch.allclose(pnp_denormalize_cov(offset, pose_n, cov_n), M @ cov_n @ M.transpose(-1, -2), atol=1e-8)


@pytest.mark.parametrize('dof', [4, 6])
@pytest.mark.parametrize('fast_mode', [False, True])
def test_noise_free_recovery_from_nearby_init(dof, fast_mode):
    p = make_problems(64, 24, noise_px=0., dtype=D64, generator=torch.Generator().manual_seed(2), dof=dof)
    # no clamped observations (fast mode does not clip the Jacobian, as in the reference)
    cam = CameraParams.from_image_shape(p['cam_mats'], p['img_hw'], allowed_border=1e4)
    x2d = project(p['x3d'], p['pose_gt'], cam)[0]
    T = 4 if dof == 4 else 6
    g = torch.Generator().manual_seed(3)
    init = retract(p['pose_gt'], 0.05 * torch.randn(64, T, dtype=D64, generator=g))
    sol = solve_pnp(p['x3d'], x2d, p['w2d'], cam, pose_init=init, num_iter=20, dof=dof, fast_mode=fast_mode)
    te, re = _pose_err(sol.pose, p['pose_gt'])
    assert te.max() < 1e-6 and re.max() < 1e-6, (te.max(), re.max())
    assert sol.cost.max() < 1e-12


# the compiled solver kernels (torch.compile, tens of seconds of compilation per process) run in the slow suite
BACKENDS = ['eager', pytest.param('compile', marks=pytest.mark.slow)]


@pytest.mark.parametrize('backend', BACKENDS)
def test_rslm_finds_true_pose_in_99_percent(backend):
    """1,000 random well-posed noise-free problems, random init (RSLM + LM), one batched call."""
    p = make_problems(1000, 32, noise_px=0., dtype=D64, generator=torch.Generator().manual_seed(4))
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], num_iter=10,
                    generator=torch.Generator().manual_seed(5), backend=backend)
    te, re = _pose_err(sol.pose, p['pose_gt'])
    ok = (te < 1e-4 * p['pose_gt'][:, 2]) & (re < 1e-4)
    assert ok.float().mean() >= 0.99, ok.float().mean()


@pytest.mark.parametrize('backend', BACKENDS)
def test_gn_inference_accuracy_at_noise_floor(backend):
    """Benchmark-like problems (2 px noise): GN inference agrees with LM started from the true pose."""
    p = make_problems(200, 128, dtype=torch.float32, generator=torch.Generator().manual_seed(6))
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], num_iter=5, fast_mode=True,
                    generator=torch.Generator().manual_seed(7), backend=backend)
    ref = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], pose_init=p['pose_gt'], num_iter=20,
                    backend='eager')
    te, re = _pose_err(sol.pose, ref.pose)
    agree = (te < 0.01 * ref.pose[:, 2].abs() + 0.01) & (re < 0.01)
    assert agree.float().mean() > 0.9
    assert (sol.cost <= ref.cost * (1 + 1e-3) + 1e-6).float().mean() > 0.9


def test_force_init_solve_picks_lower_cost():
    p = make_problems(40, 32, dtype=D64, generator=torch.Generator().manual_seed(8))
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    init = p['pose_gt'].clone()
    init[::2, 3] += math.pi  # every other init is bad
    init[1::4, 2] *= 3
    kw = dict(num_points=16, num_proposals=8, num_iter=3, dof=4, fast_mode=False)
    pose_r, cost_r = rslm_init(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta,
                               generator=torch.Generator().manual_seed(9), **kw)
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=init, force_init_solve=True,
                    normalize=False, num_iter=0, init_num_proposals=8, generator=torch.Generator().manual_seed(9))
    cost_i = pnp_cost(p['x3d'], p['x2d'], p['w2d'], init, p['camera'], delta)
    take_init = cost_i < cost_r
    assert take_init.any() and (~take_init).any()
    assert torch.allclose(sol.pose, torch.where(take_init[:, None], init, pose_r))
    assert torch.allclose(sol.cost, torch.minimum(cost_i, cost_r))


@pytest.mark.parametrize('normalize,num_iter', [(False, 10), (True, 10), (True, 0)])
def test_free_solution_equals_an_independent_solve(normalize, num_iter):
    """``with_free_solution``: the gt-initialised solve and the free one (RSLM start alone) run as one batch of 2N
    problems and equal the two separate calls that draw the same RSLM subsets."""
    p = make_problems(24, 32, dtype=D64, generator=torch.Generator().manual_seed(8))
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    init = p['pose_gt'].clone()
    init[::3, 3] += 2.0  # some gt inits lose against RSLM, others win: both branches differ
    kw = dict(num_iter=num_iter, init_num_proposals=16, normalize=normalize)
    if num_iter == 0:  # a weak RSLM, so that the gt init wins for some objects and the two starts differ
        kw.update(init_num_proposals=2, init_num_iter=1)
    both = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=init, force_init_solve=True,
                     with_free_solution=True, with_cov=True, generator=torch.Generator().manual_seed(3), **kw)
    main = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=init, force_init_solve=True,
                     with_cov=True, generator=torch.Generator().manual_seed(3), **kw)
    free = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, generator=torch.Generator().manual_seed(3),
                     **kw)
    assert main.pose_free is None
    torch.testing.assert_close(both.pose, main.pose, rtol=0, atol=1e-9)
    torch.testing.assert_close(both.cost, main.cost, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both.cov, main.cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(both.pose_free, free.pose, rtol=0, atol=1e-9)
    if num_iter == 0:  # the starts differ where the gt init beat RSLM (after 10 iterations both converge)
        assert (both.pose - both.pose_free).abs().amax(-1).gt(1e-3).sum() >= 3
    with pytest.raises(ValueError, match='with_free_solution'):
        solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, with_free_solution=True)


@pytest.mark.parametrize('fast_mode', [False, True])
def test_cost_and_covariance_at_returned_pose(fast_mode):
    p = make_problems(30, 40, dtype=D64, generator=torch.Generator().manual_seed(10))
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, with_cov=True, normalize=False, num_iter=3,
                    fast_mode=fast_mode, generator=torch.Generator().manual_seed(0))
    _, jac, cost = evaluate_pnp(p['x3d'], p['x2d'], p['w2d'], sol.pose, p['camera'], delta, out_jacobian=True,
                                out_cost=True, clip_jac=not fast_mode)
    assert torch.allclose(sol.cost, cost, rtol=1e-10)  # not one step stale
    ref = torch.linalg.inv(jac.transpose(-1, -2) @ jac + 1e-5 * torch.eye(4, dtype=D64))
    assert torch.allclose(sol.cov, ref, rtol=1e-6, atol=1e-12)
    # with normalisation the covariance is mapped back to the caller's frame (tiny eps: then frame-independent)
    kw = dict(with_cov=True, num_iter=0, fast_mode=fast_mode, eps=1e-12)
    raw = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=sol.pose, normalize=False, **kw)
    soln = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=sol.pose, **kw)
    rel = (soln.cov - raw.cov).flatten(1).norm(dim=-1) / raw.cov.flatten(1).norm(dim=-1)
    assert rel.max() < 1e-6


def test_lm_monotone_and_trust_region_radius_fix():
    """Accepted LM steps never increase the cost; many failed steps keep the radius >= eps (finite steps)."""
    p = make_problems(50, 20, dtype=D64, generator=torch.Generator().manual_seed(11))
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    init = p['pose_gt'] + torch.tensor([1., 0.5, 5., 1.], dtype=D64)
    c0 = pnp_cost(p['x3d'], p['x2d'], p['w2d'], init, p['camera'], delta)
    costs = [lm_solve(p['x3d'], p['x2d'], p['w2d'], init, p['camera'], delta, num_iter=k)[1] for k in (1, 3, 40)]
    assert (costs[0] <= c0).all() and (costs[1] <= costs[0]).all() and (costs[2] <= costs[1]).all()
    pose, _, _ = lm_solve(p['x3d'], p['x2d'], p['w2d'], init, p['camera'], delta, num_iter=200)
    assert torch.isfinite(pose).all()


def test_sampler_distinct_and_weighted():
    g = torch.Generator().manual_seed(12)
    probs = torch.softmax(torch.randn(3, 64, generator=g), -1)
    probs[1] = 0
    probs[1, :5] = 1  # only 5 points with weight: remaining slots invalid, never crash
    probs[2] = 1
    idx, valid = sample_subsets(probs, 4000, 8, g)
    assert idx.shape == (4000, 3, 8) and (idx >= 0).all() and (idx < 64).all()
    s = torch.where(valid, idx, -1 - torch.arange(8))  # invalid slots made unique
    assert (s.sort(-1)[0].diff(dim=-1) != 0).all()  # distinct
    assert valid[:, 0].all() and valid[:, 2].all() and (valid[:, 1].sum(-1) <= 5).all()
    assert valid[:, 1].sum(-1).float().mean() > 4.5  # 16 draws over 5 equal points: mostly all 5 found
    # inclusion frequencies match torch.multinomial without replacement (successive sampling)
    ref = torch.multinomial(probs[0].expand(4000, 64), 8, generator=g)
    f1 = torch.bincount(idx[:, 0].flatten(), minlength=64) / 4000.
    f2 = torch.bincount(ref.flatten(), minlength=64) / 4000.
    assert (f1 - f2).abs().max() < 0.05


@pytest.mark.parametrize('power', [1.0, 30.0])  # spread weights (guide table) and concentrated ones (searchsorted)
def test_sampler_chunks_equal_one_pass(monkeypatch, power):
    """The CPU sampler processes objects in chunks: the subsets equal one pass over all objects drawn from the same
    generator state (row-wise steps), for chunks that split the batch unevenly, and the first-distinct rule holds
    against a per-subset Python reference."""
    from epropnp_det.ops.pnp import solver
    g = torch.Generator().manual_seed(21)
    probs = torch.rand(11, 40, generator=g) ** power
    monkeypatch.setattr(solver, '_SUBSET_CHUNK_DRAWS', 1 << 30)
    idx1, valid1 = sample_subsets(probs, 6, 5, torch.Generator().manual_seed(3))
    monkeypatch.setattr(solver, '_SUBSET_CHUNK_DRAWS', 6 * 10 * 4)  # 4 objects per chunk: 4 + 4 + 3
    idx2, valid2 = sample_subsets(probs, 6, 5, torch.Generator().manual_seed(3))
    assert torch.equal(idx1, idx2) and torch.equal(valid1, valid2)
    # reference: the same uniforms, inverse CDF by Python bisection, first 5 distinct in draw order
    import bisect
    u = torch.rand(11, 6 * 10, generator=torch.Generator().manual_seed(3), dtype=probs.dtype)
    cdf = torch.cumsum(probs, -1)
    cdf = (cdf / cdf[:, -1:]).tolist()
    for i in range(11):
        for p_ in range(6):
            seen = []
            for x in u[i, p_ * 10:(p_ + 1) * 10].tolist():
                d = min(bisect.bisect_right(cdf[i], x), 39)
                if d not in seen and len(seen) < 5:
                    seen.append(d)
            assert idx2[p_, i, :len(seen)].tolist() == seen and valid2[p_, i].sum() == len(seen)


def test_degenerate_inputs_and_errors():
    p = make_problems(6, 20, generator=torch.Generator().manual_seed(13))
    w2d = p['w2d'].clone()
    w2d[0] = 0  # all weights zero (docs/method.md §13.11: crashed the reference)
    x3d = p['x3d'].clone()
    x3d[1] = 0.3  # coincident points
    sol = solve_pnp(x3d, p['x2d'], w2d, p['camera'], with_cov=True, fast_mode=True, num_iter=5)
    assert torch.isfinite(sol.pose).all() and torch.isfinite(sol.cost).all() and torch.isfinite(sol.cov).all()
    empty = solve_pnp(p['x3d'][:0], p['x2d'][:0], p['w2d'][:0], p['camera'].index(slice(0, 0)), with_cov=True)
    assert empty.pose.shape == (0, 4) and empty.cov.shape == (0, 4, 4)
    bad = p['x2d'].clone()
    bad[2, 3, 0] = float('nan')
    with pytest.raises(ValueError, match='x2d'):
        solve_pnp(p['x3d'], bad, p['w2d'], p['camera'])
    with pytest.raises(ValueError, match='w2d'):
        solve_pnp(p['x3d'], p['x2d'], p['w2d'][:, :3], p['camera'])


def test_deterministic_with_generator_and_stateless_module():
    p = make_problems(20, 32, generator=torch.Generator().manual_seed(14))
    solver = PnPSolver(num_iter=5)
    a = solver(p['x3d'], p['x2d'], p['w2d'], p['camera'], generator=torch.Generator().manual_seed(1))
    b = solver(p['x3d'], p['x2d'], p['w2d'], p['camera'], generator=torch.Generator().manual_seed(1), fast_mode=True)
    c = solver(p['x3d'], p['x2d'], p['w2d'], p['camera'], generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.pose, c.pose) and solver.kwargs['num_iter'] == 5 and not b.pose.requires_grad
    assert len(list(solver.parameters())) == 0 and len(list(solver.buffers())) == 0


def _degenerate_batch(N, n, seed, dtype=torch.float32):
    """Random + degenerate problems: zero weights, one dominant point, coincident points, points behind the
    camera, depths 0.1 m-1 km, focal lengths 1-1e5."""
    g = torch.Generator().manual_seed(seed)
    p = make_problems(N, n, dtype=D64, generator=g)
    x3d, x2d, w2d, pose = p['x3d'], p['x2d'], p['w2d'], p['pose_gt']
    kind = torch.arange(N) % 7
    scale = 10 ** (torch.rand(N, generator=g, dtype=D64) * 4 - 1)  # 0.1 .. 1000 m depth scale
    focal = 10 ** (torch.rand(N, generator=g, dtype=D64) * 5)  # 1 .. 1e5 px
    K = p['cam_mats'].clone()
    K[:, 0, 0] = K[:, 1, 1] = torch.where(kind == 6, focal, K[:, 0, 0])
    pose = pose.clone()
    pose[:, 2] = torch.where(kind == 5, scale, pose[:, 2])
    w2d = torch.where((kind == 0)[:, None, None], torch.zeros_like(w2d), w2d)
    dom = torch.zeros_like(w2d)
    dom[:, 0] = 1e3
    w2d = torch.where((kind == 1)[:, None, None], w2d * 1e-6 + dom, w2d)
    x3d = torch.where((kind == 2)[:, None, None], x3d[:, :1].expand_as(x3d), x3d)
    behind = x3d.clone()
    behind[..., 2] -= 40 + 20 * torch.rand(N, 1, generator=g, dtype=D64)
    x3d = torch.where((kind == 3)[:, None, None], behind, x3d)
    x2d = torch.where((kind == 4)[:, None, None], x2d[:, :1].expand_as(x2d), x2d)  # coincident 2D points
    cam = CameraParams.from_image_shape(K, p['img_hw'])
    proj = project(x3d, pose, cam)[0] + torch.randn(N, n, 2, generator=g, dtype=D64) * 2
    x2d = torch.where(((kind == 5) | (kind == 6) | (kind == 3))[:, None, None], proj, x2d)
    cam = CameraParams.from_image_shape(K.to(dtype), p['img_hw'].to(dtype))
    return x3d.to(dtype), x2d.to(dtype), w2d.to(dtype), pose.to(dtype), cam


def _check_robust(N, n, seed, backend='auto'):
    x3d, x2d, w2d, pose_gt, cam = _degenerate_batch(N, n, seed)
    x3d.requires_grad_()
    x2d.requires_grad_()
    w2d.requires_grad_()
    delta = adaptive_huber_delta(x2d.detach(), w2d)
    for fast in (True, False):
        sol = solve_pnp(x3d, x2d, w2d, cam, delta, with_cov=True, fast_mode=fast, num_iter=5 if fast else 10,
                        generator=torch.Generator().manual_seed(seed), backend=backend)
        for t in (sol.pose, sol.cost, sol.cov):
            assert torch.isfinite(t).all()
    pose_plus = compute_pose_plus(x3d, x2d, w2d, sol.pose, cam, delta)
    assert torch.isfinite(pose_plus).all()
    loss_pos, loss_orient = derivative_reg_losses(pose_plus, pose_gt)
    (loss_pos + loss_orient).sum().backward()
    for t in (x3d, x2d, w2d):
        assert torch.isfinite(t.grad).all()


def test_robustness_fast_subset():
    _check_robust(350, 32, 0, backend='eager')


@pytest.mark.slow
def test_robustness_10k():
    for seed in range(5):  # 'auto' compiles at this size: the degenerate problems also go through the fused kernels
        _check_robust(2100, 64, 100 + seed)


@pytest.mark.slow
def test_compiled_solver_kernels_match_eager():
    """The torch.compile'd normal equations / cost (dynamic shapes) equal the eager kernels: RSLM subsets
    (P, N, m), full sets (N, n), size-1 dims, clipped and unclipped Jacobians, float32 and float64."""
    from epropnp_det.ops.pnp import _compile
    from epropnp_det.ops.pnp.kernels import cost_prepared, normal_equations_planes, pack_matrix, prepare
    g = torch.Generator().manual_seed(21)
    for N, n, dtype in [(144, 256, torch.float32), (7, 1, torch.float32), (1, 300, torch.float32), (30, 40, D64)]:
        p = make_problems(N, n, dtype=dtype, generator=g)
        delta = adaptive_huber_delta(p['x2d'], p['w2d'])
        prep = prepare(p['x3d'], p['x2d'], p['w2d'])._replace(xhT=None)
        idx, valid = sample_subsets(p['w2d'].mean(-1), 5, min(16, n), g)
        poses = p['pose_gt'] + torch.randn(5, N, 4, generator=g, dtype=dtype) * torch.tensor([.3, .1, 1., .2],
                                                                                               dtype=dtype)
        cases = [(prep, poses[0]), (prep, poses), (prep.gather(idx).mask_points(valid), poses)]
        for pr, pose in cases:
            for clip in (True, False):
                ref = normal_equations_planes(pr, pose, p['camera'], delta, clip_jac=clip)
                out = _compile.call('normal_equations', normal_equations_planes, True, pr, pose, p['camera'], delta,
                                    clip)
                for a, b in [(pack_matrix(ref[0]), pack_matrix(out[0])), (torch.stack(ref[1]), torch.stack(out[1])),
                             (ref[2], out[2])]:
                    tol = 1e-4 if dtype == torch.float32 else 1e-10
                    assert torch.isfinite(b).all()
                    assert ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item() < tol
            c_ref = cost_prepared(pr, pose, p['camera'], delta)
            c_out = _compile.call('cost', cost_prepared, True, pr, pose, p['camera'], delta)
            assert ((c_ref - c_out).abs().max() / c_ref.abs().max().clamp(min=1e-12)).item() < 1e-4


@pytest.mark.slow
def test_compiled_lm_iterations_match_eager():
    """The fused LM/GN iterations (``backend='compile'``: normal equations, damped LDLᵀ solve, trust-region or
    safeguard update in one graph) follow the eager iterations: same poses and costs in float64 from perturbed
    starts (trust region and fast mode), and through RSLM (same generator seed)."""
    g = torch.Generator().manual_seed(5)
    p = make_problems(60, 48, dtype=D64, generator=g)
    start = p['pose_gt'] + torch.randn(60, 4, generator=g, dtype=D64) * torch.tensor([.5, .2, 2., .4], dtype=D64)
    for kw in (dict(pose_init=start), dict(pose_init=start, fast_mode=True, num_iter=5),
               dict(generator='seed'), dict(generator='seed', fast_mode=True, num_iter=5)):
        out = {}
        for backend in ('eager', 'compile'):
            kw_b = dict(kw, generator=torch.Generator().manual_seed(0)) if 'generator' in kw else kw
            out[backend] = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend=backend, **kw_b)
        a, b = out['eager'], out['compile']
        assert torch.isfinite(b.pose).all()
        # m / rad (z up to 60 m; 5 GN steps from RSLM amplify rounding differences)
        assert (a.pose - b.pose).abs().max().item() < 1e-5, kw
        assert ((a.cost - b.cost).abs() / a.cost.abs().clamp(min=1e-9)).max().item() < 1e-5, kw


def test_compile_fallback_and_switches(monkeypatch):
    """A failing compilation warns once and falls back to eager (same result); errors of the caller's inputs
    propagate without disabling compilation; EPROPNP_DISABLE_COMPILE=1 / backend='eager' never compile."""
    from epropnp_det.ops.pnp import _compile
    monkeypatch.setattr(_compile, '_COMPILED', {})
    monkeypatch.setattr(_compile, '_STATE', {'failed': False})

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError('no C++ compiler')
        return run
    monkeypatch.setattr(torch, 'compile', broken_compile)

    def bad_input(x):
        raise ValueError('caller error')
    with pytest.raises(ValueError, match='caller error'):
        _compile.call('bad_input', bad_input, True, 1)
    assert not _compile._STATE['failed']
    p = make_problems(5, 12, dtype=D64, generator=torch.Generator().manual_seed(3))
    kw = dict(num_iter=3, generator=None)
    ref = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='eager',
                    **dict(kw, generator=torch.Generator().manual_seed(0)))
    with pytest.warns(UserWarning, match='failed'):
        out = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='compile',
                        **dict(kw, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(out.pose, ref.pose) and _compile._STATE['failed']
    assert not _compile.use_compile('compile', 1 << 30)  # stays off for the rest of the process
    _compile._STATE['failed'] = False
    assert _compile.use_compile('auto', _compile.AUTO_COMPILE_MIN_POINTS)
    assert not _compile.use_compile('auto', _compile.AUTO_COMPILE_MIN_POINTS - 1)
    assert not _compile.use_compile('eager', 1 << 30)
    monkeypatch.setenv('EPROPNP_DISABLE_COMPILE', '1')
    assert not _compile.use_compile('compile', 1 << 30)
    with pytest.raises(ValueError):
        _compile.use_compile('fast', 1)
