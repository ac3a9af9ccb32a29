"""v1 variant configs (docs/method.md §8.1): the synthetic v1b config trains one iteration on a tiny batch with LiDAR
object coordinates (finite losses incl. the RoI losses, finite gradient in every parameter) and predicts; the r101
variant configs build heads with the settings docs/method.md §8.1 lists."""
import copy
import math
import os

import pytest
import torch
from mmdet3d.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import epropnp_det.datasets  # noqa: F401  (data preprocessor)
import epropnp_det.models  # noqa: F401

from ._helpers import ROOT, backward_and_check_grads, build_detector, overfit_one_batch, preprocess
from .test_epropnp_det import H, K, W, _sample


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


@pytest.fixture(scope='module')
def v1b_model():
    return build_detector('configs/epropnp_det_r18_synthetic_v1b.py')


def _data(model, training):
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(3)
    samples = [_add_lidar(_sample([[4., 1.6, 1.9, 1., 0.5, 12., 0.3], [0.7, 1.7, 0.7, -2., 0.6, 8., -1.],
                                   [4.2, 1.5, 1.8, 2.2, 0.5, 13., 1.2]], [0, 7, 0]), gen),
               _add_lidar(_sample([[4.5, 1.7, 2., -1.5, 0.6, 10., 2.]], [0], flip=True), gen)]
    return preprocess(model, samples, training)


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
    backward_and_check_grads(model, losses)
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


def test_synthetic_v1b_trains_on_pipeline_data_with_lidar_targets(v1b_model):
    """End to end through the real train pipeline of the synthetic v1b config (generated nuScenes-format data):
    LiDAR object coordinates are packed per gt, survive collation and the preprocessor, and give valid RoI cells."""
    from mmengine.dataset import pseudo_collate

    from tests.test_datasets.tiny_nuscenes import build_dataset, tiny_nuscenes_root
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/epropnp_det_r18_synthetic_v1b.py'))
    ds = build_dataset(tiny_nuscenes_root(), cfg.train_pipeline)
    items = []
    for i in range(len(ds)):
        item = ds.pipeline(copy.deepcopy(ds.get_data_info(i)))
        if item is not None and sum(len(x) for x in item['data_samples'].gt_instances_3d.x3d) > 50:
            items.append(item)
        if len(items) == 2:
            break
    assert len(items) == 2
    model = v1b_model
    model.train()
    data = model.data_preprocessor(pseudo_collate(items), training=True)
    head = model.bbox_head
    seen = {}
    orig_targets, orig_loss = head.roi_aux.regr_targets, head.roi_aux.loss

    def spy_targets(*args, **kwargs):
        seen['targets'] = orig_targets(*args, **kwargs)
        return seen['targets']

    def spy_loss(rois, boxes3d, *args, **kwargs):
        seen['boxes3d'] = boxes3d
        return orig_loss(rois, boxes3d, *args, **kwargs)
    head.roi_aux.regr_targets, head.roi_aux.loss = spy_targets, spy_loss
    try:
        losses = model(**data, mode='loss')
    finally:
        del head.roi_aux.regr_targets, head.roi_aux.loss
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert float(losses['loss_regr'].detach()) > 0 and float(losses['loss_proj'].detach()) != 0
    tgt, valid = seen['targets']
    assert valid.any(1).all()  # every active gt has LiDAR cells
    half = seen['boxes3d'][:, None, :3] / 2  # targets are means of points inside the gt box: |x3d| <= dims / 2
    assert ((tgt.abs() <= half + 1e-4) | ~valid[..., None]).all()


def test_trainval_config_concatenates_train_and_val():
    from mmdet3d.registry import DATASETS

    from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/epropnp_det_r101_coord_regr_trainval.py'))
    ds_cfg = cfg.train_dataloader.dataset
    lens = []
    for d in ds_cfg.datasets:
        d.update(data_root=tiny_nuscenes_root(), metainfo=dict(d.metainfo, version='v1.0-mini'), pipeline=[])
        lens.append(len(DATASETS.build(copy.deepcopy(d))))
    concat = DATASETS.build(ds_cfg)
    assert len(concat) == sum(lens) and all(n > 0 for n in lens)


@pytest.mark.slow
@pytest.mark.parametrize('path', ['configs/epropnp_det_r101_coord_regr.py', 'configs/epropnp_det_r101_v1b.py'])
def test_r101_variant_one_training_iteration(path):
    """The paper-size variants (ResNet-101-DCN, 256-channel head) on a tiny batch with LiDAR coordinates: finite
    losses incl. loss_proj / loss_regr and a finite gradient in every trainable parameter."""
    m = build_detector(path, pretrained=False)
    m.train()
    losses = m(**_data(m, True), mode='loss')
    assert float(losses['loss_regr'].detach()) > 0 and float(losses['loss_proj'].detach()) != 0
    backward_and_check_grads(m, losses)


@pytest.mark.slow
def test_synthetic_v1b_overfits_the_roi_losses(v1b_model):
    """Overfitting one batch lowers the reprojection and coordinate-regression losses: the RoI branch learns."""
    first, last, history = overfit_one_batch(v1b_model, _data, ('loss_proj', 'loss_regr'), steps=40)
    assert last[0] < first[0] - 0.5, history  # NLL (nats, x0.5 weight, adaptive scaling)
    assert last[1] < 0.5 * first[1], history
