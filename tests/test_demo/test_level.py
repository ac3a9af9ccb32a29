"""Cameras that are not level: the rectifying homography reproduces the level camera's picture of the same scene,
boxes rotate back consistently, and the demo runs on a pitched and rolled camera (JSON in the real camera frame)."""
import json

import cv2
import numpy as np
import pytest
import torch

from epropnp_det.apis.demo_images import render_camera_image
from epropnp_det.apis.level import boxes_level_to_camera, level_homography, rectify_image, tilt_rotation
from epropnp_det.structures.boxes import apply_transform, model_boxes_corners

from .conftest import CONFIG, RANDOM_MODEL_OPTIONS


def test_tilt_rotation_axes():
    R = tilt_rotation(5.0, 0.0)
    np.testing.assert_allclose(R @ [0, 0, 1], [0, np.sin(np.deg2rad(5)), np.cos(np.deg2rad(5))])  # looks down
    R = tilt_rotation(0.0, 3.0)
    np.testing.assert_allclose(R @ [1, 0, 0], [np.cos(np.deg2rad(3)), np.sin(np.deg2rad(3)), 0])
    R = tilt_rotation(-4.0, 2.5)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match='rotation'):
        level_homography(np.eye(3), np.diag([1, 1, -1.]))


def test_homography_moves_projections_like_the_rotation():
    K = np.array([[506., 0, 319.5], [0, 506., 179.5], [0, 0, 1]])
    R = tilt_rotation(5.0, -3.0)
    boxes = np.array([[4.2, 1.6, 1.9, -3.0, 1.2, 18.0, 0.4], [0.8, 1.7, 0.7, 4.0, 0.9, 30.0, -2.0]])
    corners_level = model_boxes_corners(torch.from_numpy(boxes)).numpy()                  # (2, 8, 3)
    centres, rots = boxes_level_to_camera(boxes, R)
    corners_real = corners_level @ R                                                       # Rᵀ p, row form
    np.testing.assert_allclose(corners_real.mean(1), centres, atol=1e-12)
    local = corners_level - boxes[:, None, 3:6]                          # corners relative to the centre, level
    yaw_only = np.einsum('nji,nkj->nki', np.stack([np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0],
                                                             [-np.sin(y), 0, np.cos(y)]]) for y in boxes[:, 6]]),
                         local)                                          # object-local coordinates
    np.testing.assert_allclose(np.einsum('nij,nkj->nki', rots, yaw_only) + centres[:, None], corners_real, atol=1e-9)
    # pixels: real-camera projections (v1 K-projection + 0.5 = continuous) mapped by H equal level projections
    H = level_homography(K, R, 'v1')
    proj = lambda p: (p @ K.T)[..., :2] / (p @ K.T)[..., 2:3] + 0.5  # noqa: E731
    np.testing.assert_allclose(apply_transform(H, proj(corners_real)), proj(corners_level), atol=1e-9)


@pytest.fixture(scope='module')
def pitched_pair():
    level = render_camera_image(640, 360, 506, scene=1)
    tilted = render_camera_image(640, 360, 506, scene=1, pitch_deg=5.0, roll_deg=3.0)
    return level, tilted


def test_rectified_image_is_the_level_cameras_picture(pitched_pair):
    level, tilted = pitched_pair
    # ground truth is given in the level frame: the same boxes for both cameras (visibility may differ)
    for box in tilted['boxes']:
        assert np.abs(level['boxes'] - box).max(1).min() < 1e-9
    warped, _ = rectify_image(tilted['img'], tilted['cam2img'], tilted['cam2level'])
    valid = warped.sum(-1) > 0
    assert valid.mean() > 0.8
    diff_rect = np.abs(warped.astype(float) - level['img'])[valid].mean()
    diff_raw = np.abs(tilted['img'].astype(float) - level['img']).mean()
    # the remaining difference is the renderer's pixel noise and resampling; the unrectified one is geometric
    assert diff_rect < 6.0 and diff_raw > 3 * diff_rect


def test_demo_on_a_pitched_and_rolled_camera(checkpoint, pitched_pair, tmp_path):
    from epropnp_det.apis import EProPnPPredictor, boxes_from_json
    from tools.demo import main
    _, tilted = pitched_pair
    path = str(tmp_path / 'pitched.png')
    cv2.imwrite(path, tilted['img'])
    K = tilted['cam2img']
    out = tmp_path / 'out'
    main([CONFIG, checkpoint, path, '--intrinsics', *map(str, (K[0, 0], K[1, 1], K[0, 2], K[1, 2])), '--pitch', '5',
          '--roll', '3', '--out-dir', str(out), '--score-thr', '0', '--views', '3d,bev,points', '--no-progress',
          '--cfg-options', *[f'{k}={v}' for k, v in RANDOM_MODEL_OPTIONS.items()]])
    data = json.load(open(out / 'pitched.json'))
    np.testing.assert_allclose(data['cam2level'], tilted['cam2level'], atol=1e-12)
    for view in ('3d', 'bev', 'points'):
        assert (out / f'pitched_{view}.png').is_file()
    back = boxes_from_json(str(out / 'pitched.json'))
    pred = EProPnPPredictor(CONFIG, checkpoint, cfg_options=RANDOM_MODEL_OPTIONS).predict(
        [tilted['img']], [K], cam2levels=[tilted['cam2level']])[0]
    np.testing.assert_allclose(back['boxes'], pred.boxes, atol=1e-9)                 # level frame round trip
    for b, box in zip(data['boxes'], pred.boxes):
        np.testing.assert_allclose(b['center'], tilted['cam2level'].T @ box[3:6], atol=1e-9)
        assert np.all(np.array(b['bbox_2d'])[2:] >= np.array(b['bbox_2d'])[:2])
