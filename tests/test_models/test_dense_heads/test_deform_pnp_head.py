import math

import numpy as np
import pytest
import torch
from mmdet3d.structures import CameraInstance3DBoxes, Det3DDataSample
from mmengine.structures import InstanceData

from epropnp_det.models.dense_heads import NUSCENES_CLS_ATTRS, EProPnPDeformPnPHead
from epropnp_det.models.utils import project_boxes_2d

K = np.array([[200., 0., 96.], [0., 200., 48.], [0., 0., 1.]])
W, H = 192, 96


def tiny_head(**kw):
    cfg = dict(num_classes=10, in_channels=16, strides=(4, 8, 16, 32), output_stride=4, dense_lvl_range=(0, 3),
               det_lvl_range=(1, 4), embed_dims=32, num_heads=4, num_points=4,
               fcos_head=dict(feat_channels=16, cls_branch=(16,), centerness_branch=(8,), offset_branch=(16,),
                              emb_branch=(16,), regress_ranges=((-1, 32), (32, 64), (64, 1e8)),
                              norm_cfg=dict(type='GN', num_groups=4)),
               dense_branch=dict(lvl_feat_channels=(16, 8), norm_cfg=dict(type='GN', num_groups=4),
                                 positional_encoding=dict(type='EProPnPSinePositionalEncoding', num_feats=16)),
               sampler=dict(ffn_cfg=dict(feedforward_channels=64, ffn_drop=0.)),
               point_subnet=dict(feedforward_channels=32, ffn_drop=0.),
               pnp=dict(mc_samples=32, num_iter=4, solver_cfg=dict(num_iter=5)),
               train_cfg=dict(num_obj_samples_per_img=6))
    cfg.update(kw)
    torch.manual_seed(0)
    head = EProPnPDeformPnPHead(**cfg)
    head.init_weights()
    return head


def sample(boxes, labels, flip=False):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 7)
    T = np.eye(3)
    if flip:
        T = np.array([[-1., 0, W], [0, 1, 0], [0, 0, 1]])
    b2d, _ = project_boxes_2d(boxes.double(), torch.from_numpy(K).expand(len(boxes), 3, 3),
                              torch.tensor([[W, H]], dtype=torch.float64).expand(len(boxes), 2))
    if flip:
        b2d = torch.stack((W - b2d[:, 2], b2d[:, 1], W - b2d[:, 0], b2d[:, 3]), -1)
    ds = Det3DDataSample()
    ds.set_metainfo(dict(cam2img=K, img_transform=T, img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                         batch_input_shape=(H, W), flip=flip))
    g3 = InstanceData()
    g3.bboxes_3d = boxes
    g3.labels_3d = torch.tensor(labels, dtype=torch.long)
    g3.attr_labels = torch.tensor([5] * len(labels), dtype=torch.long)
    g3.velocities = torch.ones(len(labels), 2)
    g3.velocities_valid = torch.ones(len(labels), dtype=torch.bool)
    ds.gt_instances_3d = g3
    g2 = InstanceData()
    g2.bboxes = b2d.float()
    g2.labels = torch.tensor(labels, dtype=torch.long)
    ds.gt_instances = g2
    return ds


