"""EPro-PnP-Det v2 on CPU (configs/epropnp_det_r18_synthetic_v2.py): one training iteration on a tiny batch with
LiDAR points (finite losses, the v2 losses present, a finite gradient in every trainable parameter), prediction with
and without Monte-Carlo scoring, and flip TTA."""

import numpy as np
import pytest
import torch

from epropnp_det.ops.pnp.rotation import yaw_to_rot_mat
from tests.test_models.test_detectors._helpers import backward_and_check_grads, build_detector, preprocess
from tests.test_models.test_detectors.test_epropnp_det import H, K, W, _sample

BOXES = (([[4., 1.6, 1.9, 1., 0.5, 12., 0.3], [0.7, 1.7, 0.7, -2., 0.6, 8., -1.]], [0, 7], False),
         ([[4.5, 1.7, 2., -1.5, 0.6, 10., 2.]], [0], True))


def _lidar(boxes, gen):
    """LiDAR-like points: 40 inside each box (object coords x3d, their K-projections x2d) plus ground points;
    ``cam_pts_uvz`` = all of them inside the canvas (v2 convention: K-projections are continuous pixels)."""
    k = torch.as_tensor(K, dtype=torch.float64)
    x3d, x2d, cam = [], [], []
    for b in torch.tensor(boxes, dtype=torch.float64).reshape(-1, 7):
        local = (torch.rand(40, 3, generator=gen, dtype=torch.float64) - 0.5) * b[:3]
        p = local @ yaw_to_rot_mat(b[6]).T + b[3:6]
        uv = (p @ k.T)[:, :2] / p[:, 2:3]
        x3d.append(local.float())
        x2d.append(uv.float())
        cam.append(torch.cat((uv, p[:, 2:3]), 1))
    ground = torch.stack((torch.rand(300, generator=gen, dtype=torch.float64) * 20 - 10, torch.full((300,), 1.5,
                          dtype=torch.float64), torch.rand(300, generator=gen, dtype=torch.float64) * 30 + 3), 1)
    uv = (ground @ k.T)[:, :2] / ground[:, 2:3]
    cam.append(torch.cat((uv, ground[:, 2:3]), 1))
    cam = torch.cat(cam)
    cam = cam[(cam[:, 0] >= 0) & (cam[:, 0] < W) & (cam[:, 1] >= 0) & (cam[:, 1] < H)]
    return x3d, x2d, cam.float()


def _data(model, training, flip_all=None):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(2)
    samples = []
    for boxes, labels, flip in BOXES:
        ds = _sample(boxes, labels, flip=flip if flip_all is None else flip_all)
        x3d, x2d, cam = _lidar(boxes, gen)
        ds.gt_instances_3d.x3d, ds.gt_instances_3d.x2d = x3d, x2d
        ds.cam_pts_uvz = cam
        samples.append(ds)
    return preprocess(model, samples, training, generator=gen)


@pytest.fixture(scope='module')
def model():
    return build_detector('configs/epropnp_det_r18_synthetic_v2.py')


def test_v2_head_options(model):
    head = model.bbox_head
    assert head.pixel_convention == 'v2' and head.cls_emb is not None
    assert head.fcos_head.with_bbox2d and not head.fcos_head.offset_cls_agnostic
    assert head.depth_branch is not None and head.depth_branch.loss_depth.log_sigma is not None
    ps = head.pose_stage
    assert not ps.detach_pose_x2d and not ps.detach_reg_inputs and not head.point_subnet.detach_pos_x2d
    assert head.loss_pose.loss_weight == 0.5
    assert not model.data_preprocessor.with_dense_x2d
    assert head.roi_aux.regr_version == 'v2' and head.roi_aux.loss_proj.delta == 2.0
    assert head.roi_aux.loss_regr.log_sigma is not None


def test_v2_one_training_iteration(model):
    model.train()
    data = _data(model, True)
    losses = model(**data, mode='loss')
    for key in ('loss_bbox2d', 'loss_depth', 'loss_pose', 'loss_reg_pos', 'loss_reg_orient', 'loss_proj',
                'loss_regr'):
        assert key in losses, key
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k
    assert float(losses['num_depth_pts']) > 100
    model.zero_grad()
    backward_and_check_grads(model, losses)
    head = model.bbox_head
    assert head.depth_branch.loss_depth.log_sigma.grad.abs() > 0
    assert head.fcos_head.conv_bbox.weight.grad.abs().sum() > 0


