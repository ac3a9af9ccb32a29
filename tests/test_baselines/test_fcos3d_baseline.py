"""configs/baselines/fcos3d_r18_synthetic.py on a tiny generated dataset (400×225 px, 3 scenes × 2 keyframes):
train-pipeline geometry (centres/depths/2D boxes consistent with the resized+flipped K), one training iteration
(finite losses, finite gradients in every trainable parameter, parameters move), prediction format, and the
project's metric scoring mmdet3d-standard ``CameraInstance3DBoxes`` without an adapter (GT as predictions → mAP 1)."""
import copy
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'baselines', 'fcos3d_r18_synthetic.py')
sys.path.insert(0, osp.join(REPO, 'tools', 'benchmarks'))

from _bench_common import load_config  # noqa: E402
from detector_speed import first_train_batch  # noqa: E402


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


@pytest.fixture(scope='module')
def cfg(root):
    return load_config(CONFIG, data_root=root)


SMALL = (320, 180)  # model tests run at half the config's 640x360 to stay fast on 2 shared cores


@pytest.fixture(scope='module')
def train_batch(cfg):
    """One batch of 2 from the config's train pipeline, resized to SMALL instead of 640x360."""
    cfg = copy.deepcopy(cfg)
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'Resize3D']
    assert len(resize) == 1 and tuple(resize[0]['scale']) == tuple(cfg.input_size)
    resize[0]['scale'] = SMALL
    torch.manual_seed(0)
    np.random.seed(0)
    return first_train_batch(cfg, batch_size=2)


def build_model(cfg):
    from mmdet3d.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_config_matches_epropnp_input_scale(cfg):
    """Same resize target as the EPro-PnP synthetic data config; r18 backbone, light head, AdamW budget."""
    from mmengine.config import Config
    base = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets', 'synthetic_nus_mono3d.py'))
    assert tuple(cfg.input_size) == tuple(base.input_size)
    assert cfg.model.backbone.depth == 18 and cfg.model.bbox_head.feat_channels <= 128
    assert cfg.train_cfg.max_iters == cfg.max_iters and cfg.val_evaluator.type == 'EProPnPNuScenesMetric'


def test_train_pipeline_geometry(cfg):
    """After Resize3D + RandomFlip3D, centers_2d = K' · gravity centre (the packed, resized/flipped cam2img),
    depths = its z, and the 2D boxes lie in the resized image (pixels)."""
    from mmdet3d.registry import DATASETS
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds = DATASETS.build(ds_cfg)
    np.random.seed(1)
    checked = 0
    for i in range(min(len(ds), 8)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        if len(g.labels_3d) == 0:
            continue
        h, w = s.img_shape
        assert (h, w) == (360, 640)
        K = np.asarray(s.cam2img, dtype=np.float64)[:3, :3]
        c = g.bboxes_3d.gravity_center.numpy().astype(np.float64)
        uvz = c @ K.T
        uv = uvz[:, :2] / uvz[:, 2:3]
        np.testing.assert_allclose(g.centers_2d.numpy(), uv, atol=1e-2)
        np.testing.assert_allclose(g.depths.numpy(), c[:, 2], rtol=1e-5)
        b = s.gt_instances.bboxes.numpy()
        assert (b[:, 0] >= -1e-3).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
        checked += len(uv)
    assert checked > 0


def test_one_training_iteration(cfg, train_batch):
    from mmengine.optim import build_optim_wrapper
    torch.set_num_threads(2)
    model = build_model(cfg)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    data = model.data_preprocessor(copy.deepcopy(train_batch), True)
    assert data['inputs']['imgs'].shape[-2:] == (192, 320)  # SMALL padded to a multiple of 32
    losses = model(**data, mode='loss')
    expected = {'loss_cls', 'loss_offset', 'loss_depth', 'loss_size', 'loss_rotsin', 'loss_centerness', 'loss_dir',
                'loss_attr'}
    assert expected <= set(losses)
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total) and total.item() > 0
    assert all(np.isfinite(float(v)) for v in log_vars.values())
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, no_grad
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    # the config's optimizer step (grad clipping + AdamW) moves every parameter that has a non-zero gradient
    before = {n: p.detach().clone() for n, p in trainable}
    optim_wrapper.step()
    moved = [n for n, p in trainable if (p.detach() - before[n]).abs().max() > 0]
    stuck = {n for n, p in trainable if p.grad.abs().max() > 0} - set(moved)
    assert not stuck, stuck
    # exactly-zero gradients only where mmdet's ResNet zero-initialises the last BN of a residual branch
    # (zero_init_residual): that branch's earlier layers get no gradient at the first step
    zero = sorted(n for n, p in trainable if p.grad.abs().max() == 0)
    assert all(n.startswith('backbone.layer') and n.split('.')[3] in ('conv1', 'bn1', 'conv2') for n in zero), zero


def test_predict_output_contract(cfg, train_batch):
    """Random-weight predictions (score threshold 0) are CameraInstance3DBoxes(box_dim=9) with scores, labels
    0..9 and attributes 0..8: exactly what EProPnPNuScenesMetric accepts."""
    from mmdet3d.structures import CameraInstance3DBoxes
    cfg = copy.deepcopy(cfg)
    cfg.model.test_cfg.score_thr = 0.0
    cfg.model.test_cfg.max_per_img = 10
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model.test_step(copy.deepcopy(train_batch))
    assert len(out) == 2
    for ds in out:
        p = ds.pred_instances_3d
        assert isinstance(p.bboxes_3d, CameraInstance3DBoxes) and p.bboxes_3d.tensor.shape[1] == 9
        n = len(p.scores_3d)
        assert 0 < n <= 10 and p.labels_3d.shape == (n, ) and p.attr_labels.shape == (n, )
        assert p.labels_3d.min() >= 0 and p.labels_3d.max() <= 9 and p.attr_labels.max() <= 8
        assert torch.isfinite(p.bboxes_3d.tensor).all()


def test_metric_scores_mmdet3d_camera_boxes_without_adapter(cfg, root):
    """GT of mmdet3d's own NuScenesDataset (FCOS3D's dataset and box type: CameraInstance3DBoxes, box_dim 9,
    bottom centre, velocities) fed as predictions to the configured metric → mAP = 1, mATE ≈ 0."""
    from mmdet3d.registry import DATASETS, METRICS
    from mmengine.structures import InstanceData
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.update(test_mode=False, filter_empty_gt=False,
                  pipeline=[dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True,
                                 with_attr_label=True),
                            dict(type='Pack3DDetInputs', keys=['gt_bboxes_3d', 'gt_labels_3d', 'attr_labels'])])
    ds = DATASETS.build(ds_cfg)
    preds = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        p = InstanceData()
        p.bboxes_3d = g.bboxes_3d
        p.scores_3d = torch.linspace(1.0, 0.5, len(g.labels_3d))
        p.labels_3d = g.labels_3d
        p.attr_labels = g.attr_labels
        preds.append(dict(pred_instances_3d=p, sample_idx=s.sample_idx))
    metric = METRICS.build(copy.deepcopy(cfg.test_evaluator))
    metric.dataset_meta = ds.metainfo
    metric.process({}, preds)
    res = metric.evaluate(len(preds))
    key = [k for k in res if k.endswith('/mAP')][0]
    assert res[key] > 0.99
    ate = [v for k, v in res.items() if k.endswith('/mATE')][0]
    assert ate < 1e-3
