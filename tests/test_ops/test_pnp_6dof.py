"""6-DoF pieces of the layer: quaternion derivative regularisation, ``pose_plus`` of the Monte-Carlo forward,
refusal of mismatched pose widths, the unbounded camera; gradients checked by finite differences in float64.

Reference numbers are computed independently: rotation angles from rotation matrices (trace formula), ``y⁺``
from :func:`compute_pose_plus` called directly, finite differences by ``torch.autograd.gradcheck``.
"""
import math

import pytest
import torch

from epropnp_det.ops.pnp import (
    CameraParams,
    EProPnP4DoF,
    EProPnP6DoF,
    adaptive_huber_delta,
    compute_pose_plus,
    derivative_reg_losses,
    derivative_regularization,
    project,
    quaternion_to_rot_mat,
    solve_pnp,
)
from epropnp_det.ops.pnp.testing import make_problems

D64 = torch.float64


def _rand_quat(n, g):
    return torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=D64), dim=-1)


def test_quaternion_orientation_loss_is_one_minus_cos_of_the_rotation_angle():
    g = torch.Generator().manual_seed(0)
    q1, q2 = _rand_quat(64, g), _rand_quat(64, g)
    t = torch.randn(64, 3, generator=g, dtype=D64)
    _, lo = derivative_reg_losses(torch.cat([t, q1], -1), torch.cat([t, q2], -1))
    r1, r2 = quaternion_to_rot_mat(q1), quaternion_to_rot_mat(q2)
    cos_theta = ((r1.transpose(-1, -2) @ r2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    torch.testing.assert_close(lo, 1 - cos_theta, rtol=1e-10, atol=1e-12)
    # q and −q are the same rotation; identical poses give zero
    _, lo_neg = derivative_reg_losses(torch.cat([t, -q1], -1), torch.cat([t, q2], -1))
    torch.testing.assert_close(lo_neg, lo, rtol=1e-12, atol=1e-14)
    lp, lo_same = derivative_reg_losses(torch.cat([t, q1], -1), torch.cat([t, -q1], -1))
    assert lo_same.abs().max() < 1e-12 and lp.abs().max() < 1e-12
    # 4-DoF: the same quantity for a yaw rotation
    yaw = torch.rand(8, generator=g, dtype=D64) * 6 - 3
    _, lo4 = derivative_reg_losses(torch.cat([t[:8], yaw[:, None]], -1), torch.cat([t[:8], 0 * yaw[:, None]], -1))
    torch.testing.assert_close(lo4, 1 - torch.cos(yaw), rtol=1e-12, atol=1e-14)


def test_6dof_reg_losses_gradcheck():
    g = torch.Generator().manual_seed(1)
    pose = torch.cat([torch.randn(5, 3, generator=g, dtype=D64) * 2, _rand_quat(5, g)], -1).requires_grad_()
    gt = torch.cat([torch.randn(5, 3, generator=g, dtype=D64), _rand_quat(5, g)], -1)
    assert torch.autograd.gradcheck(lambda p: derivative_reg_losses(p, gt), (pose,))


def _problem6(N=3, n=10, noise=2., seed=2):
    p = make_problems(N, n, noise_px=noise, dtype=D64, generator=torch.Generator().manual_seed(seed), dof=6)
    sol = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], dof=6, pose_init=p['pose_gt'])
    return p, sol.pose


def test_6dof_pose_plus_gradcheck():
    """y⁺ of a 6-DoF solution (normalised, its translation moved by the rotation step) vs finite differences in
    x2d, w2d (δ differentiable through both) and x3d (without normalisation: its offset is detached on purpose)."""
    p, pose = _problem6()
    x2d, w2d = p['x2d'].clone().requires_grad_(), p['w2d'].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: compute_pose_plus(p['x3d'], a, b, pose, p['camera'], adaptive_huber_delta(a, b)), (x2d, w2d))
    x3d = p['x3d'].clone().requires_grad_()
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    assert torch.autograd.gradcheck(
        lambda a: compute_pose_plus(a, p['x2d'], p['w2d'], pose, p['camera'], delta, normalize=False), (x3d,))


def test_6dof_regularisation_end_to_end_and_gradcheck():
    # noise-free: y⁺ = y_gt, both losses vanish
    p = make_problems(8, 24, noise_px=0., dtype=D64, generator=torch.Generator().manual_seed(3), dof=6)
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    out = derivative_regularization(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, p['pose_gt'],
                                    generator=torch.Generator().manual_seed(0))
    assert out['pose_plus'].shape == (8, 7)
    assert out['loss_pos'].median() < 1e-8 and out['loss_orient'].median() < 1e-8
    # noisy: gradient of the whole regulariser (GN step + quaternion loss) vs finite differences in w2d
    p, pose = _problem6(noise=3.)
    w2d = p['w2d'].clone().requires_grad_()

    def reg(w):
        o = derivative_regularization(p['x3d'], p['x2d'], w, p['camera'], adaptive_huber_delta(p['x2d'], w),
                                      p['pose_gt'], pose_opt=pose)
        return o['loss_pos'] + o['loss_orient']
    assert (reg(w2d) > 0).all()
    assert torch.autograd.gradcheck(reg, (w2d,))


