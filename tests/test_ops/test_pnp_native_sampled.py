"""The native CPU kernels of the Monte-Carlo sampled cost (``csrc/sampled_cost.cpp``) against the eager torch
reference (``backend='eager'``): values and the gradients w.r.t. x3d, x2d, w2d and δ, float64 (tight) and float32,
Huber and Cauchy, 4-DoF and 6-DoF poses, with points clamped at the image border, points behind the camera,
zero weights, zero and tiny (flushed) upstream gradients, n = 1 and S = 1; the dispatch (``'default'`` and
``'auto'`` run native on the CPU, ``EPROPNP_DISABLE_NATIVE=1`` falls back to the torch code) and results that do
not depend on the number of threads.
"""
import pytest
import torch

from epropnp_det.ops.pnp import _native, sampled_cost
from epropnp_det.ops.pnp.sampled_cost import _native_affine, _pose_affine, _sampled_cost, sampled_pnp_cost
from epropnp_det.ops.pnp.testing import make_problems

D64, F32 = torch.float64, torch.float32
# relative to the largest entry of each tensor. float64: native vs eager. float32: native's error against the
# float64 reference on the same inputs at most 2x eager float32's + F32_FLOOR (the gradients cancel: e = u - x2d of
# a few pixels from u ~ 10^3 px, so both float32 implementations carry ~1e-5 of it), and native vs eager float32
# within F32_TOL
TOL = {D64: 1e-10, F32: 1e-4}
F32_FLOOR = 2e-5

pytestmark = pytest.mark.skipif(_native.lib() is None, reason='no C++ compiler: native kernels unavailable')


def _problem(N=5, n=24, S=12, dof=4, dtype=D64, seed=0, hard=True):
    """Problem in float64 (cast at the end) with perturbed poses (S, N, D), δ per object (both Huber zones) and an
    upstream gradient (S, N) with exact zeros and tiny entries (which the backward flushes)."""
    gen = torch.Generator().manual_seed(seed)
    p = make_problems(N, n, noise_px=3., generator=gen, dtype=D64, dof=dof)
    x3d, x2d, w2d = p['x3d'].clone(), p['x2d'].clone(), p['w2d'].clone()
    if hard and n >= 6:
        # object 0: points far to the side and up/down -> projected beyond the clamp bounds (both axes)
        x3d[0, :2, 0] += torch.tensor([300., -300.], dtype=D64)
        x3d[0, 2:4, 1] += torch.tensor([250., -250.], dtype=D64)
        # object 1: points 200 m along each axis -> some behind the camera (h_z < z_min) for any orientation
        x3d[1, :6] = 200. * torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                                         dtype=D64)
        # object 2: zero weights on some points (one axis or both); object 3 (if any): all weights zero
        w2d[2, :3] = 0.
        w2d[2, 3:5, 0] = 0.
        if N > 3:
            w2d[3] = 0.
    D = p['pose_gt'].shape[-1]
    noise = torch.randn(S, N, D, generator=gen, dtype=D64) * torch.tensor([0.5, 0.2, 1.0] + [0.3] * (D - 3),
                                                                           dtype=D64)
    poses = p['pose_gt'].expand(S, N, D) + noise
    if dof == 6:
        poses[..., 3:] = torch.nn.functional.normalize(poses[..., 3:], dim=-1)
    delta = torch.logspace(-2, 0.5, N, dtype=D64)  # 0.01 .. 3.2 (weighted px): both zones of the Huber cost
    grad = torch.rand(S, N, generator=gen, dtype=D64)
    if S > 2:
        grad[::3] = 0.  # exactly zero: skipped samples
        grad[1, :] = 1e-20  # below _flush_tiny's limit: flushed to zero
    cast = dict(dtype=dtype)
    return dict(x3d=x3d.to(**cast), x2d=x2d.to(**cast), w2d=w2d.to(**cast), poses=poses.to(**cast),
                camera=p['camera'].to(**cast), delta=delta.to(**cast), grad=grad.to(**cast))


def _run(pb, backend, robust, need=(True, True, True, True), precomputed=False):
    leaves = [pb[k].clone().requires_grad_(r) for k, r in zip(('x3d', 'x2d', 'w2d', 'delta'), need)]
    if precomputed:  # AMIS: values without grad, then one node attaching the backward only
        with torch.no_grad():
            costs = sampled_pnp_cost(*[t.detach() for t in leaves[:3]], pb['poses'], pb['camera'],
                                     leaves[3].detach(), backend=backend, robust=robust)
        cost = _sampled_cost(*leaves[:3], pb['poses'], pb['camera'], leaves[3], None, backend, precomputed=costs,
                             robust=robust)
    else:
        cost = sampled_pnp_cost(*leaves[:3], pb['poses'], pb['camera'], leaves[3], backend=backend, robust=robust)
    if any(need):
        (cost * pb['grad']).sum().backward()
    return [cost.detach()] + [t.grad for t in leaves]


