"""The stacked-matrix GN step (the GPU path of ``gn_step``) against the plane form (the CPU path): same step and
gradients in float64, comparable float32 accuracy, and the dispatch."""
import pytest
import torch

from epropnp_det.ops.pnp import solver
from epropnp_det.ops.pnp.normalize import pnp_normalize
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.ops.pnp.types import CameraParams


def _inputs(dtype, N=40, n=64, seed=0, offset=0.02):
    p = make_problems(N, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    _, x3d, pose = pnp_normalize(p['x3d'], p['pose_gt'] + offset)
    c = p['camera']
    cam = CameraParams(c.cam_mats.to(dtype), c.lb.to(dtype), c.ub.to(dtype), c.z_min)
    x3d = x3d.detach().to(dtype).requires_grad_()
    w2d = p['w2d'].to(dtype).requires_grad_()
    delta = torch.linspace(1.0, 6.0, N, dtype=dtype).requires_grad_()
    return x3d, p['x2d'].to(dtype), w2d, pose.to(dtype), cam, delta


@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
@pytest.mark.parametrize('offset', [0.02, 0.5])  # near the solution, and far (more residuals in the linear branch)
def test_stacked_equals_planes_in_float64(robust, offset):
    x3d, x2d, w2d, pose, cam, delta = _inputs(torch.float64, offset=offset)
    outs = []
    for fn in (solver.gn_step_stacked, solver.gn_step):  # CPU tensors: gn_step takes the plane form
        step = fn(x3d, x2d, w2d, pose, cam, delta, robust=robust)
        grads = torch.autograd.grad((step * torch.arange(1., 5., dtype=step.dtype)).sum(), (x3d, w2d, delta))
        outs.append((step, *grads))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert outs[0][0].abs().max() > 1e-3  # a real step, not a zero


def test_stacked_float32_accuracy_and_clipping():
    """float32 against the float64 step: both forms within 2e-3 (relative to the step's size), on problems where
    some points are clamped at the image border (the clipping masks matter)."""
    x3d64, x2d64, w2d64, pose64, cam64, delta64 = _inputs(torch.float64, offset=0.3)
    cam64 = CameraParams(cam64.cam_mats, cam64.lb + 300, cam64.ub - 300, cam64.z_min)  # clamp some projections
    ref = solver.gn_step(x3d64, x2d64, w2d64, pose64, cam64, delta64).detach()
    cam32 = CameraParams(cam64.cam_mats.float(), cam64.lb.float(), cam64.ub.float(), cam64.z_min)
    args = (x3d64.detach().float(), x2d64.float(), w2d64.detach().float(), pose64.float(), cam32,
            delta64.detach().float())
    size = ref.abs().amax(-1, keepdim=True).clamp(min=1e-6)
    for fn in (solver.gn_step_stacked, solver.gn_step):
        err = ((fn(*args).double() - ref).abs() / size).max()
        assert err < 2e-3, (fn.__name__, float(err))
    clip = solver.gn_step_stacked(x3d64, x2d64, w2d64, pose64, cam64, delta64)
    noclip = solver.gn_step_stacked(x3d64, x2d64, w2d64, pose64, cam64, delta64, clip_jac=False)
    assert (clip - noclip).abs().max() > 1e-6  # the masks are exercised


def test_dispatch(monkeypatch):
    x3d, x2d, w2d, pose, cam, delta = _inputs(torch.float32)
    called = []
    monkeypatch.setattr(solver, 'gn_step_stacked', lambda *a, **k: called.append(1) or torch.zeros(1))
    solver.gn_step(x3d, x2d, w2d, pose, cam, delta)
    assert not called  # CPU: plane form
    monkeypatch.setattr(solver, '_use_stacked_gn', lambda device: True)
    solver.gn_step(x3d, x2d, w2d, pose, cam, delta)
    assert called == [1]
