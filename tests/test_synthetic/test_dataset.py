"""The generated dataset through the unchanged nuscenes-devkit: tables, files, ground truth, evaluation."""
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest

from epropnp_det.synthetic import CAMERAS, CLASSES, LIDAR, GeneratorConfig, generate_dataset
from epropnp_det.synthetic.constants import CAMERA_RIG, CLASS_COLORS

from .conftest import TINY_KWARGS

pytest.importorskip('nuscenes')

TABLES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor', 'ego_pose', 'log',
          'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
VEHICLES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle')


def test_devkit_loads_tables_and_files(nusc, synthetic_root):
    from PIL import Image

    root, summary = synthetic_root
    assert [s['name'] for s in nusc.scene] == ['scene-0061', 'scene-0103', 'scene-0553', 'scene-0916']
    assert len(nusc.sample) == 12 == summary['num_samples']
    assert {v['token'] for v in nusc.visibility} == {'1', '2', '3', '4'}
    assert len(nusc.attribute) == 8
    for rec in nusc.map:
        assert osp.isfile(osp.join(root, rec['filename']))
    for scene in nusc.scene:
        tok, prev, n, ts = scene['first_sample_token'], '', 0, None
        while tok:
            sample = nusc.get('sample', tok)
            assert sample['prev'] == prev and sample['scene_token'] == scene['token']
            if ts is not None:
                assert sample['timestamp'] - ts == 500_000  # 2 Hz keyframes, microseconds
            assert set(sample['data']) == set(CAMERAS) | {LIDAR}
            for ch, sd_tok in sample['data'].items():
                sd = nusc.get('sample_data', sd_tok)
                assert sd['is_key_frame'] and sd['timestamp'] == sample['timestamp']
                path = osp.join(root, sd['filename'])
                assert sd['filename'].startswith(f'samples/{ch}/')
                if ch == LIDAR:
                    assert sd['fileformat'] == 'pcd' and osp.getsize(path) % 20 == 0 and osp.getsize(path) > 20000
                else:
                    assert sd['fileformat'] == 'jpg'
                    with Image.open(path) as im:
                        assert im.size == (640, 360) == (sd['width'], sd['height']) and im.mode == 'RGB'
                if sd['prev']:
                    assert nusc.get('sample_data', sd['prev'])['next'] == sd_tok
            prev, tok, ts, n = tok, sample['next'], sample['timestamp'], n + 1
        assert n == scene['nbr_samples'] == 3
    # Calibration: nuScenes-like intrinsics scaled to 640x360, horizontal optical axes, LiDAR at 1.84 m.
    for sample in nusc.sample[:1]:
        for ch in CAMERAS:
            cs = nusc.get('calibrated_sensor', nusc.get('sample_data', sample['data'][ch])['calibrated_sensor_token'])
            K = np.array(cs['camera_intrinsic'])
            np.testing.assert_allclose(K[0, 0], CAMERA_RIG[ch][2] * 0.4, rtol=1e-9)
            np.testing.assert_allclose(K[1, 2], CAMERA_RIG[ch][5] * 0.4, rtol=1e-9)
            assert abs(cs['translation'][2] - CAMERA_RIG[ch][0][2]) <= 0.02
        cs = nusc.get('calibrated_sensor', nusc.get('sample_data', sample['data'][LIDAR])['calibrated_sensor_token'])
        assert cs['translation'][2] == pytest.approx(1.84) and cs['camera_intrinsic'] == []


def test_annotation_tables_are_consistent(nusc):
    """Counts, ground contact and instance chains of the annotation table (values are checked against the images
    in :func:`test_annotated_boxes_bound_the_object_pixels`, LiDAR counts in the devkit recount below)."""
    assert len(nusc.sample_annotation) > 100
    counts = [len(s['anns']) for s in nusc.sample]
    assert 10 <= np.mean(counts) <= 40 and min(counts) >= 5
    for ann in nusc.sample_annotation:
        assert ann['num_lidar_pts'] >= 1
        assert ann['translation'][2] == pytest.approx(ann['size'][2] / 2)  # standing on the ground z = 0
    # Instance chains: prev/next walk covers exactly nbr_annotations records of one instance.
    for inst in nusc.instance:
        tok, n = inst['first_annotation_token'], 0
        while tok:
            ann = nusc.get('sample_annotation', tok)
            assert ann['instance_token'] == inst['token']
            tok, n = ann['next'], n + 1
        assert n == inst['nbr_annotations']


