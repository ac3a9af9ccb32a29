"""Each convention has one home, and every former copy now goes through it: round trips and independent references.

* 0.5-pixel convention (:mod:`epropnp_det.ops.pixels`): K-projection ↔ continuous round trip; the pixel centre of
  pixel i is the K-projection i in v1; the PnP camera's clamp bounds, the sampler's x2d, the centre target's rays,
  the RoI branch's cell coordinates and the projected 2D boxes all shift by exactly the table's offset.
* Box corners: :func:`epropnp_det.models.utils.box_corners` is mmdet3d's ``CameraInstance3DBoxes.corners``.
* BEV NMS: the head's camera-frame NMS and the metric's global-frame NMS are the same rectangles' NMS (and both agree
  with a brute-force shapely NMS).
* Class → attribute table: head default and metric from one table, consistent with the devkit's attribute names.
* 3D-score target: the pose stage's target is ``clamp((2.5 − log2 te)/4, 0, 1)`` (docs/method.md §5.5).
* Yaw rotation: the centre target's ray–box test uses ``ops.pnp.rotation.yaw_to_rot_mat``.
"""
import math

import numpy as np
import pytest
import torch

from epropnp_det.ops.pixels import (
    PIXEL_CONVENTIONS,
    continuous_to_k_projection,
    k_projection_offset,
    k_projection_to_continuous,
)


# ------------------------------------------------------------------------------------------------- pixels
@pytest.mark.parametrize('convention', ['v1', 'v2'])
def test_pixel_convention_round_trip_and_meaning(convention):
    uv = torch.rand(50, 2, dtype=torch.float64) * 1000 - 100
    torch.testing.assert_close(continuous_to_k_projection(k_projection_to_continuous(uv, convention), convention), uv,
                               rtol=0, atol=0)
    # v1: K projects the centre of pixel i (continuous i + 0.5) to the integer i; v2: to i + 0.5
    centre = torch.arange(5, dtype=torch.float64) + 0.5
    want = torch.arange(5, dtype=torch.float64) if convention == 'v1' else centre
    torch.testing.assert_close(continuous_to_k_projection(centre, convention), want)
    assert k_projection_offset(convention) == PIXEL_CONVENTIONS[convention]
    with pytest.raises(ValueError):
        k_projection_offset('v3')


def test_structures_reexport_the_one_table():
    from epropnp_det.structures import boxes
    assert boxes.PIXEL_CONVENTIONS is PIXEL_CONVENTIONS
    assert boxes.k_projection_to_continuous is k_projection_to_continuous


