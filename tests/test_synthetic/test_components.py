"""Unit tests of the generator's building blocks (numpy only, except where the devkit is the reference)."""
import subprocess
import sys

import numpy as np
import pytest

from epropnp_det.synthetic.constants import CAMERA_RIG, CLASS_COLORS, CLASSES, LIDAR_TRANSLATION
from epropnp_det.synthetic.geometry import (
    Road,
    box_corners,
    camera_rotation,
    matrix_to_quaternion,
    quaternion_to_matrix,
    ray_box_intersect,
    rot_z,
    yaw_to_quaternion,
)
from epropnp_det.synthetic.lidar import count_points_in_boxes, lidar_sweep
from epropnp_det.synthetic.render import Camera, CameraRenderer, _clipped_rect
from epropnp_det.synthetic.world import EGO_LATERAL, SceneWorld


def test_import_without_mm():
    code = ('import sys, epropnp_det.synthetic, epropnp_det.synthetic.generator; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmdet", "mmdet3d", "mmengine", "torch")]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('curvature', [1 / 180.0, -1 / 700.0, 1e-5])
def test_road_round_trip_and_velocity(curvature):
    road = Road([812.0, 1340.0], 2.1, curvature)
    s = np.linspace(-90.0, 140.0, 11)
    lat = np.linspace(-22.0, 22.0, 11)
    xy = road.point(s, lat)
    s2, l2 = road.to_road(xy[:, 0], xy[:, 1])
    np.testing.assert_allclose(s2, s, atol=1e-6)
    np.testing.assert_allclose(l2, lat, atol=1e-6)
    # Heading is the direction of d point / ds on the centreline; velocity is the time derivative.
    eps = 1e-4
    fd = (road.point(s + eps, 0.0) - road.point(s - eps, 0.0)) / (2 * eps)
    np.testing.assert_allclose(fd, np.stack([np.cos(road.heading(s)), np.sin(road.heading(s))], 1), atol=1e-6)
    v = road.velocity(s, lat, -7.5)
    fd = (road.point(s - 7.5 * eps, lat) - road.point(s + 7.5 * eps, lat)) / (2 * eps)
    np.testing.assert_allclose(v, fd, atol=1e-5)
    with pytest.raises(ValueError, match='curvature'):
        Road([0, 0], 0.0, 0.0)


def test_quaternions_match_pyquaternion():
    pyq = pytest.importorskip('pyquaternion')
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        R = pyq.Quaternion(q).rotation_matrix
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)
        np.testing.assert_allclose(pyq.Quaternion(matrix_to_quaternion(R)).rotation_matrix, R, atol=1e-12)
    for yaw in (-3.0, -0.4, 0.0, 1.2, 3.1):
        np.testing.assert_allclose(yaw_to_quaternion(yaw), pyq.Quaternion(axis=[0, 0, 1], angle=yaw).elements,
                                   atol=1e-12)
        np.testing.assert_allclose(quaternion_to_matrix(yaw_to_quaternion(yaw)), rot_z(yaw), atol=1e-12)


def test_camera_rig_conventions():
    # Real nuScenes CAM_FRONT calibration is ~[0.4998, -0.5030, 0.4998, -0.4973].
    np.testing.assert_allclose(matrix_to_quaternion(camera_rotation(0.0)), [0.5, -0.5, 0.5, -0.5], atol=1e-12)
    for name, (trans, yaw_deg, fx, fy, cx, cy) in CAMERA_RIG.items():
        R = camera_rotation(np.deg2rad(yaw_deg))
        yaw = np.deg2rad(yaw_deg)
        np.testing.assert_allclose(R[:, 2], [np.cos(yaw), np.sin(yaw), 0.0], atol=1e-12)  # optical axis level
        np.testing.assert_allclose(R[:, 1], [0.0, 0.0, -1.0], atol=1e-12)                 # image y = down
        np.testing.assert_allclose(np.cross(R[:, 0], R[:, 1]), R[:, 2], atol=1e-12)       # right-handed
    assert CAMERA_RIG['CAM_BACK'][2] < 900 < CAMERA_RIG['CAM_FRONT'][2]  # wider back camera
    assert LIDAR_TRANSLATION[2] == pytest.approx(1.84)


def test_ray_box_intersect_brute_force():
    rng = np.random.default_rng(1)
    half = np.array([2.0, 0.9, 0.8])
    origin = np.array([-7.0, 2.5, 1.9])
    dirs = rng.uniform(-1.5, 1.5, (400, 3)) * half - origin  # aimed around the box: hits and misses
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t_in, t_out, axis, sign = ray_box_intersect(origin, dirs, half)
    ts = np.linspace(0, 20, 20001)
    n_hit = 0
    for i in range(len(dirs)):
        p = origin + ts[:, None] * dirs[i]
        inside = np.all(np.abs(p) <= half, axis=1)
        if inside.any():
            n_hit += 1
            assert t_in[i] == pytest.approx(ts[inside][0], abs=2e-3)
            assert t_out[i] == pytest.approx(ts[inside][-1], abs=2e-3)
            entry = origin + t_in[i] * dirs[i]
            assert entry[axis[i]] == pytest.approx(sign[i] * half[axis[i]], abs=1e-9)
        else:  # missed, or a chord shorter than the brute-force step
            assert np.isinf(t_in[i]) or t_out[i] - t_in[i] < 2e-3
    assert 50 < n_hit < 390


