"""Projection and its analytic pose Jacobians (docs/method.md §2.2) against direct formulas and finite differences."""
import pytest
import torch

from epropnp_det.ops.pnp.camera import project
from epropnp_det.ops.pnp.rotation import quaternion_retract, quaternion_to_rot_mat, yaw_to_rot_mat
from epropnp_det.ops.pnp.solver import retract
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.ops.pnp.types import CameraParams

D64 = torch.float64


def _fd_jacobian(x3d, pose, camera, h=1e-6):
    """Central differences of project() w.r.t. the local pose parameters -> (N, n, 2, T)."""
    T = 4 if pose.shape[-1] == 4 else 6
    cols = []
    for k in range(T):
        step = torch.zeros(*pose.shape[:-1], T, dtype=pose.dtype)
        step[..., k] = h
        plus = project(x3d, retract(pose, step), camera)[0]
        minus = project(x3d, retract(pose, -step), camera)[0]
        cols.append((plus - minus) / (2 * h))
    return torch.stack(cols, dim=-1)


def test_camera_bounds():
    K = torch.eye(3, dtype=D64).expand(2, 3, 3)
    hw = torch.tensor([[900., 1600.], [10., 20.]], dtype=D64)
    c1 = CameraParams.from_image_shape(K, hw, 'v1')
    c2 = CameraParams.from_image_shape(K, hw, 'v2', allowed_border=10.)
    assert torch.equal(c1.lb, torch.full((2, 2), -200.5, dtype=D64))
    assert torch.equal(c1.ub, torch.tensor([[1799.5, 1099.5], [219.5, 209.5]], dtype=D64))
    assert torch.equal(c2.lb, torch.full((2, 2), -10., dtype=D64))
    assert torch.equal(c2.ub, torch.tensor([[1610., 910.], [30., 20.]], dtype=D64))
    with pytest.raises(ValueError, match='convention'):
        CameraParams.from_image_shape(K, hw, 'v3')
    with pytest.raises(ValueError, match='lb'):
        CameraParams(K, torch.zeros(3, 2), torch.zeros(2, 2))
    assert c1.repeat(3).cam_mats.shape == (6, 3, 3) and c1.index(torch.tensor([1])).lb.shape == (1, 2)


@pytest.mark.parametrize('dof', [4, 6])
def test_project_matches_direct_formula(dof):
    p = make_problems(8, 20, dtype=D64, generator=torch.Generator().manual_seed(0), dof=dof)
    pose, cam = p['pose_gt'], p['camera']
    R = yaw_to_rot_mat(pose[:, 3]) if dof == 4 else quaternion_to_rot_mat(pose[:, 3:])
    X = p['x3d'] @ R.transpose(-1, -2) + pose[:, None, :3]
    h = X @ p['cam_mats'].transpose(-1, -2)
    ref = h[..., :2] / h[..., 2:].clamp(min=0.1)
    ref = torch.maximum(torch.minimum(ref, cam.ub[:, None]), cam.lb[:, None])
    x2d, jac = project(p['x3d'], pose, cam, out_jac=True)
    assert torch.allclose(x2d, ref, atol=1e-9)
    assert jac.shape == (8, 20, 2, 4 if dof == 4 else 6)
    # leading sample dims broadcast against per-object x3d and camera
    poses = torch.stack([pose, pose + 0.01])
    xs, js = project(p['x3d'], poses, cam, out_jac=True)
    assert xs.shape == (2, 8, 20, 2) and js.shape == (2, 8, 20, 2, jac.shape[-1])
    assert torch.allclose(xs[0], x2d) and torch.allclose(js[0], jac)


@pytest.mark.parametrize('dof', [4, 6])
def test_jacobian_vs_finite_differences(dof):
    p = make_problems(16, 30, dtype=D64, generator=torch.Generator().manual_seed(1), dof=dof)
    K = p['cam_mats'].clone()
    K[:, 0, 1] = 3.0  # general K[:2, :2] (skew) is supported
    cam = CameraParams.from_image_shape(K, p['img_hw'], allowed_border=1e4)  # nothing clamped
    pose = p['pose_gt']
    _, jac = project(p['x3d'], pose, cam, out_jac=True)
    fd = _fd_jacobian(p['x3d'], pose, cam)
    rel = (jac - fd).norm() / fd.norm()
    assert rel < 1e-6, rel
    assert ((jac - fd).abs() <= 1e-6 * fd.abs().amax(dim=(-1, -2), keepdim=True) + 1e-9).all()


def test_clip_jac_masks_rows():
    K = torch.tensor([[[1000., 0, 500], [0, 1000, 400], [0, 0, 1]]], dtype=D64)
    cam = CameraParams.from_image_shape(K, torch.tensor([[800., 1000.]], dtype=D64), 'v2', allowed_border=100.)
    # points: inside; u clamped (far right); v clamped (far down); behind the camera
    x3d = torch.tensor([[[0., 0, 0], [20., 0, 0], [0., 15, 0], [0., 0, -12]]], dtype=D64)
    pose = torch.tensor([[0., 0, 10, 0.3]], dtype=D64)
    x2d, jac = project(x3d, pose, cam, out_jac=True, clip_jac=True)
    _, jac_nc = project(x3d, pose, cam, out_jac=True, clip_jac=False)
    assert x2d[0, 1, 0] == cam.ub[0, 0] and x2d[0, 2, 1] == cam.ub[0, 1]
    nz = jac[0].abs().sum(-1) > 0  # (n, 2) row non-zero?
    assert nz.tolist() == [[True, True], [False, True], [True, False], [False, False]]
    assert (jac_nc[0].abs().sum(-1) > 0).all()
    assert torch.equal(jac[0, 0], jac_nc[0, 0])


def test_quaternion_retract_used_by_retract():
    q = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=D64)
    pose = torch.cat([torch.zeros(1, 3, dtype=D64), q], -1)
    step = torch.tensor([[1., 2, 3, 0.1, 0.2, 0.3]], dtype=D64)
    out = retract(pose, step)
    assert torch.allclose(out[:, :3], step[:, :3]) and torch.allclose(out[:, 3:], quaternion_retract(q, step[:, 3:]))
