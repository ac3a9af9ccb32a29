"""``tools/demo.py`` end to end on generated images of three sizes (random r18 model), and exact invariances of
the predictor: the same scene given at twice the resolution, or already cropped, gives the same 3D boxes."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from epropnp_det.apis import EProPnPPredictor, boxes_from_json
from epropnp_det.structures.boxes import model_boxes_corners

from .conftest import CONFIG, RANDOM_MODEL_OPTIONS


def _cfg_options():
    return [f'{k}={v}' for k, v in RANDOM_MODEL_OPTIONS.items()]


def _bbox_from_corners(corners: np.ndarray, K: np.ndarray, w: int, h: int) -> np.ndarray:
    """Hull of the projected corners (v1 K-projection + 0.5 = continuous), clipped to the image."""
    uvw = corners @ K.T
    uv = uvw[..., :2] / uvw[..., 2:3] + 0.5
    lo, hi = uv.min(-2), uv.max(-2)
    return np.concatenate([np.clip(lo, 0, [w, h]), np.clip(hi, 0, [w, h])], -1)


def test_demo_folder_of_three_sizes(checkpoint, demo_folder, tmp_path):
    from tools.demo import main
    folder, renders = demo_folder
    out = tmp_path / 'out'
    written = main([CONFIG, checkpoint, folder, '--calib', osp.join(folder, 'calib.json'), '--out-dir', str(out),
                    '--score-thr', '0', '--views', '3d,bev,orient,points', '--batch-size', '2', '--mc-samples', '16',
                    '--no-progress', '--cfg-options', *_cfg_options()])
    calib = json.load(open(osp.join(folder, 'calib.json')))['images']
    assert len(written) == 3 * 5
    for name, r in renders.items():
        h, w = r['img'].shape[:2]
        for view in ('3d', 'bev', 'orient', 'points'):
            assert osp.isfile(out / f'{name}_{view}.png')
        assert cv2.imread(str(out / f'{name}_3d.png')).shape == (h, w, 3)
        data = json.load(open(out / f'{name}.json'))
        assert (data['width'], data['height']) == (w, h)
        np.testing.assert_allclose(data['cam2img'], calib[f'{name}.png']['cam2img'])
        assert len(data['boxes']) > 0
        back = boxes_from_json(str(out / f'{name}.json'))
        corners = model_boxes_corners(torch.from_numpy(back['boxes'])).numpy()
        # the JSON's corners are those of its centre/size/yaw, the 2D boxes are their projection by the image's K
        np.testing.assert_allclose(corners, [b['corners'] for b in data['boxes']], atol=1e-9)
        front = (corners[..., 2] > 0.1).all(-1)
        assert front.any()
        np.testing.assert_allclose(np.array([b['bbox_2d'] for b in data['boxes']])[front],
                                   _bbox_from_corners(corners[front], back['cam2img'], w, h), atol=2e-3)
        for b in data['boxes']:
            cov = np.array(b['pose_cov'])
            np.testing.assert_allclose(np.sqrt(np.diag(cov)), [b['pose_std'][k] for k in ('x', 'y', 'z', 'yaw')])
            np.testing.assert_allclose(b['bottom_center'][1] - b['center'][1], b['size']['height'] / 2)
            assert abs(b['score'] - b['score_2d'] * b['score_3d']) < 1e-6
            assert b['class'] == data['classes'][b['label']]


@pytest.mark.parametrize('argv_tail, message', [
    (['--views', '3d'], 'missing intrinsics'),
    (['--intrinsics', '500', '500', '320', '180', '--views', 'foo'], 'unknown'),
    (['--calib', '/no/such/calib.json'], 'calibration file not found'),
])
def test_demo_user_errors(checkpoint, demo_folder, argv_tail, message, capsys):
    from tools.demo import main
    folder, _ = demo_folder
    with pytest.raises(SystemExit) as info:
        main([CONFIG, checkpoint, folder, *argv_tail])
    assert message in str(info.value) and str(info.value).startswith('error: ')


def test_demo_missing_and_unreadable_inputs(checkpoint, tmp_path):
    from tools.demo import main
    with pytest.raises(SystemExit, match='missing.png: no such file'):
        main([CONFIG, checkpoint, str(tmp_path / 'missing.png'), '--intrinsics', '500', '500', '320', '180'])
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(SystemExit, match='bad.jpg: cannot read image'):
        main([CONFIG, checkpoint, str(bad), '--intrinsics', '500', '500', '320', '180', '--out-dir',
              str(tmp_path / 'o'), '--cfg-options', *_cfg_options()])


@pytest.fixture(scope='module')
def predictor(checkpoint):
    return EProPnPPredictor(CONFIG, checkpoint, with_points=True, mc_samples=8, cfg_options=RANDOM_MODEL_OPTIONS)


def _sorted(pred):
    return pred.select(np.lexsort((pred.boxes[:, 5], -pred.scores)))


def test_same_scene_at_twice_the_resolution(predictor, demo_folder):
    """Nearest-upsampling ×2 with K scaled exactly: resizing back gives the same network input and the same
    model-frame intrinsics, so every 3D output agrees; 2D outputs are twice as large (continuous pixels)."""
    r = demo_folder[1]['wide_640x360']
    img, K = r['img'], r['cam2img']
    up = cv2.resize(img, (1280, 720), interpolation=cv2.INTER_NEAREST)
    K_up = K.copy()
    K_up[:2] *= 2
    K_up[:2, 2] = 2 * (K[:2, 2] + 0.5) - 0.5                      # pixel-centre convention
    a, b = (_sorted(predictor.predict([i], [k])[0]) for i, k in ((img, K), (up, K_up)))  # one seeded draw each
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-4)
    np.testing.assert_allclose(b.pose_cov, a.pose_cov, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
    np.testing.assert_allclose(b.bboxes_2d, 2 * a.bboxes_2d, atol=1e-3)
    np.testing.assert_allclose(b.x2d + 0.5, 2 * (a.x2d + 0.5), atol=1e-3)
    np.testing.assert_allclose(b.x3d, a.x3d, atol=1e-5)


def test_same_scene_already_cropped(predictor, demo_folder):
    """The bottom 640x256 rows with cy - 104 is exactly the network input of the 640x360 image."""
    r = demo_folder[1]['wide_640x360']
    img, K = r['img'], r['cam2img']
    K_crop = K.copy()
    K_crop[1, 2] -= 104
    a, b = (_sorted(predictor.predict([i], [k])[0]) for i, k in ((img, K), (img[104:], K_crop)))
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b.boxes, a.boxes, rtol=1e-4, atol=1e-4)      # float32 PnP with another cy
    np.testing.assert_allclose(b.x2d[..., 1] + 104, a.x2d[..., 1], atol=1e-3)
