"""Differentiable GN step and derivative regularisation (docs/method.md §2.12, §5.5)."""
import math

import pytest
import torch

from epropnp_det.ops.pnp.cost import adaptive_huber_delta, normal_equations
from epropnp_det.ops.pnp.normalize import pnp_denormalize, pnp_normalize
from epropnp_det.ops.pnp.regularization import derivative_reg_losses, derivative_regularization
from epropnp_det.ops.pnp.solver import compute_pose_plus, gn_step, solve_pnp
from epropnp_det.ops.pnp.testing import make_problems

D64 = torch.float64


def _small(dof=4, N=3, n=8, seed=0):
    p = make_problems(N, n, noise_px=3., dtype=D64, generator=torch.Generator().manual_seed(seed), dof=dof)
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], dof=dof, generator=torch.Generator().manual_seed(1))
    return p, sol.pose


@pytest.mark.parametrize('dof', [4, 6])
def test_gn_step_gradcheck(dof):
    p, pose = _small(dof)
    pose = pose + torch.tensor([0.05, -0.02, 0.3] + [0.] * (pose.shape[-1] - 3), dtype=D64)  # not at the optimum
    if dof == 6:
        pose[:, 3:] = pose[:, 3:] / pose[:, 3:].norm(dim=-1, keepdim=True)
    inputs = [p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d')]

    def fn(x3d, x2d, w2d):  # δ depends on x2d and w2d too (v2 behaviour)
        return gn_step(x3d, x2d, w2d, pose, p['camera'], adaptive_huber_delta(x2d, w2d))
    assert torch.autograd.gradcheck(fn, inputs)


def test_gn_step_is_newton_step_on_normal_equations():
    p, pose = _small(n=30)
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    jtj, jtr, _ = normal_equations(p['x3d'], p['x2d'], p['w2d'], pose + 0.01, p['camera'], delta)
    step = gn_step(p['x3d'], p['x2d'], p['w2d'], pose + 0.01, p['camera'], delta)
    ref = -torch.linalg.solve(jtj + 1e-5 * torch.eye(4, dtype=D64), jtr)
    assert torch.allclose(step, ref, rtol=1e-9, atol=1e-12)


def test_pose_plus_normalisation_order_and_gradcheck():
    p, pose = _small(n=10)
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    offset, x3d_n, pose_n = pnp_normalize(p['x3d'], pose)
    step = gn_step(x3d_n, p['x2d'], p['w2d'], pose_n, p['camera'], delta)
    ref = pnp_denormalize(offset, pose_n + step)  # step in the normalised frame, denormalised with its own yaw
    pp = compute_pose_plus(p['x3d'], p['x2d'], p['w2d'], pose, p['camera'], delta)
    assert torch.allclose(pp, ref, atol=1e-12)
    naive = pose + gn_step(p['x3d'], p['x2d'], p['w2d'], pose, p['camera'], delta)
    assert (pp - naive).abs().max() < 1e-3  # nearly the same value, different gradients
    # the yaw step moves t+ through R(yaw+)·offset
    x2d = p['x2d'].clone().requires_grad_()
    g_t = torch.autograd.grad(compute_pose_plus(p['x3d'], x2d, p['w2d'], pose, p['camera'], delta)[:, 0].sum(), x2d)
    assert torch.isfinite(g_t[0]).all()
    # gradcheck in x2d / w2d with normalisation; in x3d without (the offset is detached on purpose)
    x2d, w2d = p['x2d'].clone().requires_grad_(), p['w2d'].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: compute_pose_plus(p['x3d'], a, b, pose, p['camera'], adaptive_huber_delta(a, b)), (x2d, w2d))
    x3d = p['x3d'].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: compute_pose_plus(a, p['x2d'], p['w2d'], pose, p['camera'], delta, normalize=False), (x3d,))


