"""``tools/benchmarks/pitch_roll_accuracy.py``: the table's mechanics (rows, columns, finite values) with a random
model on one tiny image, and its frames and matching with oracle predictions whose errors are known exactly."""
import os.path as osp
import sys

import numpy as np
import pytest

from .conftest import CONFIG, RANDOM_MODEL_OPTIONS, ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmarks'))
import pitch_roll_accuracy as pra  # noqa: E402


def _row(rows, camera, path):
    (row,) = [r for r in rows if r['camera'] == camera and r['path'] == path]
    return row


def test_table_with_a_random_model(checkpoint, capsys):
    rows = pra.main([CONFIG, checkpoint, '--num-scenes', '1', '--frames', '1', '--cameras', 'CAM_FRONT',
                     '--angles', '5,0', '0,-3', '--image-size', '320', '180', '--score-thr', '0', '--cfg-options',
                     *[f'{k}={v}' for k, v in RANDOM_MODEL_OPTIONS.items()]])
    out = capsys.readouterr().out
    for h in pra.HEADER:
        assert h in out
    expected = [('level', 'level')] + [(cam, p) for cam in ('pitch +5°, roll +0°', 'pitch +0°, roll -3°')
                                       for p in pra.PATHS]
    assert [(r['camera'], r['path']) for r in rows] == expected
    for camera, path in expected:
        assert f'| {camera}' in out and path in out
    level = rows[0]
    for r in rows:
        assert r['images'] == 1 and r['gt'] > 0 and r['preds'] <= 12
        assert 0.0 <= r['recall'] <= 1.0 and r['matched'] <= min(r['gt'], r['preds'])
        for k in ('centre_mean', 'centre_median', 'depth_median'):  # finite where something matched
            assert (r['matched'] == 0) == (r[k] != r[k]) and (r['matched'] == 0 or 0 <= r[k] < 2.0)
    assert level['centre_ratio'] == 1.0 or level['matched'] == 0
    # the raw and "tilt ignored" rows score the same predictions: same counts, different frames
    for cam in ('pitch +5°, roll +0°', 'pitch +0°, roll -3°'):
        assert _row(rows, cam, 'raw')['gt'] == _row(rows, cam, 'raw, tilt ignored')['gt']


@pytest.fixture(scope='module')
def oracle_views():
    # a strongly pitched camera: the frame error of ignoring the tilt is large and known exactly
    return pra.render_views([1], 1, ['CAM_FRONT'], [(10.0, 0.0), (0.0, 4.0)], size=(320, 180))


def _oracle(views):
    """Perfect predictions: the ground truth in the level frame when rectified (or level); without rectification
    what a perfect level-assuming model sees, each box exactly positioned but upright in the real camera frame."""
    renders = {id(r['img']): r for vs in views.values() for r in vs}

    def predict(imgs, cam2imgs, cam2levels, border):
        out = []
        for img, level in zip(imgs, cam2levels):
            r = renders[id(img)]
            boxes = r['boxes'].copy()
            if level is None:
                R = r['cam2level']
                boxes[:, 3:6] = boxes[:, 3:6] @ R                                  # Rᵀ c: the real camera frame
                heading = np.stack([np.cos(boxes[:, 6]), 0 * boxes[:, 6], -np.sin(boxes[:, 6])], 1) @ R
                boxes[:, 6] = np.arctan2(-heading[:, 2], heading[:, 0])
            out.append((boxes, r['labels'], np.ones(len(boxes))))
        return out
    return predict


def test_oracle_predictions(oracle_views):
    from nuscenes.eval.detection.config import config_factory

    from epropnp_det.synthetic import CLASSES
    rows = pra.evaluate(oracle_views, _oracle(oracle_views), list(CLASSES), score_thr=0.5)
    class_range = config_factory('detection_cvpr_2019').class_range
    level = rows[0]
    assert level['gt'] > 3 and level['recall'] == 1.0 and level['precision'] == 1.0
    assert level['centre_mean'] < 1e-9 and level['yaw_median_deg'] < 1e-6
    assert level['centre_ratio'] != level['centre_ratio']   # no ratio to a zero error: NaN, printed as '–'
    for (pitch, roll), renders in oracle_views.items():
        if (pitch, roll) == (0.0, 0.0):
            continue
        cam = f'pitch {pitch:+g}°, roll {roll:+g}°'
        rect, rect_rep, raw, ignored = (_row(rows, cam, p) for p in pra.PATHS)
        # rectified: exact; raw with the known tilt: exact positions, the upright boxes' yaw off by < 1°
        for r in (rect, rect_rep, raw):
            assert r['recall'] == 1.0 and r['precision'] == 1.0 and r['centre_mean'] < 1e-9
        assert rect['yaw_median_deg'] < 1e-6 and raw['yaw_median_deg'] < 1.0
        # tilt ignored: each box is off by the BEV part of c - Rᵀc (level frame x, z), computed here directly
        (r,) = renders
        R = r['cam2level']
        d = r['boxes'][:, 3:6] - r['boxes'][:, 3:6] @ R
        err = np.hypot(d[:, 0], d[:, 2])
        dist = np.hypot(r['boxes'][:, 3], r['boxes'][:, 5])
        in_range = dist <= np.array([class_range[CLASSES[i]] for i in r['labels']])
        assert ignored['gt'] == in_range.sum()
        assert err[in_range].max() > (0.2 if pitch else 0.02)   # a 10° pitch: 1 - cos and the height's sine
        ok = in_range & (err < 2.0)
        assert ignored['matched'] <= ok.sum()
        if ignored['matched'] == ok.sum():  # no box moved beyond its range or onto another object
            assert abs(ignored['centre_mean'] - err[ok].mean()) < 1e-6
        assert ignored['centre_mean'] > 0.01


def test_rectify_border_fill():
    """The band a camera pitched up does not see: black by default, edge pixels with ``border='replicate'``; the
    rest of the warped picture is the same."""
    from epropnp_det.apis.level import rectify_image, tilt_rotation
    r = pra.render_views([1], 1, ['CAM_FRONT'], [], size=(320, 180))[(0.0, 0.0)][0]
    R = tilt_rotation(-5.0, 0.0)
    black, H = rectify_image(r['img'], r['cam2img'], R)
    filled, H2 = rectify_image(r['img'], r['cam2img'], R, border='replicate')
    np.testing.assert_array_equal(H, H2)
    band = (black == 0).all(-1)
    rows = np.flatnonzero(band.all(1))
    assert len(rows) >= 10 and rows[-1] == len(band) - 1 and np.all(np.diff(rows) == 1)  # a band at the bottom
    assert not (filled[rows] == 0).all(-1).any()
    inner = (rectify_image(np.full_like(r['img'], 255), r['cam2img'], R)[0] == 255).all(-1)  # sampled inside only
    assert inner.mean() > 0.6
    np.testing.assert_array_equal(black[inner], filled[inner])
    with pytest.raises(ValueError, match='border'):
        rectify_image(r['img'], r['cam2img'], R, border='wrap')