def test_annotated_boxes_bound_the_object_pixels(nusc, synthetic_root):
    """Each annotation (translation, size, rotation) with the sample's ego pose and calibration as written in the
    tables, projected by the devkit: for every box whose projection is clear of the others and inside the image,
    the pixels that differ from the empty scene (the generator's sky and ground alone, no objects) span exactly
    the projected box, to 1 px on each side (pixel i is lit when its centre, u = i, is inside). A 0.2 m error in
    the position moves the sides by 4-10 px here."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points
    from PIL import Image

    from epropnp_det.synthetic.generator import SCENE_ORDER, SceneSetup
    from epropnp_det.synthetic.render import CameraRenderer
    cfg = GeneratorConfig(out_dir=synthetic_root[0], workers=1, **TINY_KWARGS)
    margin, errors = 3, []
    for sample in nusc.sample:
        setup = SceneSetup(cfg, SCENE_ORDER.index(nusc.get('scene', sample['scene_token'])['name']))
        k = next(i for i in range(cfg.samples_per_scene) if setup.timestamp(i) == sample['timestamp'])
        ego_trans, ego_yaw = setup.world.ego_pose(setup.time_s(k))
        for cam in setup.cameras:
            path, boxes, K = nusc.get_sample_data(sample['data'][cam.name], box_vis_level=BoxVisibility.ANY)
            img = np.asarray(Image.open(path), dtype=np.float32)
            empty = CameraRenderer(cam).background(setup.world.road, ego_trans, ego_yaw)
            changed = np.abs(img - empty).max(-1) > 40  # JPEG and pixel noise stay far below
            H, W = changed.shape
            rects = []
            for box in boxes:
                corners = box.corners()
                if (corners[2] < 1.0).any():
                    rects.append(None)
                    continue
                uv = view_points(corners, K, normalize=True)[:2]
                rects.append((uv[0].min(), uv[0].max(), uv[1].min(), uv[1].max()))
            for i, r in enumerate(rects):
                if r is None:
                    continue
                u0, u1, v0, v1 = r
                if u0 < 4 or v0 < 4 or u1 > W - 5 or v1 > H - 5 or u1 - u0 < 4 or v1 - v0 < 4:
                    continue
                if any(o is not None and o[1] >= u0 - 2 * margin and o[0] <= u1 + 2 * margin and
                       o[3] >= v0 - 2 * margin and o[2] <= v1 + 2 * margin for j, o in enumerate(rects) if j != i):
                    continue  # another object's projection is near: its pixels would blur the extent
                a0, b0 = int(np.floor(u0)) - margin, int(np.floor(v0)) - margin
                win = changed[b0:int(np.ceil(v1)) + margin + 1, a0:int(np.ceil(u1)) + margin + 1]
                ys, xs = np.nonzero(win)
                assert len(xs), (sample['token'], cam.name, boxes[i].token)
                got = np.array([xs.min() + a0, xs.max() + a0, ys.min() + b0, ys.max() + b0])
                errors.append(np.abs(got - [np.ceil(u0), np.floor(u1), np.ceil(v0), np.floor(v1)]).max())
    errors = np.array(errors)
    assert len(errors) >= 60, len(errors)
    assert (errors <= 1).mean() >= 0.97 and np.median(errors) == 0, np.bincount(errors.astype(int))


def test_num_lidar_pts_recount_with_devkit(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    n_checked = 0
    for sample in nusc.sample:
        sd_tok = sample['data'][LIDAR]
        pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_tok))
        _, boxes, _ = nusc.get_sample_data(sd_tok)  # boxes in the LiDAR frame
        assert len(boxes) == len(sample['anns'])
        for box in boxes:
            assert points_in_box(box, pc.points[:3]).sum() == nusc.get('sample_annotation', box.token)['num_lidar_pts']
            n_checked += 1
    assert n_checked == len(nusc.sample_annotation)


def test_velocities_and_attributes(nusc, gt_by_token):
    attr_names = {a['token']: a['name'] for a in nusc.attribute}
    errs, n_moving = [], 0
    for ann in nusc.sample_annotation:
        g = gt_by_token[ann['token']]
        v_gt = np.array(g['velocity'])
        speed = np.linalg.norm(v_gt)
        v = nusc.box_velocity(ann['token'])[:2]
        if ann['prev'] or ann['next']:
            err = np.linalg.norm(v - v_gt)
            # Finite differences of motion along a curved road: chord vs tangent (<= ~3 % of the speed).
            assert err <= 0.04 * speed + 1e-6, (g, v)
            errs.append(err)
        n_moving += speed > 1.0
        attrs = [attr_names[t] for t in ann['attribute_tokens']]
        name = g['detection_name']
        if name in VEHICLES:
            assert attrs == ['vehicle.moving'] if speed > 0 else attrs[0] in ('vehicle.parked', 'vehicle.stopped')
        elif name in ('bicycle', 'motorcycle'):
            assert len(attrs) == 1 and attrs[0] in ('cycle.with_rider', 'cycle.without_rider')
            if speed > 0:
                assert attrs == ['cycle.with_rider']
        elif name == 'pedestrian':
            assert attrs == (['pedestrian.moving'] if speed > 0 else ['pedestrian.standing'])
        else:
            assert attrs == [] and speed == 0
    assert n_moving >= 10 and np.median(errs) < 0.01


def test_unoccluded_objects_are_fully_visible(nusc):
    """Visibility against the images' geometry: an object whose projected box (from the tables) overlaps no other
    object's projected box in any camera cannot be occluded, so its visibility token is '4' (visible pixels /
    unoccluded in-image pixels = 1); an object in no camera image is '1'."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points
    clear, seen = {}, set()
    for sample in nusc.sample:
        for ch in CAMERAS:
            _, boxes, K = nusc.get_sample_data(sample['data'][ch], box_vis_level=BoxVisibility.ANY)
            rects = []
            for box in boxes:
                corners = box.corners()
                if (corners[2] < 0.2).any():  # partly behind the camera: no simple rectangle
                    rects.append(None)
                    continue
                uv = view_points(corners, K, normalize=True)[:2]
                rects.append((uv[0].min(), uv[0].max(), uv[1].min(), uv[1].max()))
            for i, (box, r) in enumerate(zip(boxes, rects)):
                seen.add(box.token)
                alone = r is not None and all(
                    o is None and np.linalg.norm(b.center) > np.linalg.norm(box.center) + 5 or
                    o is not None and (o[1] < r[0] - 1 or o[0] > r[1] + 1 or o[3] < r[2] - 1 or o[2] > r[3] + 1)
                    for j, (b, o) in enumerate(zip(boxes, rects)) if j != i)
                clear[box.token] = clear.get(box.token, True) and alone
    checked = [t for t, ok in clear.items() if ok]
    assert len(checked) >= 50, len(checked)
    tokens = [nusc.get('sample_annotation', t)['visibility_token'] for t in checked]
    assert tokens.count('4') == len(tokens), {v: tokens.count(v) for v in '1234'}
    unseen = [a for a in nusc.sample_annotation if a['token'] not in seen]
    assert all(a['visibility_token'] == '1' for a in unseen)