def test_clipped_rect_contains_box_projection():
    K = np.array([[500.0, 0, 320], [0, 500.0, 180], [0, 0, 1]])
    rng = np.random.default_rng(2)
    for _ in range(30):
        c = rng.uniform([-4, -1, -1], [4, 2, 12])
        wlh = rng.uniform(0.5, 5.0, 3)
        R = rot_z(rng.uniform(-np.pi, np.pi))
        corners_cam = box_corners(np.zeros(3), wlh, 0.0) @ R.T + c
        rect = _clipped_rect(corners_cam, K, 640, 360)
        pts = rng.uniform(-0.5, 0.5, (5000, 3)) * wlh[[1, 0, 2]] @ R.T + c
        pts = pts[pts[:, 2] >= 0.1]
        uv = pts[:, :2] / pts[:, 2:] * 500.0 + [320, 180]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= 639) & (uv[:, 1] >= 0) & (uv[:, 1] <= 359)
        if rect is None:
            assert not inside.any()
            continue
        u0, u1, v0, v1 = rect
        uv = uv[inside]
        assert (uv[:, 0] >= u0 - 1e-6).all() and (uv[:, 0] <= u1 + 1e-6).all()
        assert (uv[:, 1] >= v0 - 1e-6).all() and (uv[:, 1] <= v1 + 1e-6).all()


def _front_camera(W=640, H=360):
    K = np.array([[506.6, 0.0, 326.5], [0.0, 506.6, 196.6], [0.0, 0.0, 1.0]])
    return Camera('CAM_FRONT', K, W, H, camera_rotation(0.0), np.array([1.7, 0.0, 1.5]))


def _boxes(centers, yaws, wlhs, classes):
    return dict(center=np.asarray(centers, float), yaw=np.asarray(yaws, float), wlh=np.asarray(wlhs, float),
                label=np.array([CLASSES.index(c) for c in classes]), gain=np.ones((len(classes), 3)))


def test_render_single_box_projection_and_colour():
    """An unoccluded car: its silhouette is exactly where sampled surface points project, its side-face centre
    shows the (shaded) class colour, and its front face carries the white panel on the heading side."""
    cam = _front_camera()
    road = Road([0.0, -1e4], 0.0, 1e-4)  # ego at the origin, road along +x
    ego_t, ego_yaw = np.zeros(3), 0.0
    # Car 15 m ahead, 3 m to the left, heading towards the camera's right-front (yaw -60 deg): front + left side.
    yaw = np.deg2rad(-120.0)
    center = np.array([16.7, 3.0, 0.8])
    wlh = np.array([1.9, 4.6, 1.6])
    boxes = _boxes([center], [yaw], [wlh], ['car'])
    img, fp, vis, id_map = CameraRenderer(cam).render(road, ego_t, ego_yaw, boxes, np.array([0.0, 0.0, 1.0]),
                                                       np.random.default_rng(0), noise_std=0.0)
    assert fp[0] == vis[0] > 1000
    # Project points sampled on the two camera-facing faces; all must land in the silhouette.
    R_g2c = camera_rotation(0.0).T
    R = rot_z(yaw)
    rng = np.random.default_rng(3)
    half = wlh[[1, 0, 2]] / 2

    def project(p_local):
        pc = (p_local @ R.T + center - cam.trans) @ R_g2c.T
        return pc[:, :2] / pc[:, 2:] * cam.K[0, 0] + cam.K[:2, 2]

    cam_loc = R.T @ (cam.trans - center)
    faces = [ax for ax in range(3) if abs(cam_loc[ax]) > half[ax]]
    for ax in faces:
        p = rng.uniform(-0.97, 0.97, (500, 3)) * half
        p[:, ax] = np.sign(cam_loc[ax]) * half[ax]
        uv = np.round(project(p)).astype(int)
        assert (id_map[uv[:, 1], uv[:, 0]] == 0).all()
    assert cam_loc[0] > half[0]  # the camera sees the front face
    # Front face centre (local +x): white panel.  Side face centre (local +-y): class colour, shaded by the sun.
    u, v = np.round(project(np.array([[half[0], 0.0, 0.0]]))[0]).astype(int)
    np.testing.assert_allclose(img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3), 245.0 * 0.55, atol=1.0)
    side = np.array([[0.0, np.sign(cam_loc[1]) * half[1], 0.0]])
    u, v = np.round(project(side)[0]).astype(int)
    np.testing.assert_allclose(img[v, u], np.array(CLASS_COLORS['car']) * 0.55, atol=1.0)  # vertical face, sun up