@pytest.mark.parametrize('dof', [4, 6])
def test_training_solution_option_and_pose_plus_of_the_monte_carlo_forward(dof):
    """``solution='training'`` regularises the solve in which the target competes; ``with_pose_plus=True`` returns
    the same ``y⁺`` from the Monte-Carlo forward (same RSLM draws), equal to ``compute_pose_plus`` called directly."""
    p = make_problems(6, 16, noise_px=2., dtype=D64, generator=torch.Generator().manual_seed(4), dof=dof)
    layer = (EProPnP4DoF if dof == 4 else EProPnP6DoF)(mc_samples=16, num_iter=4)
    w2d = p['w2d'].clone().requires_grad_()
    delta = adaptive_huber_delta(p['x2d'], w2d)
    mc = layer.monte_carlo_forward(p['x3d'], p['x2d'], w2d, p['camera'], delta=delta, pose_init=p['pose_gt'],
                                   with_pose_plus=True, generator=torch.Generator().manual_seed(7))
    assert mc.pose_plus is not None and mc.pose_plus.requires_grad
    ref = compute_pose_plus(p['x3d'], p['x2d'], w2d, mc.pose_opt, p['camera'], delta)
    torch.testing.assert_close(mc.pose_plus, ref, rtol=1e-10, atol=1e-10)
    reg = derivative_regularization(p['x3d'], p['x2d'], w2d, p['camera'], delta, p['pose_gt'],
                                    solution='training', generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(reg['pose_opt'], mc.pose_opt, rtol=0, atol=1e-9)
    torch.testing.assert_close(reg['pose_plus'], mc.pose_plus, rtol=1e-9, atol=1e-9)
    g1, = torch.autograd.grad(derivative_reg_losses(mc.pose_plus, p['pose_gt'])[1].sum(), w2d, retain_graph=True)
    g2, = torch.autograd.grad(reg['loss_orient'].sum(), w2d)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    # without the option nothing is computed
    mc0 = layer.monte_carlo_forward(p['x3d'], p['x2d'], w2d, p['camera'], delta=delta, pose_init=p['pose_gt'])
    assert mc0.pose_plus is None


def test_6dof_sampled_cost_backward_gradcheck():
    """The hand-written backward of the fused sampled cost for quaternion poses vs finite differences."""
    from epropnp_det.ops.pnp import sampled_pnp_cost
    p, pose = _problem6(N=2, n=6)
    g = torch.Generator().manual_seed(9)
    poses = torch.cat([pose[None, :, :3] + 0.2 * torch.randn(4, 2, 3, generator=g, dtype=D64),
                       torch.nn.functional.normalize(pose[None, :, 3:] + 0.1 * torch.randn(4, 2, 4, generator=g,
                                                                                          dtype=D64), dim=-1)], -1)
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    delta = torch.full((2,), 0.02, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: sampled_pnp_cost(a, b, c, poses, p['camera'], d, backend='eager'), (x3d, x2d, w2d, delta))


def test_mismatched_pose_widths_are_refused():
    p = make_problems(3, 8, dtype=D64, generator=torch.Generator().manual_seed(5), dof=6)
    delta = adaptive_huber_delta(p['x2d'], p['w2d'])
    with pytest.raises(ValueError, match=r'dof=6'):
        derivative_regularization(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, p['pose_gt'], dof=4)
    with pytest.raises(ValueError, match=r'EProPnP6DoF'):
        EProPnP4DoF(mc_samples=8).monte_carlo_forward(p['x3d'], p['x2d'], p['w2d'], p['camera'],
                                                      pose_init=p['pose_gt'])
    with pytest.raises(ValueError, match=r'EProPnP4DoF'):
        EProPnP6DoF(mc_samples=8).solve(p['x3d'], p['x2d'], p['w2d'], p['camera'],
                                        pose_init=p['pose_gt'][:, :4])
    with pytest.raises(ValueError, match='pose_gt'):
        derivative_reg_losses(p['pose_gt'][:, :4], p['pose_gt'])


def test_unbounded_camera_never_clamps():
    K = torch.eye(3, dtype=D64)
    cam = CameraParams.unbounded(K.expand(2, 3, 3))
    x3d = torch.tensor([[[0., 0, 0]], [[100., -50, 0]]], dtype=D64)
    pose = torch.tensor([[0., 0, 5, 0], [0., 0, 2, 0]], dtype=D64)
    x2d, _ = project(x3d, pose, cam)
    torch.testing.assert_close(x2d[:, 0], torch.tensor([[0., 0], [50., -25.]], dtype=D64))
    single = CameraParams.unbounded(K)
    assert single.cam_mats.shape == (1, 3, 3) and math.isinf(single.ub[0, 0].item())