def test_visibility_levels(nusc, gt_by_token):
    tokens = []
    for ann in nusc.sample_annotation:
        frac = gt_by_token[ann['token']]['visibility']
        expected = '1' if frac < 0.4 else '2' if frac < 0.6 else '3' if frac < 0.8 else '4'
        assert ann['visibility_token'] == expected
        tokens.append(expected)
    hist = {t: tokens.count(t) for t in '1234'}
    assert hist['4'] > len(tokens) / 3 and hist['1'] + hist['2'] + hist['3'] > 0, hist


def test_detection_eval_mini_val_gt_as_predictions(nusc, tmp_path):
    """GT boxes of the mini_val scenes as predictions: every class with ground truth scores AP = 1 and all TP
    errors are 0 (the devkit's own distance and zero-point filters are applied to both)."""
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.splits import create_splits_scenes

    val = create_splits_scenes()['mini_val']
    assert {'scene-0103', 'scene-0916'} <= {s['name'] for s in nusc.scene} and set(val) == {'scene-0103',
                                                                                                'scene-0916'}
    results = {}
    attr_names = {a['token']: a['name'] for a in nusc.attribute}
    for sample in nusc.sample:
        if nusc.get('scene', sample['scene_token'])['name'] not in val:
            continue
        results[sample['token']] = []
        for tok in sample['anns']:
            ann = nusc.get('sample_annotation', tok)
            v = nusc.box_velocity(tok)[:2]
            results[sample['token']].append(dict(
                sample_token=sample['token'], translation=ann['translation'], size=ann['size'],
                rotation=ann['rotation'], velocity=[0.0, 0.0] if np.isnan(v).any() else v.tolist(),
                detection_name=category_to_detection_name(ann['category_name']), detection_score=1.0,
                attribute_name=attr_names[ann['attribute_tokens'][0]] if ann['attribute_tokens'] else ''))
    meta = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
    path = tmp_path / 'results_nusc.json'
    path.write_text(json.dumps(dict(meta=meta, results=results)))
    ev = DetectionEval(nusc, config_factory('detection_cvpr_2019'), str(path), 'mini_val', str(tmp_path),
                       verbose=False)
    metrics, _ = ev.evaluate()
    present = [c for c in CLASSES if any(b.detection_name == c for b in ev.gt_boxes.all)]
    assert len(present) >= 9, present
    for c in present:
        for dist_th in (0.5, 1.0, 2.0, 4.0):
            assert metrics.get_label_ap(c, dist_th) == pytest.approx(1.0), c
        for name in ('trans_err', 'scale_err', 'orient_err', 'vel_err', 'attr_err'):
            err = metrics.get_label_tp(c, name)
            assert np.isnan(err) or err == pytest.approx(0.0, abs=1e-6), (c, name, err)


