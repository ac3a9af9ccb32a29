"""The demo's JSON carries each box's pose covariance, its standard deviations (incl. depth/lateral) and, when
the prediction has them, the Monte-Carlo pose samples; boxes_from_json reads the covariance back."""
import json

import numpy as np

from epropnp_det.apis.inference import Prediction
from epropnp_det.apis.results import boxes_from_json, write_json


def _prediction(with_samples):
    rng = np.random.default_rng(0)
    n, K = 3, 6
    a = rng.normal(size=(n, 4, 4))
    cov = a @ a.transpose(0, 2, 1) + np.eye(4) * 0.01
    boxes = np.column_stack([rng.uniform(1, 4, (n, 3)), rng.uniform(-5, 5, n), rng.uniform(0, 2, n),
                             rng.uniform(5, 40, n), rng.uniform(-3, 3, n)])
    samples = boxes[:, None, 3:7] + rng.normal(size=(n, K, 4)) if with_samples else None
    weights = rng.dirichlet(np.ones(K), size=n) if with_samples else None
    return Prediction(name='img', image_size=(640, 360), cam2img=np.array([[500., 0, 320], [0, 500., 180], [0, 0, 1]]),
                      img_transform=np.eye(3), input_size=(640, 360), class_names=('car', 'pedestrian'),
                      pixel_convention='v1', boxes=boxes, velocities=np.zeros((n, 2)), scores=np.full(n, 0.5),
                      scores_2d=np.full(n, 0.7), scores_3d=np.full(n, 0.7), labels=np.array([0, 1, 0]),
                      attr_labels=np.array([6, 2, 6]), bboxes_2d=np.zeros((n, 4)), pose_cov=cov,
                      pose_samples=samples, pose_sample_weights=weights)


def test_demo_json_uncertainty_fields(tmp_path):
    pred = _prediction(True)
    path = tmp_path / 'img.json'
    write_json(pred, str(path))
    data = json.loads(path.read_text())
    for i, b in enumerate(data['boxes']):
        d = np.diag(pred.pose_cov[i])
        assert b['pose_std']['depth'] == np.sqrt(d[2]) and b['pose_std']['lateral'] == np.sqrt(d[0])
        np.testing.assert_array_equal(b['pose_samples'], pred.pose_samples[i])
        np.testing.assert_array_equal(b['pose_sample_weights'], pred.pose_sample_weights[i])
    np.testing.assert_array_equal(boxes_from_json(str(path))['pose_cov'], pred.pose_cov)


def test_demo_json_without_samples(tmp_path):
    path = tmp_path / 'img.json'
    write_json(_prediction(False), str(path))
    assert all('pose_samples' not in b for b in json.loads(path.read_text())['boxes'])
