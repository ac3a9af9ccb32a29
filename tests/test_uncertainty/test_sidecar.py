"""The pose-uncertainty sidecar beside the nuScenes submission: alignment with the results JSON, global-frame
covariance against finite differences of the box transform, round trip of the camera-frame covariance and the
Monte-Carlo samples, and a submission the devkit still loads."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from epropnp_det.evaluation.uncertainty import SIDECAR_NAME, covariance_to_global, load_sidecar
from epropnp_det.structures.boxes import model_boxes_to_frame, model_to_cam_boxes
from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root
from tests.test_uncertainty._gt import val_gt_dataset


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


def _random_spd(rng, n):
    a = rng.normal(size=(n, 4, 4)) * np.array([0.5, 0.2, 2.0, 0.3])[:, None]
    return a @ a.transpose(0, 2, 1) + np.eye(4) * 1e-3


@pytest.fixture(scope='module')
def predictions(root):
    """The ground truth of every val image as predictions, each box with a random covariance and MC samples."""
    ds = val_gt_dataset(root)
    rng = np.random.default_rng(0)
    preds = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        n = len(g.labels_3d)
        p = InstanceData()
        p.bboxes_3d = model_to_cam_boxes(g.bboxes_3d, g.velocities)
        p.scores_3d = torch.as_tensor(rng.uniform(0.2, 1.0, n), dtype=torch.float32)
        p.labels_3d = g.labels_3d
        p.attr_labels = g.attr_labels
        p.pose_cov = torch.as_tensor(_random_spd(rng, n), dtype=torch.float32)
        p.pose_samples = g.bboxes_3d[:, None, 3:7].float() + torch.as_tensor(rng.normal(size=(n, 5, 4)),
                                                                                dtype=torch.float32)
        p.pose_sample_weights = torch.softmax(torch.as_tensor(rng.normal(size=(n, 5))), -1).float()
        preds.append(dict(pred_instances_3d=p, sample_idx=s.sample_idx, model_boxes=g.bboxes_3d.double()))
    return ds.metainfo, preds


def _write(root, meta, preds, out_dir, format_only):
    from mmdet3d.registry import METRICS

    import epropnp_det.evaluation  # noqa: F401
    metric = METRICS.build(dict(type='EProPnPNuScenesMetric', data_root=root, format_only=format_only,
                                ann_file=osp.join(root, 'nuscenes_infos_val.pkl'), jsonfile_prefix=str(out_dir)))
    metric.dataset_meta = meta
    metric.process({}, [dict(pred_instances_3d=p['pred_instances_3d'], sample_idx=p['sample_idx']) for p in preds])
    return metric.evaluate(len(preds))


@pytest.mark.parametrize('format_only', [True, False])
def test_sidecar_round_trip(root, predictions, tmp_path, format_only):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    meta, preds = predictions
    _write(root, meta, preds, tmp_path, format_only)
    sub_path = tmp_path / 'results_nusc.json'
    sub = json.loads(sub_path.read_text())
    side = load_sidecar(str(tmp_path / SIDECAR_NAME))
    # the submission is untouched: only the devkit's fields, and the devkit loads it
    allowed = {'sample_token', 'translation', 'size', 'rotation', 'velocity', 'detection_name', 'detection_score',
               'attribute_name'}
    assert all(set(b) == allowed for boxes in sub['results'].values() for b in boxes)
    load_prediction(str(sub_path), 500, DetectionBox)
    # input covariance/samples by (sample token, camera, camera-frame pose)
    import mmengine
    infos = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))['data_list']
    by_pose = {}
    for p in preds:
        inst = p['pred_instances_3d']
        info = infos[p['sample_idx'] // 6]
        cam = list(info['images'])[p['sample_idx'] % 6]
        for k in range(len(inst.scores_3d)):
            key = (info['token'], cam) + tuple(np.round(p['model_boxes'][k, 3:7].numpy(), 5))
            by_pose[key] = (inst.pose_cov[k].double().numpy(), inst.pose_samples[k].double().numpy(),
                            inst.pose_sample_weights[k].double().numpy(), p['model_boxes'][k])
    n_checked = 0
    assert set(side['results']) == set(sub['results'])
    for token, boxes in sub['results'].items():
        ents = side['results'][token]
        assert len(ents) == len(boxes)
        for box, ent in zip(boxes, ents):
            c2g = np.asarray(side['cam2global'][token][ent['camera']])
            pose = np.asarray(ent['pose_cam'])
            # box index alignment: the sidecar's camera-frame pose maps onto this JSON box's centre
            np.testing.assert_allclose(c2g[:3, :3] @ pose[:3] + c2g[:3, 3], box['translation'], atol=1e-6)
            cov_in, samples_in, w_in, mbox = by_pose[(token, ent['camera']) + tuple(np.round(pose, 5))]
            np.testing.assert_allclose(ent['pose_cov_cam'], cov_in, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(ent['pose_samples_cam'], samples_in, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(ent['pose_sample_weights'], w_in, rtol=1e-6)
            # global covariance = J Σ Jᵀ with J from central differences of the box transform itself
            J = np.zeros((4, 4))
            h = 1e-6
            for k in range(4):
                d = torch.zeros(7, dtype=torch.float64)
                d[3 + k] = h
                fp = model_boxes_to_frame((mbox + d)[None], torch.as_tensor(c2g))
                fm = model_boxes_to_frame((mbox - d)[None], torch.as_tensor(c2g))
                dyaw = (fp['yaw'] - fm['yaw'] + np.pi) % (2 * np.pi) - np.pi
                J[:, k] = np.concatenate([(fp['center'] - fm['center'])[0].numpy(), dyaw.numpy()]) / (2 * h)
            np.testing.assert_allclose(ent['pose_cov'], J @ cov_in @ J.T, rtol=1e-5, atol=1e-8)
            std = ent['pose_std']
            np.testing.assert_allclose([std['x'], std['y'], std['z'], std['yaw']],
                                       np.sqrt(np.diag(J @ cov_in @ J.T)), rtol=1e-5)
            np.testing.assert_allclose([std['depth'], std['lateral']], np.sqrt(cov_in[[2, 0], [2, 0]]), rtol=1e-6)
            n_checked += 1
    assert n_checked > 20


def test_no_sidecar_without_covariance(root, predictions, tmp_path):
    meta, preds = predictions
    stripped = []
    for p in preds:
        inst = InstanceData()
        for k in ('bboxes_3d', 'scores_3d', 'labels_3d', 'attr_labels'):
            inst[k] = p['pred_instances_3d'][k]
        stripped.append(dict(p, pred_instances_3d=inst))
    _write(root, meta, stripped, tmp_path, True)
    assert (tmp_path / 'results_nusc.json').exists() and not (tmp_path / SIDECAR_NAME).exists()


def test_level_camera_yaw_variance_unchanged():
    """A level camera (y down ↦ global −z): yaw variance unchanged, position–yaw covariances change sign."""
    c2g = np.eye(4)
    c2g[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # camera z → global x (nuScenes front camera)
    cov = _random_spd(np.random.default_rng(3), 1)
    g = covariance_to_global(cov, np.array([0.7]), c2g)[0]
    assert g[3, 3] == pytest.approx(cov[0, 3, 3], rel=1e-12)
    np.testing.assert_allclose(g[:3, 3], -(c2g[:3, :3] @ cov[0, :3, 3]), rtol=1e-12)