def test_reg_losses_values():
    pose_plus = torch.tensor([[0., 0, 10, 0.5], [3., 0, 14, 0.], [1., 1, 1, 1.]], dtype=D64, requires_grad=True)
    gt = torch.tensor([[0., 0, 10.5, 0.5 + math.pi], [0., 0, 10, 0.], [1., 1, 1, 1.]], dtype=D64)
    lp, lo = derivative_reg_losses(pose_plus, gt)
    assert torch.allclose(lp, torch.tensor([0.5 * 0.25, 5 - 0.5, 0.], dtype=D64))
    assert torch.allclose(lo, torch.tensor([2., 0., 0.], dtype=D64), atol=1e-12)
    (lp + lo).sum().backward()
    assert torch.isfinite(pose_plus.grad).all()  # finite at t+ == t_gt


def test_derivative_regularization_end_to_end():
    p = make_problems(24, 48, noise_px=0., generator=torch.Generator().manual_seed(3))
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    delta = adaptive_huber_delta(x2d.detach(), w2d)
    out = derivative_regularization(x3d, x2d, w2d, p['camera'], delta, p['pose_gt'],
                                    generator=torch.Generator().manual_seed(0))
    assert out['loss_pos'].shape == (24,) and not out['pose_opt'].requires_grad
    assert out['loss_pos'].median() < 1e-6 and out['loss_orient'].median() < 1e-6  # noise-free: y+ = y_gt
    (out['loss_pos'].sum() + out['loss_orient'].sum()).backward()
    for t in (x3d, x2d, w2d):
        assert torch.isfinite(t.grad).all()
    # noisy correspondences: positive losses whose gradient reaches all inputs
    p2 = make_problems(24, 48, noise_px=4., generator=torch.Generator().manual_seed(4))
    x2d = p2['x2d'].clone().requires_grad_()
    out = derivative_regularization(p2['x3d'], x2d, p2['w2d'], p2['camera'],
                                    adaptive_huber_delta(p2['x2d'], p2['w2d']), p2['pose_gt'])
    out['loss_pos'].sum().backward()
    assert (out['loss_pos'] > 0).all() and x2d.grad.abs().sum() > 0


def test_shared_solve_of_the_monte_carlo_forward_equals_an_independent_regularisation_solve():
    """``monte_carlo_forward(..., with_free_solution=True).pose_free`` is the regularisation's independent solve
    (same RSLM draws): same y*, same losses and gradients as ``derivative_regularization`` solving itself."""
    from epropnp_det.ops.pnp.epropnp import EProPnP4DoF
    p = make_problems(12, 16, noise_px=2., dtype=D64, generator=torch.Generator().manual_seed(5))
    layer = EProPnP4DoF(mc_samples=16, num_iter=4, solver_cfg=dict(num_iter=10))
    w2d = p['w2d'].clone().requires_grad_()
    delta = adaptive_huber_delta(p['x2d'], w2d)
    gt = p['pose_gt'].clone()
    gt[::2, 3] += 1.0
    mc = layer.monte_carlo_forward(p['x3d'], p['x2d'], w2d, p['camera'], delta=delta, pose_init=gt,
                                   with_free_solution=True, generator=torch.Generator().manual_seed(2))
    ref_mc = layer.monte_carlo_forward(p['x3d'], p['x2d'], w2d, p['camera'], delta=delta, pose_init=gt,
                                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(mc.pose_opt, ref_mc.pose_opt, rtol=0, atol=1e-9)
    assert ref_mc.pose_free is None
    shared = derivative_regularization(p['x3d'], p['x2d'], w2d, p['camera'], delta.detach(), gt,
                                       pose_opt=mc.pose_free)
    own = derivative_regularization(p['x3d'], p['x2d'], w2d, p['camera'], delta.detach(), gt,
                                    generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(shared['pose_opt'], own['pose_opt'], rtol=0, atol=1e-9)
    for k in ('loss_pos', 'loss_orient'):
        torch.testing.assert_close(shared[k], own[k], rtol=1e-9, atol=1e-12)
    g_shared, = torch.autograd.grad(shared['loss_pos'].sum() + shared['loss_orient'].sum(), w2d)
    g_own, = torch.autograd.grad(own['loss_pos'].sum() + own['loss_orient'].sum(), w2d)
    torch.testing.assert_close(g_shared, g_own, rtol=1e-7, atol=1e-10)
    assert g_own.abs().max() > 0