def test_v2_predict_with_and_without_mc_scoring(model):
    model.eval()
    head = model.bbox_head
    head.test_cfg.update(score_thr=0.0, max_per_img=20)
    try:
        data = _data(model, False)
        torch.manual_seed(0)
        with torch.no_grad():
            plain = model(**data, mode='predict')
        head.test_cfg.update(mc_scoring_ratio=1.0, mc_scoring_samples=32)
        captured = {}
        orig = head.pnp.monte_carlo_forward

        def spy(*args, **kw):
            captured['mc'] = orig(*args, **kw)
            return captured['mc']

        head.pnp.monte_carlo_forward = spy
        with torch.no_grad():
            mc = model(**_data(model, False), mode='predict')
    finally:
        head.pnp.monte_carlo_forward = orig
        head.test_cfg.update(score_thr=0.04, max_per_img=100, mc_scoring_ratio=0.0, mc_scoring_samples=64)
    assert sum(len(d.pred_instances_3d.scores_3d) for d in plain) > 0
    assert 'depth_map' not in plain[0].pred_instances_3d.metainfo
    assert captured['mc'].logw.shape[0] == 32
    for d in mc:
        p = d.pred_instances_3d
        assert torch.isfinite(p.bboxes_3d.tensor).all()
        assert ((p.score3d >= 0) & (p.score3d <= 1)).all()
        assert (p.scores_3d <= p.scores_2d + 1e-6).all()
    # with ratio 1 the 3D score IS the posterior te score of the MC samples (recomputed from the captured run)
    from epropnp_det.models.utils.mc_scoring import mc_te_score
    ref = mc_te_score(captured['mc'].pose_samples, captured['mc'].logw, captured['mc'].pose_opt)
    got = torch.cat([d.pred_instances_3d.score3d for d in mc])
    assert all(torch.isclose(ref, g, atol=1e-6).any() for g in got)


def test_v2_flip_tta(model):
    from epropnp_det.models.detectors import EProPnPFlipTTAModel
    model.eval()
    head = model.bbox_head
    head.test_cfg.update(score_thr=0.0, max_per_img=10)
    torch.manual_seed(3)
    img = torch.randint(0, 255, (3, H, W)).float()
    views = dict(inputs=[dict(img=[img]), dict(img=[img.flip(-1)])],
                 data_samples=[[_sample(np.zeros((0, 7)), [])], [_sample(np.zeros((0, 7)), [], flip=True)]])
    try:
        with torch.no_grad():
            res = EProPnPFlipTTAModel(module=model).test_step({k: [v[i] for i in range(2)] for k, v in views.items()})
    finally:
        head.test_cfg.update(score_thr=0.04, max_per_img=100)
    assert len(res) == 1 and not res[0].metainfo['flip']
    p = res[0].pred_instances_3d
    assert len(p.scores_3d) > 0 and torch.isfinite(p.bboxes_3d.tensor).all()


def test_v2_gradient_paths_vs_v1_detaching(model):
    """docs/method.md §10.8: v2 feeds an undetached x2d to the pose loss and lets the derivative regularisation reach
    dims; the v1 settings (pose stage detach_pose_x2d / detach_reg_inputs True) cut exactly these paths."""
    head = model.bbox_head
    model.train()
    seen = []
    orig = head.pnp.monte_carlo_forward

    def spy(x3d, x2d, *args, **kw):
        seen.append(x2d.requires_grad)
        return orig(x3d, x2d, *args, **kw)

    head.pnp.monte_carlo_forward = spy
    grads = []
    try:
        for detach in (False, True):
            head.pose_stage.detach_pose_x2d = head.pose_stage.detach_reg_inputs = detach
            torch.manual_seed(0)
            losses = model(**_data(model, True), mode='loss')
            g, = torch.autograd.grad(losses['loss_reg_pos'], head.object_branches.dim_branch.weight,
                                     allow_unused=True)
            grads.append(g)
    finally:
        head.pnp.monte_carlo_forward = orig
        head.pose_stage.detach_pose_x2d = head.pose_stage.detach_reg_inputs = False
    assert seen == [True, False]
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None or grads[1].abs().sum() == 0


@pytest.mark.slow
def test_r101_v2_config_one_training_iteration():
    """The paper-size v2 model (ResNet-101-DCN, 256-channel head, 16 points, 128 MC samples, depth / box / RoI
    branches) on the tiny batch: finite losses and a finite gradient in every trainable parameter."""
    m = build_detector('configs/epropnp_det_r101_v2.py', pretrained=False)
    m.train()
    losses = m(**_data(m, True), mode='loss')
    assert {'loss_depth', 'loss_bbox2d', 'loss_proj', 'loss_regr'} <= set(losses)
    backward_and_check_grads(m, losses)


def test_v2_depth_view(model):
    model.eval()
    head = model.bbox_head
    head.test_cfg['pred_depth'] = True
    try:
        with torch.no_grad():
            out = model(**_data(model, False), mode='predict')
    finally:
        head.test_cfg['pred_depth'] = False
    s = head.output_stride
    for d in out:
        depth = d.pred_instances_3d.metainfo['depth_map']
        assert depth.shape == (H // s, W // s) and torch.isfinite(depth).all()
