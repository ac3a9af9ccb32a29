"""tools/uncertainty_report.py and tools/fit_uncertainty_calibration.py on a submission with known pose errors:
every ground-truth box predicted with a fixed camera-frame offset δ, so each matched record's error must be −δ
(matching, frames and yaw conventions), and the fitted scales must reproduce the nominal coverage on the fit set."""
import json
import math
import os.path as osp
import sys
from statistics import NormalDist

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from epropnp_det.evaluation.uncertainty import gaussian_coverage
from epropnp_det.structures.boxes import model_to_cam_boxes
from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root
from tests.test_uncertainty._gt import val_gt_dataset

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools'))

DELTA = np.array([0.3, 0.1, -0.5, 0.2])  # x, y, z (m), yaw (rad) camera frame, added to the truth


@pytest.fixture(scope='module')
def submission(tmp_path_factory):
    from mmdet3d.registry import METRICS

    import epropnp_det.evaluation  # noqa: F401
    root = tiny_nuscenes_root()
    ds = val_gt_dataset(root)
    rng = np.random.default_rng(0)
    preds = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        n = len(g.labels_3d)
        boxes = g.bboxes_3d.clone()
        boxes[:, 3:7] += torch.as_tensor(DELTA, dtype=boxes.dtype)
        p = InstanceData()
        p.bboxes_3d = model_to_cam_boxes(boxes, g.velocities)
        p.scores_3d = torch.as_tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
        p.labels_3d = g.labels_3d
        p.attr_labels = g.attr_labels
        std = np.abs(DELTA) / rng.uniform(0.2, 3.0, size=(n, 4))  # |error|/σ uniform in [0.2, 3]
        p.pose_cov = torch.as_tensor(np.stack([np.diag(v ** 2) for v in std]), dtype=torch.float32)
        preds.append(dict(pred_instances_3d=p, sample_idx=s.sample_idx))
    out = tmp_path_factory.mktemp('submission')
    metric = METRICS.build(dict(type='EProPnPNuScenesMetric', data_root=root, format_only=True,
                                ann_file=osp.join(root, 'nuscenes_infos_val.pkl'), jsonfile_prefix=str(out)))
    metric.dataset_meta = ds.metainfo
    metric.process({}, preds)
    metric.evaluate(len(preds))
    return root, str(out)


def test_matched_errors_are_the_injected_offset(submission):
    from uncertainty_report import matched_records, report
    root, out = submission
    records = matched_records(out, root, 'v1.0-mini', 'mini_val')
    assert len(records) >= 20
    for r in records:
        np.testing.assert_allclose(r['err'][:3], -DELTA[:3], atol=2e-3)
        assert math.remainder(r['err'][3] + DELTA[3], 2 * math.pi) == pytest.approx(0, abs=2e-3)
    rep = report(records, sorted({r['cls'] for r in records}))
    # depth coverage from the records' own ratios, independently of the report's code path
    ratio = np.array([abs(r['err'][2]) / math.sqrt(r['cov'][2, 2]) for r in records])
    for p, got in rep['overall']['laplace']['depth']['coverage'].items():
        assert got == pytest.approx((ratio <= NormalDist().inv_cdf((1 + float(p)) / 2)).mean())


def test_fitted_scales_give_nominal_coverage_on_the_fit_set(submission, tmp_path):
    from fit_uncertainty_calibration import fit_calibration
    from uncertainty_report import apply_calibration, matched_records
    root, out = submission
    records = matched_records(out, root, 'v1.0-mini', 'mini_val')
    classes = sorted({r['cls'] for r in records})
    scales, pooled, counts, source = fit_calibration(records, classes, 'coverage68', min_matches=1000)
    assert all(v == 'pooled' for v in source.values())
    cal = apply_calibration(records, dict(classes=classes, pose_cov_scale=scales.tolist()))
    for k in range(3):
        e = np.array([r['err'][k] for r in cal])
        s = np.sqrt([r['cov'][k, k] for r in cal])
        cov68 = gaussian_coverage(e, s, [2 * NormalDist().cdf(1) - 1])[0]
        assert abs(cov68 - 0.6827) <= 1.0 / len(e) + 1e-9
    # maximum likelihood: mean((e/(sσ))²) = 1 after scaling
    scales_ml, _, _, _ = fit_calibration(records, classes, 'ml', min_matches=1000)
    cal = apply_calibration(records, dict(classes=classes, pose_cov_scale=scales_ml.tolist()))
    z = np.array([r['err'][2] / math.sqrt(r['cov'][2, 2]) for r in cal])
    assert np.mean(z ** 2) == pytest.approx(1.0, rel=1e-9)


def test_report_cli_writes_json_and_png(submission, tmp_path):
    from uncertainty_report import main, matched_records
    root, out = submission
    classes = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
    calib = tmp_path / 'calib.json'
    calib.write_text(json.dumps(dict(classes=classes, pose_cov_scale=[[2.0, 2.0, 2.0, 2.0]] * 10)))
    rep = main(['--results', out, '--data-root', root, '--json', str(tmp_path / 'r.json'),
                '--png', str(tmp_path / 'r.png'), '--calibration', str(calib), '--out-dir', str(tmp_path)])
    assert (tmp_path / 'r.png').stat().st_size > 10_000
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert saved['calibrated']['overall']['num_matched'] == saved['raw']['overall']['num_matched'] > 0
    # doubling every σ: calibrated coverage at p = fraction of raw ratios |e|/σ ≤ 2 z_p
    records = matched_records(out, root, 'v1.0-mini', 'mini_val')
    ratio = np.array([abs(r['err'][0]) / math.sqrt(r['cov'][0, 0]) for r in records])
    for p, got in rep['calibrated']['overall']['laplace']['lateral']['coverage'].items():
        assert got == pytest.approx((ratio <= 2 * NormalDist().inv_cdf((1 + float(p)) / 2)).mean())
