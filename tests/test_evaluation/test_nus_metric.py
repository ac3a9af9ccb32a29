"""EProPnPNuScenesMetric: GT round trip through fusion → NMS → JSON → DetectionEval, submission format, NMS
rotation sense against shapely, attributes, order independence, prediction formats."""
import json
import math
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from epropnp_det.structures.boxes import model_to_cam_boxes
from tests.test_datasets.tiny_nuscenes import build_dataset, tiny_nuscenes_root

META = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


@pytest.fixture(scope='module')
def gt_predictions(root):
    """Ground truth of every val camera image (all visibilities, no ignore rule) as per-image predictions."""
    pipe = [dict(type='EProPnPLoadImage'), dict(type='EProPnPLoadAnnotations'), dict(type='EProPnPPack3DDetInputs')]
    ds = build_dataset(root, pipe, test_mode=False, ann_file='nuscenes_infos_val.pkl', filter_empty_gt=False,
                       min_visibility=0, trunc_ignore_thres=1.0, min_box_size=0.0)
    preds = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        p = InstanceData()
        p.bboxes_3d = model_to_cam_boxes(g.bboxes_3d, g.velocities)
        p.scores_3d = torch.linspace(1.0, 0.5, len(g.labels_3d))
        p.labels_3d = g.labels_3d
        p.attr_labels = g.attr_labels
        preds.append(dict(pred_instances_3d=p, sample_idx=s.sample_idx))
    return ds.metainfo, preds


def build_metric(root, **kw):
    from mmdet3d.registry import METRICS

    import epropnp_det.evaluation  # noqa: F401
    return METRICS.build(dict(type='EProPnPNuScenesMetric', data_root=root,
                              ann_file=osp.join(root, 'nuscenes_infos_val.pkl'), **kw))


def run_metric(metric, meta, preds):
    metric.dataset_meta = meta
    metric.process({}, preds)
    return metric.evaluate(len(preds))


def test_gt_round_trip_scores_perfectly(root, gt_predictions, tmp_path):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    meta, preds = gt_predictions
    assert len(preds) == 12
    res = run_metric(build_metric(root, jsonfile_prefix=str(tmp_path)), meta, preds)
    key = 'NuScenes metric/pred_instances_3d_NuScenes/'
    print({k.split('/')[-1]: v for k, v in res.items() if 'AP_dist' not in k or k.endswith('_2.0')})
    assert res[key + 'NDS'] >= 0.95 and res[key + 'mAP'] >= 0.95
    for err in ('mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'):
        assert res[key + err] < 0.02, err
    path = tmp_path / 'results_nusc.json'
    sub = json.loads(path.read_text())
    assert sub['meta'] == META
    boxes, meta_loaded = load_prediction(str(path), 500, DetectionBox)
    assert meta_loaded == META
    # duplicates of objects seen by two cameras are gone: no two same-class boxes closer than 0.5 m
    for annos in sub['results'].values():
        c = np.array([a['translation'] for a in annos])
        names = [a['detection_name'] for a in annos]
        d = np.linalg.norm(c[:, None, :2] - c[None, :, :2], axis=-1) + np.eye(len(c)) * 1e3
        same = np.array(names)[:, None] == np.array(names)[None]
        assert (d[same] > 0.5).all()


def test_format_only_and_order_independence(root, gt_predictions, tmp_path):
    meta, preds = gt_predictions
    a = build_metric(root, format_only=True, jsonfile_prefix=str(tmp_path / 'a'))
    assert run_metric(a, meta, preds) == {}
    shuffled = preds[:]
    random.Random(0).shuffle(shuffled)
    b = build_metric(root, format_only=True, jsonfile_prefix=str(tmp_path / 'b'))
    run_metric(b, meta, shuffled)
    ja = json.loads((tmp_path / 'a' / 'results_nusc.json').read_text())
    jb = json.loads((tmp_path / 'b' / 'results_nusc.json').read_text())
    assert ja == jb and ja['meta'] == META
    assert len(ja['results']) == 2 and all(len(v) > 0 for v in ja['results'].values())


def test_model_convention_tensor_predictions_are_equivalent(root, gt_predictions, tmp_path):
    from epropnp_det.structures.boxes import cam_boxes_to_model
    meta, preds = gt_predictions
    alt = []
    for p in preds:
        q = InstanceData()
        boxes, velo = cam_boxes_to_model(p['pred_instances_3d'].bboxes_3d)
        q.bboxes_3d = boxes
        q.velocities = velo
        q.scores_3d = p['pred_instances_3d'].scores_3d
        q.labels_3d = p['pred_instances_3d'].labels_3d
        q.attr_scores = torch.nn.functional.one_hot(p['pred_instances_3d'].attr_labels, 9).float()
        alt.append(dict(pred_instances_3d=q, sample_idx=p['sample_idx']))
    run_metric(build_metric(root, format_only=True, jsonfile_prefix=str(tmp_path / 'a')), meta, preds)
    run_metric(build_metric(root, format_only=True, jsonfile_prefix=str(tmp_path / 'b')), meta, alt)
    ja = json.loads((tmp_path / 'a' / 'results_nusc.json').read_text())['results']
    jb = json.loads((tmp_path / 'b' / 'results_nusc.json').read_text())['results']
    for tok in ja:
        assert len(ja[tok]) == len(jb[tok])
        for x, y in zip(ja[tok], jb[tok]):
            assert x['detection_name'] == y['detection_name'] and x['attribute_name'] == y['attribute_name']
            assert np.allclose(x['translation'], y['translation'], atol=1e-4)
            assert np.allclose(x['rotation'], y['rotation'], atol=1e-5)


