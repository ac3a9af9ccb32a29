"""Huber costs, IRLS residuals/Jacobians, fused normal equations (docs/method.md §2.3)."""
import pytest
import torch

from epropnp_det.ops.pnp.camera import project
from epropnp_det.ops.pnp.cost import adaptive_huber_delta, evaluate_pnp, normal_equations, pnp_cost
from epropnp_det.ops.pnp.solver import retract
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.ops.pnp.types import CameraParams

D64 = torch.float64


def _problem(dof=4, N=12, n=40, seed=0, noise=3.):
    p = make_problems(N, n, noise_px=noise, dtype=D64, generator=torch.Generator().manual_seed(seed), dof=dof)
    p['delta'] = adaptive_huber_delta(p['x2d'], p['w2d'])
    return p


def test_adaptive_delta_formula_and_degenerate():
    p = _problem()
    x2d, w2d = p['x2d'], p['w2d']
    ref = w2d.mean(dim=(1, 2)) * (x2d[..., 0].var(1) + x2d[..., 1].var(1)).sqrt() * 0.5
    assert torch.allclose(p['delta'], ref)
    # coincident points / zero weights / single point -> 0, finite gradients
    x = torch.ones(2, 5, 2, dtype=D64, requires_grad=True)
    w = torch.rand(2, 5, 2, dtype=D64, requires_grad=True)
    d = adaptive_huber_delta(x, w)
    d.sum().backward()
    assert (d.abs() < 1e-9).all() and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert torch.equal(adaptive_huber_delta(x[:, :1], w[:, :1]), torch.zeros(2, dtype=D64))


@pytest.mark.parametrize('dof', [4, 6])
def test_cost_equals_huber_formula(dof):
    p = _problem(dof)
    pose = p['pose_gt'] + 0.05
    x2d_proj, _ = project(p['x3d'], pose, p['camera'])
    s = ((x2d_proj - p['x2d']) * p['w2d']).norm(dim=-1)
    d = p['delta'][:, None]
    ref = torch.where(s <= d, 0.5 * s ** 2, d * s - 0.5 * d ** 2).sum(-1)
    assert ((s <= d).any() and (s > d).any())  # both zones exercised
    _, _, cost = evaluate_pnp(p['x3d'], p['x2d'], p['w2d'], pose, p['camera'], p['delta'], out_cost=True,
                              out_residual=True)
    assert torch.allclose(cost, ref, rtol=1e-12)
    assert torch.allclose(pnp_cost(p['x3d'], p['x2d'], p['w2d'], pose, p['camera'], p['delta']), ref, rtol=1e-12)
    # many poses at once (Monte-Carlo samples) broadcast against per-object data
    poses = torch.stack([pose, p['pose_gt'], pose - 0.05])
    c3 = pnp_cost(p['x3d'], p['x2d'], p['w2d'], poses, p['camera'], p['delta'])
    assert c3.shape == (3, 12) and torch.allclose(c3[0], ref, rtol=1e-12)


def test_quadratic_zone_half_squared_norm():
    p = _problem()
    big = torch.full_like(p['delta'], 1e6)
    res, _, cost = evaluate_pnp(p['x3d'], p['x2d'], p['w2d'], p['pose_gt'], p['camera'], big, out_residual=True,
                                out_cost=True)
    assert res.shape == (12, 80)
    assert torch.allclose(0.5 * res.square().sum(-1), cost, rtol=1e-12)


def _fd(fn, pose, T, h=1e-6):
    cols = []
    for k in range(T):
        e = torch.zeros(*pose.shape[:-1], T, dtype=pose.dtype)
        e[..., k] = h
        cols.append((fn(retract(pose, e)) - fn(retract(pose, -e))) / (2 * h))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize('dof', [4, 6])