def feats(B=2):
    torch.manual_seed(1)
    return [torch.randn(B, 16, H // s, W // s, requires_grad=True) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize('share', [False, True])
def test_one_training_iteration_finite_losses_and_grads(share):
    head = tiny_head(train_cfg=dict(num_obj_samples_per_img=6, share_reg_solve=share),
                     loss_pose=dict(loss_weight=0.15, momentum=0.1)).train()
    assert head.pose_stage.share_reg_solve == share
    # start the norm factor away from the batch statistic so that its momentum update is visible
    head.pose_stage.loss_pose.norm_factor.fill_(3.0)
    # the scale branch starts at zero (every scale exactly 1); spread the scales so that the statistic's
    # importance weighting and its 2N divisor are both visible in the result
    with torch.no_grad():
        torch.manual_seed(3)
        head.object_branches.scale_branch.bias.normal_(0, 0.3)
        head.object_branches.scale_branch.weight.normal_(0, 0.3)
    captured = {}
    orig_loss = head.pose_stage.loss

    def spy(corr, camera, pose_gt, score_logit, weights, uniform_weights):
        captured.update(scale=corr.scale.detach().clone(), weights=weights.detach().clone())
        return orig_loss(corr, camera, pose_gt, score_logit, weights, uniform_weights)
    head.pose_stage.loss = spy
    samples = [sample([[4., 1.6, 1.9, 1., 0.5, 10., 0.3], [1., 1.7, 0.7, -2., 0.6, 7., -1.]], [0, 7]),
               sample([[4., 1.6, 1.9, -1., 0.5, 9., 2.0]], [0], flip=True)]
    losses = head.loss(feats(), samples)
    expected = {'loss_cls', 'loss_rp', 'loss_centerness', 'loss_dim', 'loss_pose', 'loss_score', 'loss_reg_pos',
                'loss_reg_orient', 'loss_velo', 'loss_attr', 'ate', 'norm_factor', 'num_dropped_centers',
                'num_nonfinite_pose', 'num_nonfinite_objects'}
    assert set(losses) == expected
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k
    for k in ('loss_cls', 'loss_rp', 'loss_centerness', 'loss_dim', 'loss_score', 'loss_velo',
              'loss_attr'):
        assert losses[k] > 0, k
    assert losses['num_dropped_centers'] == 0
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    bad = [n for n, p in head.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad
    # the norm factor moved by one momentum step towards the batch statistic, the importance-weighted mean of the
    # predicted weight scales over 2N scale entries (recomputed here from the captured scales and weights)
    scale, w = captured['scale'].double(), captured['weights'].double()
    batch = (scale * w[:, None]).sum() / (2 * scale.shape[0])
    want = 0.9 * 3.0 + 0.1 * batch
    assert abs(float(want) - 3.0) > 0.05  # a step that did not happen would be seen
    # an unweighted mean would be seen (the scales vary across objects and the weights are not uniform)
    assert abs(float(scale.mean() - batch)) * 0.1 > 1e-3 * float(want)
    torch.testing.assert_close(head.pose_stage.loss_pose.norm_factor.double(), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(losses['norm_factor'].double(), want, rtol=1e-6, atol=0)
    assert losses['loss_pose'] != 0 and losses['num_nonfinite_pose'] == 0


def test_share_reg_solve_is_an_explicit_option(monkeypatch):
    """``share_reg_solve`` (train_cfg or pose_stage option, default True) alone decides whether the derivative
    regularisation takes its solution from the pose loss's solve call (``pose_opt`` given) or solves itself."""
    import epropnp_det.models.task_modules.pnp_pose as pnp_pose
    assert tiny_head().pose_stage.share_reg_solve
    assert not tiny_head(train_cfg=dict(num_obj_samples_per_img=6, share_reg_solve=False)).pose_stage.share_reg_solve
    assert not tiny_head(pose_stage=dict(share_reg_solve=False)).pose_stage.share_reg_solve
    seen = []
    orig = pnp_pose.derivative_regularization

    def spy(*args, pose_opt=None, **kwargs):
        seen.append(pose_opt is not None)
        return orig(*args, pose_opt=pose_opt, **kwargs)
    monkeypatch.setattr(pnp_pose, 'derivative_regularization', spy)
    samples = [sample([[4., 1.6, 1.9, 1., 0.5, 10., 0.3]], [0]), sample([[4., 1.6, 1.9, -1., 0.5, 9., 2.0]], [0])]
    for share in (True, False):
        head = tiny_head(train_cfg=dict(num_obj_samples_per_img=6, share_reg_solve=share)).train()
        head.loss(feats(), samples)
    assert seen == [True, False]


def test_training_without_objects_keeps_every_parameter_in_the_graph():
    head = tiny_head().train()
    samples = [sample(np.zeros((0, 7)), []), sample(np.zeros((0, 7)), [])]
    losses = head.loss(feats(), samples)
    assert losses['loss_cls'] > 0 and losses['loss_pose'] == 0
    # no samples: the batch statistic 0 still enters the norm-factor EMA (momentum 0.01): 1 → 0.99·1 + 0.01·0
    torch.testing.assert_close(head.pose_stage.loss_pose.norm_factor, torch.tensor(0.99))
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_predict_returns_valid_instances():
    head = tiny_head(test_cfg=dict(score_thr=0.0, max_per_img=8, mc_samples=16)).eval()
    samples = [sample(np.zeros((0, 7)), []), sample(np.zeros((0, 7)), [], flip=True)]
    with torch.no_grad():
        res = head.predict(feats(), samples)
    assert len(res) == 2
    for r in res:
        n = len(r.scores_3d)
        assert isinstance(r.bboxes_3d, CameraInstance3DBoxes) and r.bboxes_3d.tensor.shape == (n, 9)
        assert r.labels_3d.shape == (n,) and r.attr_labels.shape == (n,) and r.pose_cov.shape == (n, 4, 4)
        assert torch.isfinite(r.bboxes_3d.tensor).all() and (r.scores_3d >= 0).all()
        assert (r.scores_3d[:-1] >= r.scores_3d[1:]).all()  # sorted by NMS
        wh = r.bboxes_2d[:, 2:] - r.bboxes_2d[:, :2]
        assert (wh >= 4).all()
        if n:
            assert r.pose_samples.shape == (n, 16, 4)
            torch.testing.assert_close(r.pose_sample_weights.sum(-1), torch.ones(n))
            # attributes restricted to the class's set
            for lab, a in zip(r.labels_3d.tolist(), r.attr_labels.tolist()):
                assert a in NUSCENES_CLS_ATTRS[lab]
    assert sum(len(r.scores_3d) for r in res) > 0


def test_predict_by_feat_recovers_a_consistent_object():
    """Exact correspondences of a known box (v1: K-projections are integer pixel centres) → the PnP pose, the
    mmdet3d box (bottom centre) and the projected 2D box (+0.5 to continuous px) come out right."""
    from epropnp_det.models.dense_heads.fcos_emb_head import FCOSCandidates
    from epropnp_det.models.utils import box_corners
    head = tiny_head().eval()
    box = torch.tensor([[4., 1.6, 1.9, 1.0, 0.6, 12., 0.4]], dtype=torch.float64)
    g = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    noc = torch.stack(torch.meshgrid(g, g, g, indexing='ij'), -1).reshape(1, -1, 3)  # (1, 64, 3)
    x3d = noc * box[:, None, :3]
    c, s = torch.cos(box[0, 6]), torch.sin(box[0, 6])
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    Kt = torch.from_numpy(K)
    uvw = (x3d[0] @ R.T + box[0, 3:6]) @ Kt.T
    x2d = (uvw[:, :2] / uvw[:, 2:])[None]
    out = dict(noc=noc.float(), x2d=x2d.float(), w2d=torch.full((1, 64, 2), 1 / 64.), scale=torch.ones(1, 2) * 50,
               dims=box[:, :3].float(), score_logit=torch.zeros(1), velo=torch.tensor([[1., 2.]]),
               attr_logits=torch.arange(9.)[None])
    cand = FCOSCandidates(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0.8]),
                          torch.zeros(1, 32), torch.zeros(1, 2), torch.tensor([8.]))
    cams = head.cameras([sample(np.zeros((0, 7)), []).metainfo], torch.zeros(1))
    torch.manual_seed(0)
    res = head.decode_objects(out, cand, cams, 1)[0]
    assert len(res.scores_3d) == 1
    bottom = box[0, 3:6].clone()
    bottom[1] += box[0, 1] / 2
    t = res.bboxes_3d.tensor[0].double()
    torch.testing.assert_close(t[:3], bottom, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.remainder(t[6] - box[0, 6] + math.pi, 2 * math.pi) - math.pi,
                               torch.tensor(0., dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(t[7:9], torch.tensor([1., 2.], dtype=torch.float64))
    torch.testing.assert_close(res.scores_3d, torch.tensor([0.8 * 0.5]))
    assert res.attr_labels.tolist() == [7]  # car: best of {moving, parked, stopped} = index 7 (largest logit)
    uv = box_corners(box) @ Kt.T
    uv = uv[0, :, :2] / uv[0, :, 2:] + 0.5
    ref2d = torch.cat((uv.min(0).values.clamp(min=0), torch.minimum(uv.max(0).values, torch.tensor([W, H]))))
    torch.testing.assert_close(res.bboxes_2d[0].double(), ref2d, atol=1e-3, rtol=0)
    # the pose uncertainty of the box: std = sqrt(diag(cov)); lateral = camera x, depth = camera z
    std = res.pose_cov[0].diagonal().sqrt()
    torch.testing.assert_close(res.pose_std[0], std)
    torch.testing.assert_close(torch.stack((res.lateral_std[0], res.depth_std[0], res.yaw_std[0])), std[[0, 2, 3]])
    assert (std > 0).all() and torch.isfinite(std).all()


def test_pose_cov_scale_and_uncertainty_score_options():
    """``test_cfg.pose_cov_scale`` multiplies the std of axis i of class c by s[c][i] (cov_ij · s_i · s_j), and
    ``score_uncertainty`` lowers the detection score by the calibrated spread (here the 'exp' form:
    ``score · exp(−sqrt(σx² + σz²) / σ_ref)``), both recomputed here from the uncalibrated output."""
    from epropnp_det.models.dense_heads.fcos_emb_head import FCOSCandidates
    box = torch.tensor([[4., 1.6, 1.9, 1.0, 0.6, 12., 0.4]], dtype=torch.float64)
    g = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    noc = torch.stack(torch.meshgrid(g, g, g, indexing='ij'), -1).reshape(1, -1, 3)
    c, s = torch.cos(box[0, 6]), torch.sin(box[0, 6])
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    uvw = ((noc * box[:, None, :3])[0] @ R.T + box[0, 3:6]) @ torch.from_numpy(K).T
    noise = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x2d = (uvw[:, :2] / uvw[:, 2:])[None] + noise
    out = dict(noc=noc.float(), x2d=x2d.float(), w2d=torch.full((1, 64, 2), 1 / 64.), scale=torch.ones(1, 2) * 5,
               dims=box[:, :3].float(), score_logit=torch.zeros(1), velo=None, attr_logits=None)
    cand = FCOSCandidates(torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), torch.tensor([0.8]),
                          torch.zeros(1, 32), torch.zeros(1, 2), torch.tensor([8.]))
    scales = [[1., 1., 1., 1.]] * 3 + [[2., 1., 3., 0.5]] + [[1., 1., 1., 1.]] * 6  # class 3 calibrated
    runs = {}
    exp_score = dict(type='exp', alpha=1., ref_std=2.)
    for name, extra in (('raw', {}), ('scaled', dict(pose_cov_scale=scales)),
                        ('scored', dict(pose_cov_scale=scales, score_uncertainty=exp_score))):
        head = tiny_head(test_cfg=dict(mc_seed=0, **extra)).eval()
        cams = head.cameras([sample(np.zeros((0, 7)), []).metainfo], torch.zeros(1))
        runs[name] = head.decode_objects(out, cand, cams, 1)[0]
    raw, scaled, scored = runs['raw'].pose_cov[0].double(), runs['scaled'].pose_cov[0].double(), runs['scored']
    sv = torch.tensor(scales[3], dtype=torch.float64)
    torch.testing.assert_close(scaled, raw * sv[:, None] * sv[None, :], rtol=1e-6, atol=0)
    torch.testing.assert_close(runs['scaled'].pose_std[0].double(), raw.diagonal().sqrt() * sv, rtol=1e-6, atol=0)
    torch.testing.assert_close(runs['scaled'].scores_3d, runs['raw'].scores_3d)
    sigma_bev = (scaled[0, 0] + scaled[2, 2]).sqrt()
    want = runs['raw'].scores_3d.double() * torch.exp(-sigma_bev / 2.)
    assert float(want) < 0.99 * float(runs['raw'].scores_3d)  # the option visibly lowers the score
    torch.testing.assert_close(scored.scores_3d.double(), want, rtol=1e-6, atol=0)