def _chroma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb / max(rgb.sum(), 1e-9)


def _expected_surface(cam_loc, d_loc, half, cls):
    """What the renderer paints where the ray cam_loc + t d_loc (box frame) enters the box: 'white' (front
    panel, front-end band of sides/top) or the class name; None near a pattern boundary or a face edge."""
    with np.errstate(divide='ignore'):
        t_axis = np.minimum((-half - cam_loc) / d_loc, (half - cam_loc) / d_loc)
    axis = int(np.argmax(t_axis))
    plus = d_loc[axis] < 0
    pn = (cam_loc + t_axis[axis] * d_loc) / half
    a = pn[1] if axis == 0 else pn[0]
    b = pn[1] if axis == 2 else pn[2]
    if max(abs(a), abs(b)) > 0.8:
        return None
    if axis == 0 and plus:
        if min(abs(abs(a) - 0.6), abs(b + 0.5), abs(b - 0.6)) < 0.2:  # ~1 px at small objects
            return None
        return 'white' if abs(a) < 0.6 and -0.5 < b < 0.6 else cls
    if axis == 1 or (axis == 2 and plus):
        if abs(a - 0.72) < 0.2:
            return None
        return 'white' if a > 0.72 else cls
    return cls


def test_images_show_class_colour_at_box_centres(nusc, gt_by_token):
    """Projecting well-visible boxes with the devkit (calibration as written in the tables): the pixel at the
    projected box centre has the hue of what the renderer paints there (class colour, or the white panel of the
    front face); and the front-face centre is white exactly when the camera is in front of the object."""
    (ok, total), (front_ok, front_total) = colour_agreement(nusc, gt_by_token)
    assert total >= 40 and ok / total >= 0.95, (ok, total)
    assert front_total >= 5 and front_ok / front_total >= 0.9, (front_ok, front_total)