def test_irls_jacobian_vs_finite_differences_quadratic_zone(dof):
    p = _problem(dof)
    T = 4 if dof == 4 else 6
    cam = CameraParams.from_image_shape(p['cam_mats'], p['img_hw'], allowed_border=1e4)
    big = torch.full_like(p['delta'], 1e6)  # smooth: rho = 1 everywhere
    res_fn = lambda q: evaluate_pnp(p['x3d'], p['x2d'], p['w2d'], q, cam, big, out_residual=True)[0]
    _, jac, _ = evaluate_pnp(p['x3d'], p['x2d'], p['w2d'], p['pose_gt'], cam, big, out_jacobian=True)
    fd = _fd(res_fn, p['pose_gt'], T)
    assert (jac - fd).norm() / fd.norm() < 1e-6


@pytest.mark.parametrize('dof', [4, 6])
def test_gradient_is_jtr_both_zones(dof):
    """J̃ᵀr̃ is the exact gradient of the Huber cost w.r.t. the local pose (linear zone included)."""
    p = _problem(dof, noise=5.)
    T = 4 if dof == 4 else 6
    cam = CameraParams.from_image_shape(p['cam_mats'], p['img_hw'], allowed_border=1e4)
    pose = retract(p['pose_gt'], torch.full((12, T), 0.02, dtype=D64))
    cost_fn = lambda q: pnp_cost(p['x3d'], p['x2d'], p['w2d'], q, cam, p['delta'])
    _, jtr, _ = normal_equations(p['x3d'], p['x2d'], p['w2d'], pose, cam, p['delta'])
    fd = _fd(cost_fn, pose, T)
    assert (jtr - fd).norm() / fd.norm() < 1e-6


@pytest.mark.parametrize('dof', [4, 6])
@pytest.mark.parametrize('clip', [True, False])
def test_normal_equations_match_explicit_jacobian(dof, clip):
    p = _problem(dof)
    x2d = p['x2d'].clone()
    pose = p['pose_gt'].clone()
    pose[0, 2] = 0.5  # object 0 partly behind the camera / beyond the border -> clamped rows
    res, jac, cost = evaluate_pnp(p['x3d'], x2d, p['w2d'], pose, p['camera'], p['delta'], True, True, True,
                                  clip_jac=clip)
    jtj, jtr, cost2 = normal_equations(p['x3d'], x2d, p['w2d'], pose, p['camera'], p['delta'], clip_jac=clip)
    assert torch.allclose(jtj, jac.transpose(-1, -2) @ jac, rtol=1e-10, atol=1e-10)
    assert torch.allclose(jtr, (jac.transpose(-1, -2) @ res[..., None])[..., 0], rtol=1e-10, atol=1e-10)
    assert torch.allclose(cost, cost2, rtol=1e-12)
    # leading dims
    jtj2, _, _ = normal_equations(p['x3d'], x2d, p['w2d'], torch.stack([pose, pose]), p['camera'], p['delta'],
                                  clip_jac=clip)
    assert torch.allclose(jtj2[1], jtj, rtol=1e-12, atol=1e-12)


def test_cost_differentiable_finite():
    p = _problem()
    x3d, x2d, w2d = (p[k].clone().requires_grad_() for k in ('x3d', 'x2d', 'w2d'))
    d = adaptive_huber_delta(x2d, w2d)
    poses = torch.stack([p['pose_gt'], p['pose_gt'] + 0.1])
    c = pnp_cost(x3d, x2d, w2d, poses, p['camera'], d)
    c.sum().backward()
    for t in (x3d, x2d, w2d):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # exact fit (zero residual): still finite gradients
    x2d0 = project(p['x3d'], p['pose_gt'], p['camera'])[0].requires_grad_()
    c0 = pnp_cost(p['x3d'], x2d0, p['w2d'], p['pose_gt'], p['camera'], p['delta'])
    c0.sum().backward()
    assert torch.isfinite(x2d0.grad).all() and c0.abs().max() < 1e-15
    small = [t[:3, :6].detach().requires_grad_() for t in (p['x3d'], p['x2d'], p['w2d'])]
    assert torch.autograd.gradcheck(
        lambda a, b, c: pnp_cost(a, b, c, poses[:, :3], p['camera'].index(slice(0, 3)), adaptive_huber_delta(b, c)),
        small)
