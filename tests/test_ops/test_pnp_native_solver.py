"""Native CPU solver kernels (``csrc/solver.cpp`` via :mod:`epropnp_det.ops.pnp._native`) against the torch
implementation they replace: the same cost and normal equations at the same pose (float64, to rounding), the same
LM / Gauss-Newton steps, convergence from the true pose, the RSLM last step, and the fallbacks."""
import warnings

import pytest
import torch

from epropnp_det.ops.pnp import CameraParams, _native, solve_pnp
from epropnp_det.ops.pnp import solver as S
from epropnp_det.ops.pnp.cost import adaptive_huber_delta
from epropnp_det.ops.pnp.kernels import normal_equations_prepared, prepare
from epropnp_det.ops.pnp.testing import make_problems

pytestmark = pytest.mark.skipif(_native.lib() is None, reason='no C++ compiler for the native kernels')


def _problem(dtype=torch.float64, N=48, n=64, seed=0, hard=True):
    """Detector-like problems; with ``hard`` also points that leave the image bounds, points behind the camera
    (h_z < z_min) and zero weights."""
    prob = make_problems(N=N, n=n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    x3d, x2d = prob['x3d'].clone(), prob['x2d'].clone()
    w2d = torch.rand(N, n, 2, generator=g, dtype=torch.float64) + 0.05
    K = prob['cam_mats']
    lb, ub = torch.full((N, 2), -50.), torch.tensor([[1650., 950.]]).expand(N, 2).clone()
    if hard:
        x2d[:, :4, 0] = ub[:, :1] + 300   # observed far beyond the right border: clamped projections nearby
        x3d[:, 4:6, 2] = -prob['pose_gt'][:, 2:3] - 5   # behind the camera at poses near the truth
        w2d[:, 6:9] = 0
        lb[::3] = torch.tensor([600., 300.])   # tight bounds: many projections clamped
        ub[::3] = torch.tensor([900., 500.])
    camera = CameraParams(K.to(dtype), lb.to(dtype), ub.to(dtype), 0.1)
    noise = torch.randn(N, 4, generator=g, dtype=torch.float64) * torch.tensor([0.5, 0.3, 2.0, 0.4],
                                                                               dtype=torch.float64)
    pose0 = prob['pose_gt'] + noise
    x3d, x2d, w2d = x3d.to(dtype), x2d.to(dtype), w2d.to(dtype)
    return x3d, x2d, w2d, camera, adaptive_huber_delta(x2d, w2d), pose0.to(dtype), prob['pose_gt'].to(dtype)


@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
@pytest.mark.parametrize('fast_mode', [False, True])
def test_cost_and_normal_equations_at_returned_pose(robust, fast_mode):
    """The native loop's cost and J̃ᵀJ̃ belong to its returned pose: torch evaluates the same values there."""
    x3d, x2d, w2d, camera, delta, pose0, _ = _problem()
    prep = prepare(x3d, x2d, w2d)
    pose, cost, A = S._lm_native(prep, pose0, camera, delta, 6, fast_mode, robust=robust)
    A_ref, _, cost_ref = normal_equations_prepared(prep, pose, camera, delta, clip_jac=not fast_mode, robust=robust)
    torch.testing.assert_close(cost, cost_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A, A_ref, rtol=1e-10, atol=1e-9 * float(A_ref.abs().max()))


@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
@pytest.mark.parametrize('fast_mode', [False, True])
def test_lm_steps_equal_torch(robust, fast_mode):
    """Step by step (1, 2 and 3 iterations from the same start), the native trust-region LM / safeguarded GN
    takes the steps of solver._lm_loop: same accept / reject decisions and radius or damping updates."""
    x3d, x2d, w2d, camera, delta, pose0, _ = _problem()
    prep = prepare(x3d, x2d, w2d)
    ok = _well_conditioned(prep, pose0, camera, delta, fast_mode)
    for it in (1, 2, 3):
        ref = S._lm_loop(prep, pose0, camera, delta, it, fast_mode, robust=robust)
        out = S._lm_native(prep, pose0, camera, delta, it, fast_mode, robust=robust)
        torch.testing.assert_close(out[0][ok], ref[0][ok], rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(out[1], ref[1], rtol=1e-9, atol=1e-9)


def _well_conditioned(prep, pose, camera, delta, fast_mode):
    """Objects whose undamped GN system is well conditioned (cond < 1e8): on (nearly) singular ones — all points
    clamped at tight bounds — the pivot floor decides the step and summation order changes it beyond 1e-8."""
    A, _, _ = normal_equations_prepared(prep, pose, camera, delta, clip_jac=not fast_mode)
    ok = torch.linalg.cond(A) < 1e8
    assert ok.float().mean() > 0.5
    return ok


def test_gn_last_step_without_final_eval():
    """RSLM's last GN step (no evaluation at the new pose) as solver._gn_last_step; cost and A not returned."""
    x3d, x2d, w2d, camera, delta, pose0, _ = _problem()
    prep = prepare(x3d, x2d, w2d)
    ok = _well_conditioned(prep, pose0, camera, delta, True)
    ref = S._lm_loop(prep, pose0, camera, delta, 3, True, final_eval=False)
    out = S._lm_native(prep, pose0, camera, delta, 3, True, final_eval=False)
    assert out[1] is None and out[2] is None and ref[1] is None
    torch.testing.assert_close(out[0][ok], ref[0][ok], rtol=1e-8, atol=1e-8)


def test_converges_from_true_pose_float64():
    """Noise-free points: LM started at the true pose stays there to 1e-6 m / 1e-6 rad (independent of torch)."""
    prob = make_problems(N=32, n=64, noise_px=0., dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x3d, x2d, pose_gt = prob['x3d'], prob['x2d'], prob['pose_gt']
    w2d = torch.ones_like(x2d)
    camera = CameraParams.from_image_shape(prob['cam_mats'], prob['img_hw'])
    pose, cost, _ = S._lm_native(prepare(x3d, x2d, w2d), pose_gt + 0.01, camera, adaptive_huber_delta(x2d, w2d), 10,
                                 False)
    assert (pose - pose_gt).abs().max() < 1e-6
    assert cost.max() < 1e-10


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_many_pose_cost_equals_torch(dtype):
    x3d, x2d, w2d, camera, delta, pose0, _ = _problem(dtype)
    prep = prepare(x3d, x2d, w2d)
    poses = pose0 + torch.randn(5, *pose0.shape, generator=torch.Generator().manual_seed(9), dtype=dtype)
    ref = S._cost_chunked(prep, poses, camera, delta)
    out = S._cost_native(prep, poses, camera, delta)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_threads_do_not_change_results(monkeypatch):
    x3d, x2d, w2d, camera, delta, pose0, _ = _problem(torch.float32, N=300)
    prep = prepare(x3d, x2d, w2d)
    monkeypatch.setattr(_native, 'num_threads', lambda: 1)
    one = S._lm_native(prep, pose0, camera, delta, 10, False)
    monkeypatch.setattr(_native, 'num_threads', lambda: 4)
    four = S._lm_native(prep, pose0, camera, delta, 10, False)
    for a, b in zip(one, four):
        assert torch.equal(a, b)


@pytest.mark.parametrize('fast_mode', [False, True])
def test_solve_pnp_default_matches_eager(fast_mode):
    """Whole solve (RSLM with the same draws, LM / GN, covariance) on the CPU: native (default) vs torch (eager)."""
    x3d, x2d, w2d, camera, delta, _, pose_gt = _problem(hard=False)
    kw = dict(fast_mode=fast_mode, with_cov=True, num_iter=10)
    ref = solve_pnp(x3d, x2d, w2d, camera, backend='eager', generator=torch.Generator().manual_seed(4), **kw)
    out = solve_pnp(x3d, x2d, w2d, camera, backend='default', generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(out.pose, ref.pose, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.cost, ref.cost, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.cov, ref.cov, rtol=1e-5, atol=1e-8)
    assert (out.pose[:, :3] - pose_gt[:, :3]).norm(dim=-1).median() < 0.5


def test_disable_and_missing_compiler_fall_back(monkeypatch):
    x3d = torch.zeros(2, 3, 3)
    assert S._use_native(x3d, 4, 'default') and S._use_native(x3d, 4, 'auto')
    assert not S._use_native(x3d, 4, 'eager') and not S._use_native(x3d, 6, 'default')
    assert not S._use_native(x3d.half(), 4, 'default')
    monkeypatch.setenv('EPROPNP_DISABLE_NATIVE', '1')
    assert not S._use_native(x3d, 4, 'default')
    monkeypatch.delenv('EPROPNP_DISABLE_NATIVE')
    # no compiler and nothing cached: one warning, then the torch implementation
    monkeypatch.setattr(_native, '_STATE', {'lib': None, 'failed': False})
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    monkeypatch.setattr(_native, '_cache_dir', lambda: '/nonexistent_cache')
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        assert not S._use_native(x3d, 4, 'default')
    assert any('native PnP kernels unavailable' in str(r.message) for r in rec)
    x3d, x2d, w2d, camera, delta, _, _ = _problem(hard=False, N=8)
    sol = solve_pnp(x3d, x2d, w2d, camera, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(sol.pose).all()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_native_subsets_equal_torch_sampler(dtype):
    """Same generator state -> the same subsets as sample_subsets + gather + mask_points, bit for bit, including
    objects with concentrated weights (fewer than m distinct points: zero-weight filler slots) and uniform ones."""
    N, n, P, m = 40, 50, 16, 8
    g = torch.Generator().manual_seed(0)
    x3d, x2d = torch.randn(N, n, 3, generator=g, dtype=dtype), torch.randn(N, n, 2, generator=g, dtype=dtype)
    w2d = torch.rand(N, n, 2, generator=g, dtype=dtype)
    w2d[:5, 3:] = 0    # 3 points carry all the weight: subsets of 3
    w2d[5:8, :] = 1    # uniform
    w2d[8:10, :, 0] = 0
    probs = w2d.mean(dim=-1)
    prep = prepare(x3d, x2d, w2d)
    out = S._subsets_native(prep, probs, P, m, torch.Generator().manual_seed(7))
    idx, valid = S.sample_subsets(probs, P, m, torch.Generator().manual_seed(7))
    assert (~valid[:, :5]).any() and valid[:, 10:].all()
    ref = prep.gather(idx).mask_points(valid)
    for a, b in zip(out[:3], ref[:3]):
        assert torch.equal(a, b.reshape(b.shape[0], P * N, m))


def test_rslm_native_equals_torch_rslm():
    """Whole RSLM (subsets, subset GN, full-set scoring, best proposal) with the same draws: native vs torch."""
    x3d, x2d, w2d, camera, delta, _, _ = _problem(hard=False)
    ref = S.rslm_init(x3d, x2d, w2d, camera, delta, fast_mode=True, generator=torch.Generator().manual_seed(2),
                      backend='eager')
    out = S.rslm_init(x3d, x2d, w2d, camera, delta, fast_mode=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out[1], ref[1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-6, atol=1e-6)