def test_render_occlusion_and_visibility():
    cam = _front_camera()
    road = Road([0.0, -1e4], 0.0, 1e-4)
    boxes = _boxes([[12.0, 0.0, 0.85], [25.0, 0.5, 1.0]], [0.0, 0.3], [[1.9, 4.5, 1.7], [2.5, 7.0, 2.0]],
                   ['car', 'truck'])
    r = CameraRenderer(cam)
    _, fp, vis, id_map = r.render(road, np.zeros(3), 0.0, boxes, np.array([0.3, 0.2, 0.93]),
                                  np.random.default_rng(0))
    assert vis[0] == fp[0] > 0
    assert 0 < vis[1] < fp[1]
    # Rendered alone, the truck covers exactly its footprint.
    one = {k: v[1:] for k, v in boxes.items()}
    _, fp1, vis1, _ = r.render(road, np.zeros(3), 0.0, one, np.array([0.3, 0.2, 0.93]), np.random.default_rng(0))
    assert fp1[0] == vis1[0] == fp[1]
    assert (id_map == 1).sum() == vis[1] and (id_map == 0).sum() == vis[0]


def test_lidar_points_classified_exactly():
    """Every LiDAR return is either on the ground (z = 0, ego) or strictly inside exactly one box, and the
    count agrees with the devkit's points_in_box."""
    rot = rot_z(np.deg2rad(-90.0))
    trans = np.array([0.94, 0.0, 1.84])
    road = Road([0.0, -1e4], 0.0, 1e-4)
    ego_t, ego_yaw = np.array([100.0, 50.0, 0.0]), 0.4
    centers_ego = np.array([[10.0, 0.0, 0.8], [-12.0, 4.0, 1.0], [3.0, -8.0, 0.55], [20.0, 2.0, 0.9]])
    center = centers_ego @ rot_z(ego_yaw).T + ego_t
    boxes = _boxes(center, [0.1, 1.0, 2.0, -0.5], [[1.9, 4.5, 1.6], [2.5, 7.0, 2.0], [0.4, 0.4, 1.1],
                                                  [0.7, 0.7, 1.8]], ['car', 'truck', 'traffic_cone', 'pedestrian'])
    pts = lidar_sweep(boxes, ego_t, ego_yaw, rot, trans, road, np.random.default_rng(0))
    assert pts.dtype == np.float32 and pts.shape[1] == 5
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
    counts = count_points_in_boxes(pts, boxes, ego_t, ego_yaw, rot, trans)
    assert (counts > 0).all()
    z_ego = pts[:, :3].astype(np.float64) @ rot.T[:, 2] + trans[2]
    n_ground = int((np.abs(z_ego) < 1e-4).sum())
    assert n_ground + counts.sum() == len(pts)
    ranges = np.linalg.norm(pts[:, :3], axis=1)
    assert ranges.max() <= 70.0 + 1e-3
    data_classes = pytest.importorskip('nuscenes.utils.data_classes')
    geometry_utils = pytest.importorskip('nuscenes.utils.geometry_utils')
    from pyquaternion import Quaternion
    for k in range(4):
        # Box in the LiDAR frame, as the devkit does it (global -> ego -> sensor).
        box = data_classes.Box(boxes['center'][k], boxes['wlh'][k], Quaternion(yaw_to_quaternion(boxes['yaw'][k])))
        box.translate(-ego_t)
        box.rotate(Quaternion(yaw_to_quaternion(ego_yaw)).inverse)
        box.translate(-trans)
        box.rotate(Quaternion(matrix_to_quaternion(rot)).inverse)
        assert geometry_utils.points_in_box(box, pts[:, :3].T).sum() == counts[k]


def _bev_overlap(c1, yaw1, lw1, c2, yaw2, lw2):
    """Separating-axis test of two rotated rectangles (centre xy, yaw, (l, w))."""
    def corners(c, yaw, lw):
        R = rot_z(yaw)[:2, :2]
        return (np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * np.asarray(lw) / 2) @ R.T + c
    a, b = corners(c1, yaw1, lw1), corners(c2, yaw2, lw2)
    for yaw in (yaw1, yaw2):
        for axis in (np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])):
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


@pytest.mark.parametrize('seed', [0, 1])
def test_world_objects_never_collide(seed):
    world = SceneWorld(np.random.default_rng(seed), 6)
    assert {o.cls for o in world.objects} == set(CLASSES)
    ego_lw = (4.9, 2.0)
    for k in range(6):
        t = 0.5 * k
        st = world.object_states(t)
        ids = world.visible_ids(t, st)
        assert 10 <= len(ids) <= 60
        ego_t, ego_yaw = world.ego_pose(t)
        s_e, l_e = world.road.to_road(ego_t[0], ego_t[1])
        assert l_e == pytest.approx(EGO_LATERAL, abs=1e-6)
        for n, i in enumerate(ids):
            lw_i = st['wlh'][i][[1, 0]]
            assert not _bev_overlap(st['center'][i][:2], st['yaw'][i], lw_i, ego_t[:2], ego_yaw, ego_lw)
            for j in ids[n + 1:]:
                assert not _bev_overlap(st['center'][i][:2], st['yaw'][i], lw_i, st['center'][j][:2], st['yaw'][j],
                                        st['wlh'][j][[1, 0]]), (world.objects[i], world.objects[j])