def colour_agreement(nusc, gt_by_token, static_only=False, min_px=150, only=None):
    """``((ok, total), (front_ok, front_total))`` of the centre-colour and front-panel checks over every camera
    image, projecting with the camera's own ``sample_data`` ego pose (the devkit's ``get_sample_data``);
    ``static_only`` keeps objects with zero velocity (for cameras captured off the keyframe time); ``only``: a set
    of ``(sample_data token, annotation token)`` pairs to check (default: all)."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points
    from PIL import Image

    palette = {c: _chroma(CLASS_COLORS[c]) for c in CLASSES if c != 'barrier'}
    palette['white'] = _chroma((1, 1, 1))
    ok = total = front_ok = front_total = 0
    for sample in nusc.sample:
        for ch in CAMERAS:
            path, boxes, K = nusc.get_sample_data(sample['data'][ch], box_vis_level=BoxVisibility.ALL)
            img = np.asarray(Image.open(path), dtype=np.float64)
            for box in boxes:
                g = gt_by_token[box.token]
                if g['detection_name'] == 'barrier' or g['visibility_token'] != '4' or \
                        g['cam_visible_px'][ch] < min_px or (static_only and any(g['velocity'])) or \
                        (only is not None and (sample['data'][ch], box.token) not in only):
                    continue
                R = box.rotation_matrix
                half = np.array([box.wlh[1], box.wlh[0], box.wlh[2]]) / 2
                cam_loc = R.T @ (-box.center)                     # camera centre in the box frame
                expect = _expected_surface(cam_loc, R.T @ box.center, half, g['detection_name'])
                if expect is None:
                    continue
                u, v = np.round(view_points(box.center[:, None], K, normalize=True)[:2, 0]).astype(int)
                patch = _chroma(img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).mean(0))
                nearest = min(palette, key=lambda c: np.linalg.norm(palette[c] - patch))
                total += 1
                ok += nearest == expect
                # Front-face centre of vehicles seen from clearly in front of / behind them.
                if abs(cam_loc[0]) > half[0] + 1.0 and abs(cam_loc[1]) < half[1] + 3.0 and \
                        g['detection_name'] in VEHICLES:
                    face = box.center + R[:, 0] * np.sign(cam_loc[0]) * half[0]
                    uf, vf = np.round(view_points(face[:, None], K, normalize=True)[:2, 0]).astype(int)
                    if 1 <= uf < img.shape[1] - 1 and 1 <= vf < img.shape[0] - 1:
                        p = _chroma(img[vf - 1:vf + 2, uf - 1:uf + 2].reshape(-1, 3).mean(0))
                        front_total += 1
                        front_ok += (np.linalg.norm(p - palette['white']) < 0.05) == (cam_loc[0] > 0)
    return (ok, total), (front_ok, front_total)


def test_determinism_across_runs_and_workers(synthetic_root, tmp_path):
    root, _ = synthetic_root
    other = tmp_path / 'again'
    generate_dataset(GeneratorConfig(out_dir=str(other), workers=2, **TINY_KWARGS), progress=False)
    for name in TABLES:
        assert filecmp.cmp(osp.join(root, 'v1.0-mini', f'{name}.json'), other / 'v1.0-mini' / f'{name}.json',
                           shallow=False), name
    assert filecmp.cmp(osp.join(root, 'synthetic_gt.json'), other / 'synthetic_gt.json', shallow=False)
    for ch in (CAMERAS[0], CAMERAS[3], LIDAR):
        files = sorted(os.listdir(osp.join(root, 'samples', ch)))
        assert len(files) == 12
        for f in files[::5]:
            assert filecmp.cmp(osp.join(root, 'samples', ch, f), other / 'samples' / ch / f, shallow=False)
    # A different seed gives a different world.
    third = tmp_path / 'seed1'
    kw = dict(TINY_KWARGS, seed=1, num_scenes=1, samples_per_scene=1)
    generate_dataset(GeneratorConfig(out_dir=str(third), workers=1, **kw), progress=False)
    a = json.loads((third / 'v1.0-mini' / 'sample_annotation.json').read_text())
    b = json.loads(open(osp.join(root, 'v1.0-mini', 'sample_annotation.json')).read())
    assert a[0]['translation'] != b[0]['translation']


def test_bad_options_raise_clear_errors(tmp_path, synthetic_root):
    with pytest.raises(ValueError, match='num_scenes'):
        generate_dataset(GeneratorConfig(out_dir=str(tmp_path / 'x'), num_scenes=0), progress=False)
    with pytest.raises(ValueError, match='image_size'):
        generate_dataset(GeneratorConfig(out_dir=str(tmp_path / 'x'), image_size=(8, 8)), progress=False)
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_dataset(GeneratorConfig(out_dir=synthetic_root[0], **TINY_KWARGS), progress=False)
