"""v1 variant configs (spec §8.1): the synthetic v1b config trains one iteration on a tiny batch with LiDAR object
coordinates (finite losses incl. the RoI losses, finite gradient in every parameter) and predicts; the r101 variant
configs build heads with the settings §8.1 lists."""
import math
import os

import pytest
import torch
from mmdet3d.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import epropnp_det.datasets  # noqa: F401  (data preprocessor)
import epropnp_det.models  # noqa: F401

from .test_epropnp_det import ROOT, H, K, W, _sample


def _add_lidar(ds, gen, n=150):
    """LiDAR-like object coordinates: uniform points inside each box, their raw K-projections (v1) in the image."""
    x3d, x2d = [], []
    Kt = torch.tensor(K, dtype=torch.float64)
    for b in ds.gt_instances_3d.bboxes_3d.double():
        oc = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * b[:3]
        c, s = math.cos(b[6]), math.sin(b[6])
        R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
        uv = (oc @ R.T + b[3:6]) @ Kt.T
        uv = uv[:, :2] / uv[:, 2:]
        keep = (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
        x3d.append(oc[keep].float())
        x2d.append(uv[keep].float())
    ds.gt_instances_3d.x3d = x3d
    ds.gt_instances_3d.x2d = x2d
    return ds


def _build(path):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, path))
    torch.manual_seed(0)
    m = MODELS.build(cfg.model)
    m.init_weights()
    return m


@pytest.fixture(scope='module')
def v1b_model():
    return _build('configs/epropnp_det_r18_synthetic_v1b.py')


def _data(model, training):
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(3)
    samples = [_add_lidar(_sample([[4., 1.6, 1.9, 1., 0.5, 12., 0.3], [0.7, 1.7, 0.7, -2., 0.6, 8., -1.],
                                   [4.2, 1.5, 1.8, 2.2, 0.5, 13., 1.2]], [0, 7, 0]), gen),
               _add_lidar(_sample([[4.5, 1.7, 2., -1.5, 0.6, 10., 2.]], [0], flip=True), gen)]
    data = dict(inputs=dict(img=[torch.randint(0, 255, (3, H, W)).float() for _ in samples]), data_samples=samples)
    return model.data_preprocessor(data, training=training)


def test_synthetic_v1b_one_training_iteration(v1b_model):
    model = v1b_model
    head = model.bbox_head
    assert head.roi_aux is not None and head.roi_aux.roi_shape == (14, 14) and head.roi_aux.regr_version == 'v1'
    assert head.cls_emb is not None and head.loss_pose.loss_weight == 0.5
    model.train()
    data = _data(model, True)
    assert data['inputs']['img_dense_x2d'] is not None  # RoI x2d targets come from the dense map
    buf0 = float(head.roi_aux.loss_proj.mean_inv_std)
    losses = model(**data, mode='loss')
    for k in ('loss_proj', 'loss_regr'):
        assert k in losses and float(losses[k].detach()) > 0, k
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k
    assert float(head.roi_aux.loss_proj.mean_inv_std) != buf0  # adaptive weight updated
    loss, _ = model.parse_losses(losses)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert head.roi_aux.corr_reg_aux.weight.grad.abs().sum() > 0


def test_synthetic_v1b_predicts(v1b_model):
    model = v1b_model
    model.eval()
    cfg = model.bbox_head.test_cfg
    saved = dict(cfg)
    # random weights: take the first candidates regardless of score; few of them keep the PnP batch small (no
    # compilation of the batched solver)
    cfg.update(score_thr=0.0, max_per_img=8)
    with torch.no_grad():
        out = model(**_data(model, False), mode='predict')
    cfg.update(saved)
    assert len(out) == 2 and sum(len(ds.pred_instances_3d.scores_3d) for ds in out) > 0
    for ds in out:
        assert torch.isfinite(ds.pred_instances_3d.bboxes_3d.tensor).all()


def test_loss_regr_without_lidar_fields_raises(v1b_model):
    model = v1b_model
    model.train()
    data = _data(model, True)
    for ds in data['data_samples']:
        del ds.gt_instances_3d.x3d
    with pytest.raises(ValueError, match='LiDAR object coordinates'):
        model(**data, mode='loss')


def _head_cfg(path):
    cfg = Config.fromfile(os.path.join(ROOT, path))
    return cfg


@pytest.mark.parametrize('path', ['configs/epropnp_det_r101.py', 'configs/epropnp_det_r101_coord_regr.py',
                                  'configs/epropnp_det_r101_coord_regr_trainval.py',
                                  'configs/epropnp_det_r101_no_reproj.py', 'configs/epropnp_det_r101_v1b.py'])
def test_r101_variant_heads_build_with_the_spec_settings(path):
    init_default_scope('mmdet3d')
    cfg = _head_cfg(path)
    head_cfg = cfg.model.bbox_head
    head_cfg.train_cfg = cfg.model.train_cfg
    head = MODELS.build(head_cfg)
    name = os.path.basename(path)
    v1b = 'v1b' in name
    if 'no_reproj' in name:
        assert head.roi_aux is None
    else:
        aux = head.roi_aux
        assert aux.roi_shape == ((14, 14) if v1b else (28, 28))
        assert aux.loss_proj.loss_weight == 0.5 and aux.loss_proj.adaptive_weight and aux.loss_proj.delta is None
        if 'coord_regr' in name or v1b:
            assert aux.regr_version == 'v1' and aux.loss_regr.beta == 0.05 and aux.loss_regr.loss_weight == 0.25
        else:
            assert aux.loss_regr is None
    assert head.pnp.mc_samples == (128 if v1b else 512)
    assert head.loss_pose.loss_weight == (0.5 if v1b else 0.15)
    assert (head.cls_emb is not None) == v1b
    assert head.sampler.num_points == (16 if v1b else 32) and head.output_stride == (8 if v1b else 4)
    assert cfg.model.backbone.out_indices == ((1, 2, 3) if v1b else (0, 1, 2, 3))
    assert cfg.train_dataloader.batch_size == (6 if v1b else 3)
    if 'trainval' in name:
        ds = cfg.train_dataloader.dataset
        assert ds.type == 'ConcatDataset'
        assert [d.ann_file for d in ds.datasets] == ['nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl']
        assert all(d.pipeline == cfg.train_pipeline for d in ds.datasets)
