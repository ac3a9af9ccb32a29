"""The pose stage (:class:`EProPnPPoseStage`) on its own, with the typed structures it consumes.

References are independent of the code under test: poses from synthetic projections with a known pose, gradients
checked for presence / absence by autograd on the policy in question, covariance scaling against
``diag(s) · C · diag(s)``.
"""
import math

import numpy as np
import pytest
import torch

from epropnp_det.models.task_modules import EProPnPPoseStage
from epropnp_det.models.utils.uncertainty import pose_cov_to_std, pose_std_components, scale_pose_cov
from epropnp_det.structures import CameraBatch, Correspondences

K = np.array([[300., 0., 160.], [0., 300., 64.], [0., 0., 1.]])
W, H = 320, 128


def _metas(n=2, convention_flip=(False, True)):
    out = []
    for f in convention_flip[:n]:
        T = np.array([[-1., 0, W], [0, 1, 0], [0, 0, 1]]) if f else np.eye(3)
        out.append(dict(cam2img=K, img_transform=T, img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W), flip=f))
    return out


def _problem(N=3, n=32, noise=0.0, seed=0, convention='v2'):
    """Correspondences of N boxes with known poses (x2d = exact K-projections + Gaussian noise)."""
    gen = torch.Generator().manual_seed(seed)
    dims = torch.rand(N, 3, generator=gen) * 2 + 1
    noc = torch.rand(N, n, 3, generator=gen) - 0.5
    pose = torch.stack((torch.rand(N, generator=gen) * 6 - 3, torch.rand(N, generator=gen) + 0.5,
                        torch.rand(N, generator=gen) * 10 + 10, torch.rand(N, generator=gen) * 6 - 3), -1)
    x3d = noc * dims[:, None]
    c, s = pose[:, 3].cos(), pose[:, 3].sin()
    xc = c[:, None] * x3d[..., 0] + s[:, None] * x3d[..., 2] + pose[:, None, 0]
    yc = x3d[..., 1] + pose[:, None, 1]
    zc = -s[:, None] * x3d[..., 0] + c[:, None] * x3d[..., 2] + pose[:, None, 2]
    Kt = torch.as_tensor(K, dtype=torch.float32)
    x2d = torch.stack((Kt[0, 0] * xc / zc + Kt[0, 2], Kt[1, 1] * yc / zc + Kt[1, 2]), -1)
    x2d = x2d + noise * torch.randn(x2d.shape, generator=gen)
    corr = Correspondences(noc, dims, x2d, torch.full((N, n, 2), 1. / n), torch.full((N, 2), float(n)),
                           torch.zeros(N, dtype=torch.long))
    cams = CameraBatch.from_metainfo(_metas(1), torch.zeros(1), convention)
    return corr, cams, pose


def stage(**kw):
    torch.manual_seed(0)
    cfg = dict(pnp=dict(mc_samples=64, num_iter=4, solver_cfg=dict(num_iter=10)))
    cfg.update(kw)
    return EProPnPPoseStage(**cfg)


# -------------------------------------------------------------------------------------------- structures
def test_correspondences_properties_detach_index_and_cat():
    corr, _, _ = _problem(N=2, n=8)
    corr = Correspondences(corr.noc, corr.dims.requires_grad_(), corr.x2d, corr.w2d_unit, corr.scale.requires_grad_(),
                           corr.img_inds)
    torch.testing.assert_close(corr.x3d, corr.noc * corr.dims[:, None])
    torch.testing.assert_close(corr.w2d, corr.w2d_unit * corr.scale[:, None])
    d = corr.detach(dims=True, scale=True)
    assert not d.x3d.requires_grad and not d.w2d.requires_grad and corr.x3d.requires_grad
    one = corr.index(torch.tensor([1]))
    torch.testing.assert_close(one.x3d, corr.x3d[1:])
    other = Correspondences(corr.noc.flip(1), corr.dims * 4, corr.x2d + 1, corr.w2d_unit * 2, corr.scale * 3,
                            corr.img_inds)
    cat = Correspondences.cat(corr, other)
    assert cat.x2d.shape == (2, 16, 2) and cat.noc.shape == (2, 16, 3)
    torch.testing.assert_close(cat.dims, corr.dims * 2)  # geometric mean of d and 4d
    torch.testing.assert_close(cat.w2d[:, :8], corr.w2d)
    torch.testing.assert_close(cat.w2d[:, 8:], other.w2d)
    with pytest.raises(ValueError):
        Correspondences(corr.noc, corr.dims[:1], corr.x2d, corr.w2d_unit, corr.scale, corr.img_inds)


