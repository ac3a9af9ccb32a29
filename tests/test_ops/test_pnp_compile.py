"""The compiled PnP path in the default suite, and no compilation with default settings.

* The ``torch.compile`` path of the sampled cost (``backend='compile'``: the planar kernels traced by dynamo, the
  backward through AOT autograd) equals the eager path, run in a fresh process with the ``aot_eager`` compile
  backend (the same traced graphs, seconds instead of inductor's code generation; inductor itself runs in the slow
  tests here and in ``test_pnp_amis.py`` / ``test_pnp_solver.py``).
* The planar formulation (only used compiled) equals the eager chunks for both robust costs, called uncompiled.
* With default settings nothing is compiled, whatever the problem size (the first call takes seconds, not the
  minutes a compilation takes on a small CPU; ``tools/benchmarks/pnp_first_call.py`` times it).
"""
import os
import subprocess
import sys

import pytest
import torch

from epropnp_det.ops.pnp.sampled_cost import _planar_cost, _planar_grads, _planar_prep, _pose_affine, _SampledCost
from epropnp_det.ops.pnp.testing import make_problems

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D64 = torch.float64


def _run(code: str, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), **env)
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)


_COMPILED_VS_EAGER = '''
import torch
from epropnp_det.ops.pnp import _compile, sampled_pnp_cost
from epropnp_det.ops.pnp.testing import make_problems
p = make_problems(4, 16, noise_px=3., generator=torch.Generator().manual_seed(0), dtype=torch.float64)
g = torch.Generator().manual_seed(1)
poses = p['pose_gt'].expand(8, 4, 4) + 0.2 * torch.randn(8, 4, 4, generator=g, dtype=torch.float64)
out = {}
for backend in ('compile', 'eager'):
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    delta = torch.full((4,), 0.02, dtype=torch.float64, requires_grad=True)
    cost = sampled_pnp_cost(x3d, x2d, w2d, poses, p['camera'], delta, backend=backend)
    (cost * torch.linspace(0.1, 1, 8, dtype=torch.float64)[:, None]).sum().backward()
    out[backend] = [cost, x3d.grad, x2d.grad, w2d.grad, delta.grad]
assert not _compile._STATE['failed'], 'compilation fell back to eager'
assert {'sampled_cost', 'sampled_grad'} <= set(_compile._COMPILED), sorted(_compile._COMPILED)
for a, b in zip(out['compile'], out['eager']):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
print('compiled == eager')
'''


def test_compiled_sampled_cost_equals_eager_in_a_fresh_process():
    res = _run(_COMPILED_VS_EAGER, EPROPNP_COMPILE_BACKEND='aot_eager')
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'compiled == eager' in res.stdout


@pytest.mark.slow
def test_compiled_sampled_cost_equals_eager_inductor():
    res = _run(_COMPILED_VS_EAGER, EPROPNP_COMPILE_BACKEND='inductor')
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize('robust', ['huber', 'cauchy'])
def test_planar_kernels_equal_the_eager_chunks(robust):
    p = make_problems(3, 11, noise_px=3., generator=torch.Generator().manual_seed(2), dtype=D64)
    g = torch.Generator().manual_seed(3)
    S, N = 6, 3
    poses = p['pose_gt'].expand(S, N, 4) + 0.2 * torch.randn(S, N, 4, generator=g, dtype=D64)
    delta = torch.full((N,), 0.03, dtype=D64)
    cam = p['camera']
    affine = _pose_affine(poses, cam.cam_mats)
    args = (p['x3d'], p['x2d'], p['w2d'], delta, affine, cam.lb, cam.ub, cam.z_min, 1 << 18, False, robust)
    ref = _SampledCost.apply(*args)
    planes = _planar_prep(p['x3d'], p['x2d'], p['w2d'])
    A = affine.transpose(0, 1).reshape(N, S, 12)
    torch.testing.assert_close(_planar_cost(A, *planes, delta, cam.lb, cam.ub, cam.z_min, robust).t(), ref,
                               rtol=1e-10, atol=1e-12)
    # gradients: the planar backward's reductions vs autograd through the eager function
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    d = delta.clone().requires_grad_()
    up = torch.rand(S, N, generator=g, dtype=D64)
    (_SampledCost.apply(x3d, x2d, w2d, d, *args[4:]) * up).sum().backward()
    r1, gx3d = _planar_grads(affine.reshape(S, N, 12).permute(1, 2, 0), *planes, delta, cam.lb, cam.ub,
                             up.t().contiguous(), cam.z_min, robust)
    torch.testing.assert_close(gx3d.transpose(1, 2), x3d.grad, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(-(r1[:, 2:4] * planes[2]).transpose(1, 2), x2d.grad, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(r1[:, 0:2].transpose(1, 2), w2d.grad, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(r1[:, 4].sum(-1), d.grad, rtol=1e-9, atol=1e-11)


def test_default_settings_never_compile():
    """Problems far above the 'auto' threshold (2¹⁸ pose-point pairs per call): the default backend stays eager."""
    code = '''
import torch
from epropnp_det.ops.pnp import (EProPnP4DoF, EProPnP6DoF, _compile, derivative_regularization, sampled_pnp_cost,
                                 solve_pnp)
from epropnp_det.ops.pnp.testing import make_problems
for dof, cls in ((4, EProPnP4DoF), (6, EProPnP6DoF)):
    p = make_problems(32, 64, generator=torch.Generator().manual_seed(0), dof=dof)  # 32·64·128 = 2¹⁸ pairs
    w2d = p['w2d'].clone().requires_grad_()
    mc = cls(mc_samples=128).monte_carlo_forward(p['x3d'], p['x2d'], w2d, p['camera'], pose_init=p['pose_gt'])
    (mc.cost_init + mc.logw.logsumexp(0)).sum().backward()
    solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], dof=dof)
    derivative_regularization(p['x3d'], p['x2d'], w2d, p['camera'], torch.ones(32), p['pose_gt'])
    sampled_pnp_cost(p['x3d'], p['x2d'], p['w2d'], mc.pose_samples, p['camera'], torch.ones(32))
print('compiled:', sorted(_compile._COMPILED))
'''
    res = _run(code)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'compiled: []' in res.stdout, res.stdout