def _footprint(x, y, l, w, th):
    from shapely.geometry import Polygon
    c, s = math.cos(th), math.sin(th)
    return Polygon([(x + c * a * l / 2 - s * b * w / 2, y + s * a * l / 2 + c * b * w / 2)
                    for a, b in ((1, 1), (-1, 1), (-1, -1), (1, -1))])


def test_bev_nms_against_shapely_greedy():
    from epropnp_det.evaluation import bev_nms_global
    rng = np.random.default_rng(0)
    n = 60
    center = rng.uniform(0, 8, (n, 2))
    lw = np.stack([rng.uniform(2, 5, n), rng.uniform(0.5, 2, n)], 1)
    heading = rng.uniform(-math.pi, math.pi, n)
    scores = rng.uniform(0, 1, n)
    labels = rng.integers(0, 2, n)
    got = bev_nms_global(center, lw, heading, scores, labels, 0.25)
    polys = [_footprint(*center[i], *lw[i], heading[i]) for i in range(n)]
    keep = []
    for i in np.argsort(-scores):
        if all(labels[j] != labels[i] or polys[i].intersection(polys[j]).area / polys[i].union(polys[j]).area <= 0.25
               for j in keep):
            keep.append(i)
    assert got.tolist() == keep
    # a lone box is kept (docs/method.md §13.1 fixed)
    assert bev_nms_global(center[:1], lw[:1], heading[:1], scores[:1], labels[:1], 0.25).tolist() == [0]


def test_restricted_attributes():
    from epropnp_det.evaluation import ATTRIBUTES, restricted_attribute
    logits = np.zeros(9)
    logits[2] = 5  # pedestrian.moving is the global argmax
    logits[6] = 1  # vehicle.parked best among vehicle attributes
    assert restricted_attribute('car', attr_scores=logits) == 'vehicle.parked'
    assert restricted_attribute('pedestrian', attr_scores=logits) == 'pedestrian.moving'
    assert restricted_attribute('barrier', attr_scores=logits) == ''
    assert restricted_attribute('bicycle', attr_label=ATTRIBUTES.index('cycle.with_rider')) == 'cycle.with_rider'
    assert restricted_attribute('bus', attr_label=8) == 'vehicle.moving'   # out of set -> class default
    assert restricted_attribute('truck') == 'vehicle.parked'


def test_evaluator_path_with_det3d_data_samples(root, gt_predictions, tmp_path):
    """The mmengine Evaluator (what tools/test.py uses) converts data samples to dicts before ``process``."""
    from mmdet3d.structures import Det3DDataSample
    from mmengine.evaluator import Evaluator
    meta, preds = gt_predictions
    evaluator = Evaluator(build_metric(root, format_only=True, jsonfile_prefix=str(tmp_path)))
    evaluator.dataset_meta = meta
    for p in preds:
        ds = Det3DDataSample(metainfo=dict(sample_idx=p['sample_idx']))
        ds.pred_instances_3d = p['pred_instances_3d']
        ds.pred_instances = InstanceData()
        evaluator.process(data_samples=[ds], data_batch={})
    assert evaluator.evaluate(len(preds)) == {}
    sub = json.loads((tmp_path / 'results_nusc.json').read_text())
    assert sub['meta'] == META and sum(len(v) for v in sub['results'].values()) > 20


def test_empty_submission_scores_zero(root, gt_predictions, tmp_path):
    """An untrained model may predict nothing at all: zero AP, maximal errors, no devkit crash."""
    meta, preds = gt_predictions
    empty = []
    for p in preds:
        q = InstanceData()
        keep = torch.zeros(len(p['pred_instances_3d'].labels_3d), dtype=torch.bool)
        for key in ('bboxes_3d', 'scores_3d', 'labels_3d', 'attr_labels'):
            q[key] = p['pred_instances_3d'][key][keep]
        empty.append(dict(pred_instances_3d=q, sample_idx=p['sample_idx']))
    res = run_metric(build_metric(root, jsonfile_prefix=str(tmp_path)), meta, empty)
    key = 'NuScenes metric/pred_instances_3d_NuScenes/'
    assert res[key + 'NDS'] == 0.0 and res[key + 'mAP'] == 0.0
    assert res[key + 'mATE'] == 1.0 and res[key + 'car_AP_dist_2.0'] == 0.0
    assert (tmp_path / 'results_nusc.json').exists()
    # the devkit-format summary exists too, so tools/print_metrics.py reads every run the same way
    from epropnp_det.evaluation.summary import format_class_table, load_metrics_summary, summary_row
    summary = load_metrics_summary(str(tmp_path))
    assert summary_row(summary) == dict(NDS=0.0, mAP=0.0, mATE=1.0, mASE=1.0, mAOE=1.0, mAVE=1.0, mAAE=1.0)
    assert format_class_table(summary).count('| car |') == 1