def test_camera_batch_from_metainfo():
    cams = CameraBatch.from_metainfo(_metas(2), torch.zeros(1, dtype=torch.float64), 'v1')
    assert cams.cam2img.shape == (2, 3, 3) and cams.flip.tolist() == [False, True] and cams.pad_hw == (H, W)
    torch.testing.assert_close(cams.img_wh, torch.tensor([[W, H]] * 2, dtype=torch.float64))
    torch.testing.assert_close(cams.img_transform[1] @ torch.tensor([10., 5., 1.], dtype=torch.float64),
                               torch.tensor([W - 10., 5., 1.], dtype=torch.float64))
    cam = cams.pnp_camera(torch.tensor([1, 0, 1]))
    assert cam.cam_mats.shape == (3, 3, 3)
    b = 200.  # default allowed border: the continuous image minus the v1 offset, widened by the border
    torch.testing.assert_close(cam.lb, torch.full((3, 2), -0.5 - b, dtype=torch.float64))
    torch.testing.assert_close(cam.ub, torch.tensor([[W - 0.5 + b, H - 0.5 + b]] * 3, dtype=torch.float64))
    assert cams.index(torch.tensor([1])).flip.tolist() == [True]
    with pytest.raises(KeyError, match='cam2img'):
        CameraBatch.from_metainfo([dict(img_shape=(H, W), ori_shape=(H, W))], torch.zeros(1), 'v1')


