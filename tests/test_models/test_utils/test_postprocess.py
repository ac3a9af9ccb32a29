import math

import torch
from shapely.geometry import Polygon

from epropnp_det.models.utils import bev_nms, box_corners, project_boxes_2d

K = torch.tensor([[500., 0., 320.], [0., 500., 180.], [0., 0., 1.]], dtype=torch.float64)


def test_corners_heading_convention():
    box = torch.tensor([[4., 2., 2., 0., 0., 10., -math.pi / 2]], dtype=torch.float64)  # facing +z
    c = box_corners(box)[0]
    # length runs along z for yaw = -pi/2
    torch.testing.assert_close(c[:, 2].max() - c[:, 2].min(), torch.tensor(4., dtype=torch.float64))
    torch.testing.assert_close(c[:, 0].max() - c[:, 0].min(), torch.tensor(2., dtype=torch.float64))


def brute_force_2d(box, near=0.1, W=640, H=360):
    """Dense sampling of the box volume, keep z >= near, project, min/max, clip."""
    g = torch.linspace(-0.5, 0.5, 41, dtype=torch.float64)
    loc = torch.stack(torch.meshgrid(g, g, g, indexing='ij'), -1).reshape(-1, 3) * box[:3]
    c, s = torch.cos(box[6]), torch.sin(box[6])
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    pts = loc @ R.T + box[3:6]
    pts = pts[pts[:, 2] >= near]
    uv = pts @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    lo = uv.min(0).values.clamp(min=0)
    hi = torch.minimum(uv.max(0).values, torch.tensor([W, H], dtype=torch.float64))
    return torch.cat((lo, hi))


def test_projected_boxes_including_near_plane_crossing():
    boxes = torch.tensor([[4., 1.6, 1.9, 1., 0.5, 12., 0.3],
                          [10., 3., 2.5, 2., 0.5, 3., -1.4],   # long truck crossing the near plane
                          [4., 2., 2., -1.5, 0.5, 0.5, 0.7],    # corners on both sides, several clipped edges
                          [2., 2., 2., 0., 0., -5., 0.]], dtype=torch.float64)  # behind
    N = len(boxes)
    b2d, ok = project_boxes_2d(boxes, K.expand(N, 3, 3), torch.tensor([[640., 360.]] * N, dtype=torch.float64))
    assert ok.tolist() == [True, True, True, False]
    for i in range(3):
        ref = brute_force_2d(boxes[i])
        # brute force samples the volume on a grid, so it is at most slightly inside the exact box
        assert (b2d[i, :2] <= ref[:2] + 1e-6).all() and (b2d[i, 2:] >= ref[2:] - 1e-6).all()
        torch.testing.assert_close(b2d[i], ref, atol=2.0, rtol=0)
    assert (b2d[3] == 0).all()


def footprint(box):
    c = box_corners(box[None])[0]
    pts = c[[0, 1, 5, 4], :][:, [0, 2]]  # y = -h/2 face (index bits x,y,z): (x-,z-), (x-,z+), (x+,z+), (x+,z-)
    return Polygon(pts.numpy()).convex_hull


def test_bev_nms_matches_true_footprints():
    gen = torch.Generator().manual_seed(0)
    n = 30
    def rand(lo, hi):
        return torch.rand(n, 1, generator=gen) * (hi - lo) + lo

    boxes = torch.cat((rand(1, 5), torch.ones(n, 1), rand(1, 3), rand(-4, 4), torch.zeros(n, 1), rand(10, 18),
                       rand(0, 2 * math.pi)), 1).double()
    scores = torch.rand(n, generator=gen).double()
    groups = torch.randint(0, 2, (n,), generator=gen)
    thr = 0.25
    keep = bev_nms(boxes, scores, groups, thr)
    # reference greedy NMS with shapely IoU of the true footprints
    order = torch.argsort(scores, descending=True).tolist()
    polys = [footprint(b) for b in boxes]
    ref = []
    for i in order:
        if all(groups[i] != groups[j] or polys[i].intersection(polys[j]).area /
               polys[i].union(polys[j]).area <= thr for j in ref):
            ref.append(i)
    assert keep.tolist() == ref
    assert len(ref) < n  # something was suppressed


def test_bev_nms_keeps_lone_box():
    box = torch.tensor([[4., 1.6, 1.9, 1., 0.5, 12., 0.3]])
    assert bev_nms(box, torch.tensor([0.5]), torch.tensor([0]), 0.25).tolist() == [0]
    assert bev_nms(box[:0], torch.zeros(0), torch.zeros(0).long(), 0.25).numel() == 0
