"""Round trips and brute-force references for the box / frame / pixel conventions."""
import math

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from epropnp_det.structures import boxes as B


def random_boxes(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    lhw = torch.rand(n, 3, generator=g, dtype=torch.float64) * 4 + 0.3
    xyz = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([20., 2., 30.], dtype=torch.float64) \
        + torch.tensor([-10., -1., 2.], dtype=torch.float64)
    yaw = (torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    velo = torch.randn(n, 2, generator=g, dtype=torch.float64) * 3
    return torch.cat([lhw, xyz, yaw], 1), velo


def random_pose(seed, tilt=0.05):
    rng = np.random.default_rng(seed)
    q = Quaternion(axis=rng.normal(size=3), angle=rng.uniform(-math.pi, math.pi))
    m = np.eye(4)
    m[:3, :3] = q.rotation_matrix
    m[:3, 3] = rng.normal(size=3) * 50
    return torch.from_numpy(m)


def test_model_cam_boxes_round_trip_and_corners():
    boxes, velo = random_boxes()
    cam = B.model_to_cam_boxes(boxes, velo)
    assert cam.tensor.shape == (20, 9)
    # bottom centre = centre + h/2 along +y (down)
    assert torch.allclose(cam.tensor[:, 1].double(), boxes[:, 4] + boxes[:, 1] / 2, atol=1e-5)
    back, vback = B.cam_boxes_to_model(cam)
    assert torch.allclose(back.double(), boxes, atol=1e-5)
    assert torch.allclose(vback.double(), velo, atol=1e-5)
    assert torch.allclose(cam.corners.double(), B.model_boxes_corners(boxes), atol=1e-4)
    # without velocities
    assert B.model_to_cam_boxes(boxes).tensor.shape == (20, 7)
    with pytest.raises(ValueError, match='boxes'):
        B.model_to_cam_boxes(boxes[:, :6])


def test_corners_geometry():
    boxes, _ = random_boxes(5)
    c = B.model_boxes_corners(boxes)
    assert torch.allclose(c.mean(1), boxes[:, 3:6])
    # heading (cos yaw, 0, -sin yaw): corners 4..7 (+l/2) minus 0..3 (-l/2) point along it with length l
    d = (c[:, 4] - c[:, 0])
    heading = torch.stack([torch.cos(boxes[:, 6]), torch.zeros(5, dtype=torch.float64), -torch.sin(boxes[:, 6])], 1)
    assert torch.allclose(d, heading * boxes[:, 0:1])
    assert len(B.box_edges()) == 12


def test_rot_mat_to_quaternion_matches_pyquaternion():
    for seed in range(20):
        q = Quaternion(axis=np.random.default_rng(seed).normal(size=3), angle=seed * 0.33 - 3)
        ours = B.rot_mat_to_quaternion(torch.from_numpy(q.rotation_matrix))
        ref = q.elements * (1 if q.elements[0] >= 0 else -1)
        assert np.allclose(ours.numpy(), ref, atol=1e-10)


def test_yaw_quaternion_round_trip_and_mmdet3d_equivalence():
    yaw = torch.linspace(-math.pi + 1e-3, math.pi - 1e-3, 37, dtype=torch.float64)
    q = B.yaw_to_nus_quaternion(yaw)
    assert torch.allclose(B.nus_quaternion_to_yaw(q), yaw, atol=1e-9)
    for y, qq in zip(yaw.tolist(), q.numpy()):
        ref = Quaternion(axis=[1, 0, 0], radians=math.pi / 2) * Quaternion(axis=[0, 0, 1], radians=-y)  # mmdet3d
        assert abs(abs(np.dot(ref.elements, qq)) - 1) < 1e-10


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_frame_round_trip_and_devkit_box(seed):
    from nuscenes.utils.data_classes import Box
    boxes, velo = random_boxes(10, seed)
    tf = random_pose(seed)
    out = B.model_boxes_to_frame(boxes, tf, velo)
    back, vback = B.frame_boxes_to_model(out['center'], out['wlh'], out['quat'], B.invert_pose(tf), out['velocity'])
    assert torch.allclose(back, boxes, atol=1e-9)
    assert torch.allclose(vback, velo, atol=1e-9)
    # the devkit moving a camera-frame Box gives the same centre / orientation / velocity
    for i in range(10):
        cam = B.model_boxes_to_frame(boxes[i:i + 1], torch.eye(4, dtype=torch.float64), velo[i:i + 1])
        box = Box(cam['center'][0].numpy(), cam['wlh'][0].numpy(), Quaternion(cam['quat'][0].numpy()),
                  velocity=tuple(cam['velocity'][0].numpy()))
        box.rotate(Quaternion(matrix=tf[:3, :3].numpy()))
        box.translate(tf[:3, 3].numpy())
        assert np.allclose(box.center, out['center'][i].numpy(), atol=1e-9)
        assert np.allclose(box.rotation_matrix, out['rot'][i].numpy(), atol=1e-9)
        assert np.allclose(box.velocity, out['velocity'][i].numpy(), atol=1e-9)
        # devkit corners in the frame = our corners transformed
        ours = B.model_boxes_corners(boxes[i:i + 1])[0] @ tf[:3, :3].T + tf[:3, 3]
        ref = box.corners().T
        d = np.abs(ours.numpy()[:, None] - ref[None]).sum(-1).min(1)
        assert d.max() < 1e-9


def test_cam2global_matrix_exact():
    e2g, l2e, c2g = random_pose(1), random_pose(2), random_pose(3)
    lidar2cam = B.invert_pose(c2g) @ e2g @ l2e
    got = B.cam2global_matrix(lidar2cam.numpy(), l2e.numpy(), e2g.numpy())
    assert torch.allclose(got, c2g, atol=1e-9)
    assert torch.allclose(B.invert_pose(c2g) @ c2g, torch.eye(4, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize('convention', ['v1', 'v2'])
def test_flip_boxes_and_intrinsics(convention):
    boxes, velo = random_boxes()
    f1, v1 = B.flip_boxes(boxes, velo)
    f2, v2 = B.flip_boxes(f1, v1)
    assert torch.allclose(f2[:, :6], boxes[:, :6]) and torch.allclose(v2, velo)
    assert torch.allclose(B.wrap_to_pi(f2[:, 6] - boxes[:, 6]), torch.zeros(20, dtype=torch.float64), atol=1e-12)
    k = torch.tensor([[1266., 0., 816.], [0., 1266., 491.], [0., 0., 1.]], dtype=torch.float64)
    w = 1600.
    uv = B.project_points(B.model_boxes_corners(boxes), k)
    uvf = B.project_points(B.model_boxes_corners(f1), B.flip_intrinsics(k, w, convention))
    # corner sets are mirrored (order may permute): compare sorted u and v per box
    mirrored = w - 2 * B.PIXEL_CONVENTIONS[convention] - uv[..., 0]
    assert torch.allclose(uvf[..., 0].sort(-1).values, mirrored.sort(-1).values, atol=1e-8)
    assert torch.allclose(uvf[..., 1].sort(-1).values, uv[..., 1].sort(-1).values, atol=1e-8)
    # in continuous coordinates both conventions give the same mirror W - u
    cont = B.k_projection_to_continuous(uv[..., 0], convention)
    cont_f = B.k_projection_to_continuous(uvf[..., 0], convention)
    assert torch.allclose(cont_f.sort(-1).values, (w - cont).sort(-1).values, atol=1e-8)


def test_pixel_conventions_and_transforms():
    uv = torch.tensor([[10., 20.], [0., 0.]], dtype=torch.float64)
    assert torch.equal(B.k_projection_to_continuous(uv, 'v1'), uv + 0.5)
    assert torch.equal(B.continuous_to_k_projection(B.k_projection_to_continuous(uv, 'v1'), 'v1'), uv)
    assert torch.equal(B.k_projection_to_continuous(uv, 'v2'), uv)
    t = B.crop_transform(5, 7) @ B.scale_transform(0.5, 2.0) @ B.flip_transform(100)
    got = B.apply_transform(t, uv)
    exp = torch.stack([(100 - uv[:, 0]) * 0.5 - 5, uv[:, 1] * 2 - 7], 1)
    assert torch.allclose(got, exp)
    assert np.allclose(B.apply_transform(t, uv.numpy()), exp.numpy())
    # pixel edges: flip maps [0, W] onto itself, pixel i onto W-1-i
    f = B.flip_transform(100)
    assert np.allclose(B.apply_transform(f, np.array([[0.5, 0.], [99.5, 0.]]))[:, 0], [99.5, 0.5])


def test_points_to_box_local():
    boxes, _ = random_boxes(4)
    oc = torch.rand(4, 50, 3, dtype=torch.float64) - 0.5
    oc = oc * boxes[:, None, 0:3]
    from epropnp_det.ops.pnp.rotation import yaw_to_rot_mat
    pts = (oc @ yaw_to_rot_mat(boxes[:, 6]).transpose(-1, -2) + boxes[:, None, 3:6])
    for i in range(4):
        got = B.points_to_box_local(pts[i], boxes)[i]
        assert torch.allclose(got, oc[i], atol=1e-10)


def test_project_boxes_to_2d_brute_force():
    k = np.array([[300., 0., 200.], [0., 300., 110.], [0., 0., 1.]])
    size = (400, 225)
    boxes = torch.tensor([[4., 1.5, 2., 0.5, 0.3, 10., 0.4],       # fully visible
                          [4., 1.5, 2., 3.0, 0.5, 1.0, 0.2],       # crosses the near plane, partly off-image
                          [2., 1.5, 2., -40., 0., 8., 0.]],        # off-image
                         dtype=torch.float64)
    got, valid = B.project_boxes_to_2d(boxes, k, size)
    assert valid.tolist() == [True, True, False]
    # brute force: dense points of the solid box with z >= 0.1, projected, inside the canvas
    lin = np.linspace(-0.5, 0.5, 41)
    grid = np.stack(np.meshgrid(lin, lin, lin, indexing='ij'), -1).reshape(-1, 3)
    from epropnp_det.ops.pnp.rotation import yaw_to_rot_mat
    for i in range(2):
        b = boxes[i].numpy()
        pts = (grid * b[:3]) @ yaw_to_rot_mat(torch.tensor(b[6])).numpy().T + b[3:6]
        pts = pts[pts[:, 2] >= 0.1]
        uv = (pts @ k.T)[:, :2] / pts[:, 2:3]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= size[0]) & (uv[:, 1] >= 0) & (uv[:, 1] <= size[1])
        uv = uv[inside]
        ref = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
        # dense sampling under-estimates the extent by at most one grid step on screen
        assert np.all(np.abs(got[i] - ref) < 3.0), (got[i], ref)
        assert got[i][0] <= ref[0] + 1e-6 and got[i][2] >= ref[2] - 1e-6
    # fully visible box: equals the plain corner hull
    uv = B.project_points(B.model_boxes_corners(boxes[:1]), torch.from_numpy(k))[0].numpy()
    assert np.allclose(got[0], [uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
    # v1 convention shifts by +0.5
    got1, _ = B.project_boxes_to_2d(boxes[:1], k, size, convention='v1')
    assert np.allclose(got1[0], got[0] + 0.5)