# ------------------------------------------------------------------------------------------------ decode
@pytest.mark.parametrize('convention', ['v1', 'v2'])
def test_decode_recovers_the_pose_of_exact_correspondences(convention):
    # x2d are K-projections in either convention (the convention only moves the camera's clamp bounds)
    corr, cams, pose = _problem(convention=convention)
    est = stage().decode(corr, cams.pnp_camera(corr.img_inds), num_iter=10, fast_mode=False, mc_seed=0)
    err = est.pose - pose
    err[:, 3] = torch.remainder(err[:, 3] + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(err, torch.zeros_like(err), atol=2e-3, rtol=0)
    assert est.pose_cov.shape == (3, 4, 4) and est.score_mc is None
    assert (torch.linalg.eigvalsh(est.pose_cov.double()) > 0).all()


def test_decode_with_mc_scoring_and_samples():
    corr, cams, pose = _problem(noise=1.0)
    ps = stage()
    camera = cams.pnp_camera(corr.img_inds)
    est = ps.decode(corr, camera, num_iter=3, mc_scoring_ratio=0.5, mc_scoring_samples=64, mc_seed=1)
    assert est.score_mc.shape == (3,) and ((est.score_mc >= 0) & (est.score_mc <= 1 + 1e-6)).all()
    s3 = torch.full((3,), 0.25)
    torch.testing.assert_close(ps.blend_score(s3, est, 0.5), (s3 * est.score_mc).sqrt())
    smp = ps.sample(corr, camera, est, torch.tensor([2, 0]), mc_samples=32, num_iter=3)
    assert smp.pose_samples.shape == (32, 2, 4)
    torch.testing.assert_close(smp.weights.sum(0), torch.ones(2))
    # the samples spread around the solution of their object
    mean = (smp.weights[..., None] * smp.pose_samples).sum(0)
    assert ((mean[:, :3] - est.pose[[2, 0], :3]).norm(dim=-1) < 1.0).all()


# -------------------------------------------------------------------------------------------------- loss
def _loss(ps, corr, cams, pose, finite_w=None):
    N = corr.num_objects
    w = torch.ones(N) if finite_w is None else finite_w
    return ps.loss(corr, cams.pnp_camera(corr.img_inds), pose, torch.zeros(N, requires_grad=True), w, w)


@pytest.mark.parametrize('detach', [True, False])
def test_detach_reg_inputs_policy(detach):
    """With ``detach_reg_inputs`` the regularisation sends no gradient to dims and the weight scale; without, it
    does."""
    corr, cams, pose = _problem(noise=0.5)
    dims, scale = corr.dims.clone().requires_grad_(), corr.scale.clone().requires_grad_()
    corr = Correspondences(corr.noc, dims, corr.x2d, corr.w2d_unit, scale, corr.img_inds)
    losses = _loss(stage(detach_reg_inputs=detach), corr, cams, pose)
    reg = losses['loss_reg_pos'] + losses['loss_reg_orient']
    g_dims, g_scale = torch.autograd.grad(reg, (dims, scale), allow_unused=True) if reg.requires_grad else (None, None)
    for g in (g_dims, g_scale):
        if detach:
            assert g is None or g.abs().sum() == 0
        else:
            assert g is not None and g.abs().sum() > 0


@pytest.mark.parametrize('detach', [True, False])
def test_detach_pose_x2d_policy(detach):
    corr, cams, pose = _problem(noise=0.5)
    x2d = corr.x2d.clone().requires_grad_()
    corr = Correspondences(corr.noc, corr.dims, x2d, corr.w2d_unit, corr.scale, corr.img_inds)
    ps = stage(detach_pose_x2d=detach, loss_reg_pos=None, loss_reg_orient=None)
    losses = _loss(ps, corr, cams, pose)
    loss = losses['loss_pose']
    g, = torch.autograd.grad(loss, x2d, allow_unused=True) if loss.requires_grad else (None,)
    assert (g is None or g.abs().sum() == 0) if detach else g.abs().sum() > 0


def test_nonfinite_object_is_excluded_and_counted():
    corr, cams, pose = _problem(noise=0.5)
    x2d = corr.x2d.clone()
    x2d[1, 3] = float('nan')
    bad = Correspondences(corr.noc, corr.dims, x2d, corr.w2d_unit, corr.scale, corr.img_inds)
    losses = _loss(stage(), bad, cams, pose)
    assert float(losses['num_nonfinite_pose']) == 1
    assert torch.isfinite(losses['loss_pose'])


def test_no_objects_zero_losses_keep_the_graph_and_update_the_norm_factor():
    corr, cams, pose = _problem(N=0)
    leaves = [t.clone().requires_grad_() for t in (corr.noc, corr.dims, corr.x2d, corr.w2d_unit, corr.scale)]
    corr = Correspondences(*leaves, corr.img_inds)
    ps = stage(learnable_rel_delta=True).train()
    losses = _loss(ps, corr, cams, pose)
    total = sum(v for k, v in losses.items() if k.startswith('loss_'))
    assert float(total) == 0
    total.backward()
    assert all(t.grad is not None for t in leaves) and ps.log_rel_delta.grad is not None
    torch.testing.assert_close(ps.loss_pose.norm_factor, torch.tensor(0.99))  # 0.99·1 + 0.01·0


# ------------------------------------------------------------------------------------------- uncertainty
def test_pose_cov_to_std_and_calibration_scaling():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 4, 4, generator=gen, dtype=torch.float64)
    cov = A @ A.transpose(-1, -2) + 0.1 * torch.eye(4, dtype=torch.float64)
    std = pose_cov_to_std(cov)
    torch.testing.assert_close(std ** 2, torch.stack([torch.diag(c) for c in cov]))
    named = pose_std_components(cov)
    torch.testing.assert_close(named['lateral_std'], std[:, 0])  # camera x
    torch.testing.assert_close(named['depth_std'], std[:, 2])  # camera z
    torch.testing.assert_close(named['yaw_std'], std[:, 3])
    scales = torch.rand(3, 4, generator=gen, dtype=torch.float64) + 0.5
    labels = torch.tensor([2, 0, 1, 2, 0])
    got = scale_pose_cov(cov, labels, scales.tolist())
    want = torch.stack([torch.diag(scales[c]) @ cv @ torch.diag(scales[c]) for c, cv in zip(labels.tolist(), cov)])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(pose_cov_to_std(got), std * scales[labels])
    # one sequence for every class
    torch.testing.assert_close(scale_pose_cov(cov, labels, [2., 2., 2., 2.]), 4 * cov)
    with pytest.raises(ValueError):
        scale_pose_cov(cov, labels, [1., 2.])