def _assert_close(out, ref, tol, names=('cost', 'x3d', 'x2d', 'w2d', 'delta')):
    for name, a, b in zip(names, out, ref):
        if b is None:
            assert a is None, name
            continue
        assert a is not None and a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.isfinite(b).all(), name
        scale = b.abs().max().clamp(min=1e-30)
        err = (a - b).abs().max()
        assert err <= tol * scale, f'{name}: max error {err:.3g} vs scale {scale:.3g} (rel {err / scale:.3g})'


def _check(pb, robust, **kw):
    """Native ('default' on the CPU) against the eager reference; float32 also against eager float64."""
    ref, out = _run(pb, 'eager', robust, **kw), _run(pb, 'default', robust, **kw)
    dtype = pb['x3d'].dtype
    _assert_close(out, ref, TOL[dtype])
    if dtype == F32:
        pb64 = {k: v.to(D64) for k, v in pb.items()}
        ref64 = _run(pb64, 'eager', robust, **{k: v for k, v in kw.items() if k != 'precomputed'})
        for name, a, b, r in zip(('cost', 'x3d', 'x2d', 'w2d', 'delta'), out, ref, ref64):
            if r is None:
                continue
            scale = r.abs().max()
            err_native, err_eager = (a.double() - r).abs().max(), (b.double() - r).abs().max()
            assert err_native <= 2 * err_eager + F32_FLOOR * scale, \
                f'{name}: float32 native error {err_native / scale:.3g} vs eager {err_eager / scale:.3g} (relative)'
    return out


@pytest.mark.parametrize('dtype', [D64, F32])
@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
@pytest.mark.parametrize('dof', [4, 6])
def test_native_equals_eager(dtype, robust, dof):
    pb = _problem(dof=dof, dtype=dtype, seed=dof)
    _check(pb, robust)
    _check(pb, robust, precomputed=True)


def test_the_problem_exercises_every_branch():
    """The hard cases are really there: clamped projections, depths below z_min, zero weights, flushed grads."""
    pb = _problem(S=12, dof=4)
    A = _pose_affine(pb['poses'], pb['camera'].cam_mats)  # (S, N, 3, 4)
    h = A[..., :3] @ pb['x3d'].transpose(1, 2) + A[..., 3:]  # (S, N, 3, n)
    z = h[:, :, 2].clamp(min=pb['camera'].z_min)
    uv = h[:, :, :2] / z[:, :, None]
    lb, ub = pb['camera'].lb[None, :, :, None], pb['camera'].ub[None, :, :, None]
    outside = (uv < lb) | (uv > ub)
    assert outside[:, 0, 0].any() and outside[:, 0, 1].any()  # both axes clamped
    assert (h[:, 1, 2] < pb['camera'].z_min).any()  # behind the camera
    assert ((h[:, 1, 2] >= pb['camera'].z_min) & outside[:, 1].any(dim=1)).any()  # in front but clamped too
    assert (pb['w2d'][2] == 0).any() and (pb['w2d'][3] == 0).all()
    assert (pb['grad'] == 0).any() and ((pb['grad'] > 0) & (pb['grad'] < 1e-15)).any()


@pytest.mark.parametrize('dtype', [D64, F32])
@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
def test_single_point_and_single_sample(dtype, robust):
    for shape in (dict(N=3, n=1, S=7), dict(N=4, n=9, S=1), dict(N=1, n=1, S=1)):
        _check(_problem(**shape, dtype=dtype, seed=11, hard=False), robust)


@pytest.mark.parametrize('need', [(True, False, False, False), (False, True, True, False),
                                  (False, False, False, True), (False, False, False, False)])
def test_partial_gradients(need):
    pb = _problem(dtype=D64, seed=5)
    _check(pb, 'huber', need=need)


def test_threads_do_not_change_the_results(monkeypatch):
    # large enough for parallel_for to start a second thread (N·S·n ≥ 40000)
    pb = _problem(N=8, n=100, S=64, dtype=F32, seed=7)
    outs = []
    for threads in (1, 2):
        monkeypatch.setattr(_native, 'num_threads', lambda t=threads: t)
        outs.append(_run(pb, 'default', 'huber'))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_dispatch(monkeypatch):
    pb = _problem(N=4, n=16, S=8, dtype=F32, seed=3)
    calls = []
    for name in ('_native_forward', '_native_backward'):
        fn = getattr(sampled_cost, name)
        monkeypatch.setattr(sampled_cost, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))

    def no_compile(*a, **k):
        raise AssertionError('the compiled kernels ran on the CPU although the native ones serve the call')
    monkeypatch.setattr(sampled_cost, '_run_planar', no_compile)
    _run(pb, 'eager', 'huber')
    assert calls == []
    _run(pb, 'default', 'huber')
    assert calls == ['_native_forward', '_native_backward']
    # 'auto' over S·N·n ≥ 2^18 (the compile threshold): native first
    calls.clear()
    big = _problem(N=32, n=128, S=64, dtype=F32, seed=4, hard=False)
    _run(big, 'auto', 'huber')
    assert calls == ['_native_forward', '_native_backward']