def test_every_user_shifts_by_the_table_offset():
    """v1 − v2 of each former copy equals −offset('v1') in K-projection space (+offset for the 2D boxes)."""
    from epropnp_det.models.layers.deform_sampler import EProPnPDeformableAttentionSampler
    from epropnp_det.models.layers.roi_aux_branch import homography_x2d_roi
    from epropnp_det.models.utils import project_boxes_2d
    from epropnp_det.ops.pnp.types import CameraParams
    off = PIXEL_CONVENTIONS['v1'] - PIXEL_CONVENTIONS['v2']
    K = torch.tensor([[[300., 0., 160.], [0., 300., 64.], [0., 0., 1.]]], dtype=torch.float64)
    cams = {c: CameraParams.from_image_shape(K, torch.tensor([[128., 320.]], dtype=torch.float64), convention=c,
                                             allowed_border=0.) for c in ('v1', 'v2')}
    # the clamp bounds are the continuous image [0, W] × [0, H] in K-projection coordinates
    torch.testing.assert_close(cams['v2'].lb, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(cams['v1'].lb - cams['v2'].lb, torch.full((1, 2), -off, dtype=torch.float64))
    torch.testing.assert_close(cams['v1'].ub - cams['v2'].ub, torch.full((1, 2), -off, dtype=torch.float64))
    # sampler (homography mode): the same sampling locations give x2d shifted by −offset
    loc = torch.rand(2, 1, 3, 2, dtype=torch.float32) * 100
    T = torch.eye(3).expand(1, 3, 3)
    x2d = {}
    for c in ('v1', 'v2'):
        s = EProPnPDeformableAttentionSampler(embed_dims=8, num_heads=1, num_points=3, pixel_convention=c)
        x2d[c], _ = s.sample_x2d_and_mask(loc, torch.zeros(2, dtype=torch.long), torch.tensor([[320., 128.]]),
                                          img_transforms=T)
    torch.testing.assert_close(x2d['v1'] - x2d['v2'], torch.full_like(x2d['v1'], -off))
    # RoI cell centres
    rois = torch.tensor([[0., 10., 20., 50., 60.]], dtype=torch.float64)
    r = {c: homography_x2d_roi(rois, torch.eye(3, dtype=torch.float64)[None], (4, 4), c) for c in ('v1', 'v2')}
    torch.testing.assert_close(r['v1'] - r['v2'], torch.full_like(r['v1'], -off))
    # projected 2D boxes: K-projections + offset (a box well inside the image, no clipping)
    box = torch.tensor([[2., 1.5, 1.8, 0.5, 0.3, 15., 0.4]], dtype=torch.float64)
    b = {c: project_boxes_2d(box, K, torch.tensor([[320., 128.]], dtype=torch.float64),
                             pixel_offset=k_projection_offset(c))[0] for c in ('v1', 'v2')}
    torch.testing.assert_close(b['v1'] - b['v2'], torch.full((1, 4), off, dtype=torch.float64))


def test_centre_target_rays_follow_the_convention():
    """The centre target's ray through an augmented point is the K-back-projection of its K-projection: the ray
    of continuous point p hits the camera-z = 1 plane at ``K⁻¹ (p − offset)``; checked through the thickness of a
    thin box centred on that ray."""
    from epropnp_det.models.task_modules import EProPnPVolumeCenter
    K = torch.tensor([[300., 0., 160.], [0., 300., 64.], [0., 0., 1.]], dtype=torch.float64)
    p = torch.tensor([[100.25, 40.75]], dtype=torch.float64)
    for c in ('v1', 'v2'):
        uv = p[0] - PIXEL_CONVENTIONS[c]
        ray = torch.linalg.solve(K, torch.tensor([uv[0], uv[1], 1.], dtype=torch.float64))
        centre = ray * 10  # a 2 cm box 10 m along the ray: hit only if the convention is applied
        box = torch.cat((torch.full((3,), 0.02, dtype=torch.float64), centre, torch.zeros(1, dtype=torch.float64)))
        t = EProPnPVolumeCenter(pixel_convention=c).thickness(box[None], K, torch.eye(3, dtype=torch.float64), p)
        torch.testing.assert_close(t, torch.full((1, 1), 0.02, dtype=torch.float64), rtol=1e-6, atol=1e-9)
        other = 'v2' if c == 'v1' else 'v1'  # the other convention misses the box by 0.5 px ≈ 1.7 cm at 10 m
        eye = torch.eye(3, dtype=torch.float64)
        t = EProPnPVolumeCenter(pixel_convention=other).thickness(box[None], K, eye, p)
        assert float(t) == 0


# ------------------------------------------------------------------------------------------------ corners
def test_box_corners_are_mmdet3d_corners():
    from mmdet3d.structures import CameraInstance3DBoxes

    from epropnp_det.models.utils import box_corners
    from epropnp_det.models.utils.postprocess import BOX_EDGES
    gen = torch.Generator().manual_seed(0)
    boxes = torch.cat((torch.rand(6, 3, generator=gen, dtype=torch.float64) * 3 + 0.5,
                       torch.rand(6, 3, generator=gen, dtype=torch.float64) * 20 - 10,
                       torch.rand(6, 1, generator=gen, dtype=torch.float64) * 6 - 3), 1)
    mm = CameraInstance3DBoxes(torch.cat((boxes[:, 3:6], boxes[:, :3], boxes[:, 6:]), 1), origin=(0.5, 0.5, 0.5))
    torch.testing.assert_close(box_corners(boxes).float(), mm.corners, rtol=0, atol=1e-5)  # mmdet3d: float32
    # the edges join corners one box dimension apart
    c = box_corners(boxes)[0]
    lengths = sorted(round(float((c[a] - c[b]).norm()), 6) for a, b in BOX_EDGES.tolist())
    assert lengths == sorted([round(float(d), 6) for d in boxes[0, :3]] * 4)


# ------------------------------------------------------------------------------------------------ BEV NMS
def _shapely_nms(centers, sizes, headings, scores, groups, thr):
    from shapely.geometry import Polygon
    polys = []
    for (x, y), (l, w), h in zip(centers.tolist(), sizes.tolist(), headings.tolist()):
        c, s = math.cos(h), math.sin(h)
        pts = [(x + c * a * l / 2 - s * b * w / 2, y + s * a * l / 2 + c * b * w / 2)
               for a, b in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
        polys.append(Polygon(pts))
    keep = []
    for i in np.argsort(-scores.numpy(), kind='stable'):
        ok = True
        for j in keep:
            if groups[i] == groups[j]:
                inter = polys[i].intersection(polys[j]).area
                if inter / (polys[i].area + polys[j].area - inter) > thr:
                    ok = False
                    break
        if ok:
            keep.append(int(i))
    return keep


def test_head_and_metric_bev_nms_are_one_function():
    """The same rectangles through the head's camera-frame NMS (x–z plane, heading −yaw) and the metric's
    global-frame NMS (x–y plane, counter-clockwise heading, metres far from the origin) keep the same boxes, which
    are those of a brute-force shapely NMS."""
    from epropnp_det.evaluation.metrics.nus_multicam_metric import bev_nms_global
    from epropnp_det.models.utils import bev_nms
    gen = torch.Generator().manual_seed(3)
    n = 40
    centers = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 12
    sizes = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 3 + 1
    headings = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi - math.pi
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (n,), generator=gen)
    ref = _shapely_nms(centers, sizes, headings, scores, groups, 0.25)
    assert 5 < len(ref) < n  # some suppression happens
    boxes = torch.zeros(n, 7, dtype=torch.float64)
    boxes[:, 0], boxes[:, 2] = sizes[:, 0], sizes[:, 1]
    boxes[:, 3], boxes[:, 5], boxes[:, 6] = centers[:, 0], centers[:, 1], -headings
    head = bev_nms(boxes, scores, groups, 0.25).tolist()
    offset = torch.tensor([1234.5, -876.25], dtype=torch.float64)  # global-frame magnitudes
    metric = bev_nms_global((centers + offset).numpy(), sizes.numpy(), headings.numpy(), scores.numpy(),
                            groups.numpy(), 0.25).tolist()
    assert head == ref and metric == ref


# -------------------------------------------------------------------------------------- class → attribute
def test_class_attribute_table_one_home():
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES

    from epropnp_det.evaluation.metrics import nus_multicam_metric as metric
    from epropnp_det.models.dense_heads import NUSCENES_CLS_ATTRS
    from epropnp_det.structures import nuscenes_attributes as table
    assert metric.CLS2ATTR is table.CLS2ATTR and metric.ATTRIBUTES is table.ATTRIBUTES
    assert set(table.ATTRIBUTES) - {'None'} == set(ATTRIBUTE_NAMES)
    for c, name in enumerate(table.NUSCENES_CLASSES):
        allowed = NUSCENES_CLS_ATTRS[c]
        if table.CLS2ATTR[name]:
            assert allowed == table.CLS2ATTR[name]
            # attributes of a class share the class's prefix (vehicle., cycle., pedestrian.)
            prefix = {'pedestrian': 'pedestrian.', 'bicycle': 'cycle.', 'motorcycle': 'cycle.'}.get(name, 'vehicle.')
            assert all(table.ATTRIBUTES[a].startswith(prefix) for a in allowed)
            assert table.DEFAULT_ATTR[name] in allowed
        else:
            assert allowed == (table.ATTRIBUTES.index('None'),)
            assert metric.restricted_attribute(name, attr_label=allowed[0]) == ''


# ------------------------------------------------------------------------------------------ score, rotation
def test_score_target_is_the_spec_formula():
    from epropnp_det.models.task_modules import EProPnPPoseStage
    te = torch.tensor([0., 1e-9, 0.2, 2 ** -1.5, 1.0, 3.0, 2 ** 2.5, 100.], dtype=torch.float64)
    pose_gt = torch.zeros(len(te), 4, dtype=torch.float64)
    ang = torch.linspace(0, 3, len(te), dtype=torch.float64)
    pose = torch.stack((te * ang.cos(), torch.full_like(te, 7.), te * ang.sin(), torch.zeros_like(te)), -1)
    got = EProPnPPoseStage.score_target(pose, pose_gt)
    want = [min(max((2.5 - math.log2(t)) / 4, 0.), 1.) if t > 0 else 1. for t in te.tolist()]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_centre_target_uses_the_ops_yaw_rotation():
    """A ray through a rotated box's centre enters and leaves it where the box's corners (built with
    ``ops.pnp.rotation.yaw_to_rot_mat`` in structures.boxes) say: the entry/exit depths of the vertical ray through the
    centre of a 45°-rotated cube equal ``z ∓ half diagonal``."""
    from epropnp_det.models.task_modules import ray_box_depths
    box = torch.tensor([[2., 2., 2., 0., 0., 10., math.pi / 4]], dtype=torch.float64)
    ray = torch.tensor([[0., 0., 1.]], dtype=torch.float64)
    t_near, t_far = ray_box_depths(ray, box)
    torch.testing.assert_close(t_near, torch.tensor([[10. - math.sqrt(2)]], dtype=torch.float64))
    torch.testing.assert_close(t_far, torch.tensor([[10. + math.sqrt(2)]], dtype=torch.float64))