def test_disable_env_falls_back_to_torch(monkeypatch):
    pb = _problem(N=4, n=16, S=8, dtype=D64, seed=8)
    monkeypatch.setenv('EPROPNP_DISABLE_NATIVE', '1')

    def fail(*a, **k):
        raise AssertionError('native kernel called although EPROPNP_DISABLE_NATIVE=1')
    monkeypatch.setattr(sampled_cost, '_native_forward', fail)
    monkeypatch.setattr(sampled_cost, '_native_backward', fail)
    out, ref = _run(pb, 'default', 'cauchy'), _run(pb, 'eager', 'cauchy')
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


def test_nonfinite_inputs_propagate_like_eager():
    pb = _problem(N=4, n=12, S=6, dtype=D64, seed=9, hard=False)
    pb['x3d'][1, 3, 0] = float('nan')
    pb['x2d'][2, 5, 1] = float('inf')
    pb['delta'][3] = float('nan')
    pb['grad'].fill_(0.5)
    for robust in ('huber', 'cauchy'):
        out, ref = _run(pb, 'default', robust), _run(pb, 'eager', robust)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize('dtype', [D64, F32])
@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
def test_exact_borders_and_depth_clamp(dtype, robust):
    """Projections exactly on the clamp bounds (the gradient passes: lb <= u <= ub inclusive), depths exactly at
    z_min (the depth gradient passes) and below it but inside the bounds (it does not), with an identity camera,
    yaw 0 and binary fractions so that every projection is exact; and an unbounded camera (±inf bounds), where
    points behind the camera are never clamped in u, v."""
    from epropnp_det.ops.pnp.types import CameraParams
    # object frame = camera frame shifted by t_z in {1, 2, 4}; h = (X, Y, Z + t_z)
    x3d = torch.tensor([[[1., -1., 0.], [-2., 2., 0.], [4., 0.5, 0.], [0.0625, -0.0625, -0.875],
                         [0.1, 0.05, -1.5], [0.5, -3., 0.], [-0.25, 0.25, 1.], [0., 0., -0.9375]]], dtype=D64)
    N, n = 1, x3d.shape[1]
    S = 3
    poses = torch.zeros(S, N, 4, dtype=D64)
    poses[:, 0, 2] = torch.tensor([1., 2., 4.], dtype=D64)
    gen = torch.Generator().manual_seed(12)
    x2d = torch.randn(N, n, 2, generator=gen, dtype=D64) * 0.3
    w2d = torch.rand(N, n, 2, generator=gen, dtype=D64) + 0.5
    cam_mats = torch.eye(3, dtype=D64).expand(N, 3, 3).contiguous()
    bounded = CameraParams(cam_mats, torch.full((N, 2), -1., dtype=D64), torch.full((N, 2), 1., dtype=D64), 0.125)
    for camera in (bounded, CameraParams.unbounded(cam_mats, z_min=0.125)):
        pb = dict(x3d=x3d, x2d=x2d, w2d=w2d, poses=poses, camera=camera, delta=torch.full((N,), 0.3, dtype=D64),
                  grad=torch.tensor([[1.], [0.5], [0.25]], dtype=D64))
        _check({k: v.to(dtype) for k, v in pb.items()}, robust)


@pytest.mark.parametrize('dtype', [D64, F32])
@pytest.mark.parametrize('dof', [4, 6])
def test_native_affine_equals_pose_affine(dtype, dof):
    pb = _problem(N=6, n=4, S=9, dof=dof, dtype=dtype, seed=13, hard=False)
    ref = _pose_affine(pb['poses'], pb['camera'].cam_mats)
    out = _native_affine(pb['poses'], pb['camera'].cam_mats, dtype)
    assert out.shape == ref.shape == (9, 6, 3, 4) and out.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=1e-12 if dtype == D64 else 1e-6, atol=1e-9 if dtype == D64 else 1e-3)
    with pytest.raises(ValueError, match='pose must be'):
        _native_affine(pb['poses'][..., :3], pb['camera'].cam_mats, dtype)


@pytest.mark.parametrize('N,n,S', [(0, 5, 3), (3, 0, 4), (3, 5, 0)])
def test_empty_shapes(N, n, S):
    from epropnp_det.ops.pnp.types import CameraParams
    cam = CameraParams.from_image_shape(torch.eye(3, dtype=D64).expand(N, 3, 3).contiguous(),
                                        torch.tensor([900., 1600.], dtype=D64).expand(N, 2).contiguous())
    poses = torch.zeros(S, N, 4, dtype=D64)
    poses[..., 2] = 5.
    pb = dict(x3d=torch.zeros(N, n, 3, dtype=D64), x2d=torch.zeros(N, n, 2, dtype=D64),
              w2d=torch.ones(N, n, 2, dtype=D64), poses=poses, camera=cam, delta=torch.full((N,), 0.1, dtype=D64),
              grad=torch.ones(S, N, dtype=D64))
    out, ref = _run(pb, 'default', 'huber'), _run(pb, 'eager', 'huber')
    for a, b in zip(out, ref):
        assert a.shape == b.shape and torch.equal(a, b)
