"""Wireframes and BEV drawing against geometry written out here from the camera matrix.

The reference box geometry (corners, the 12 edges, near-plane clipping, projection) is computed in this file
with numpy from the model-box convention ``[l, h, w, x, y, z, yaw]`` (camera frame: x right, y down, z forward;
yaw about the camera y axis, heading = local +x = ``(cos yaw, 0, −sin yaw)``), not with the package's helpers.
"""
import itertools

import numpy as np
import pytest
import torch

from epropnp_det.visualization import BEVCanvas, draw_bev, draw_boxes_3d, edge_segments_2d
from epropnp_det.visualization.draw import _bev_footprints

K = np.array([[1000., 0., 800.], [0., 1000., 450.], [0., 0., 1.]])
#: continuous pixel coordinate (pixel i spans [i, i + 1)) minus K's coordinate, per convention: a 'v2' K already
#: maps to continuous coordinates; a 'v1' K maps pixel i's centre to i, i.e. half a pixel short
TO_CONTINUOUS = {'v1': 0.5, 'v2': 0.0}


def ref_corners(box):
    """(8, 3) corners of one model box and their local sign vectors (8, 3) (+x = heading side)."""
    l, h, w, x, y, z, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0., s], [0., 1., 0.], [-s, 0., c]])
    signs = np.array(list(itertools.product((-1, 1), repeat=3)), dtype=np.float64)
    return (signs * [l / 2, h / 2, w / 2]) @ R.T + [x, y, z], signs


def ref_edges(box, near):
    """The 12 cuboid edges (corner pairs differing in one sign), each clipped to ``z >= near``: list of (a, b)
    camera-frame end points, None for an edge entirely behind the plane."""
    corners, signs = ref_corners(box)
    out = []
    for i, j in itertools.combinations(range(8), 2):
        if np.count_nonzero(signs[i] != signs[j]) != 1:
            continue
        a, b = corners[i], corners[j]
        if a[2] < near and b[2] < near:
            out.append(None)
            continue
        if a[2] < near:
            a = a + (near - a[2]) / (b[2] - a[2]) * (b - a)
        elif b[2] < near:
            b = a + (near - a[2]) / (b[2] - a[2]) * (b - a)
        out.append((a, b))
    return out


def project(p):
    """Camera-frame points (..., 3) → K pixel coordinates (..., 2)."""
    uvw = p @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def _match_segments(seg, expected):
    """Every expected segment (either orientation) is one row of ``seg`` (12, 2, 2); returns the max distance."""
    worst = 0.0
    rows = [r for r in seg if np.isfinite(r).all()]
    assert len(rows) == len(expected)
    for a, b in expected:
        d = min(min(np.abs(r[0] - a).max() + np.abs(r[1] - b).max(), np.abs(r[0] - b).max() + np.abs(r[1] - a).max())
                for r in rows)
        worst = max(worst, d)
    return worst


@pytest.mark.parametrize('convention', ['v1', 'v2'])
def test_edges_match_projection_in_front(convention):
    box = [4.0, 1.5, 1.8, 2.0, 1.0, 20.0, 0.3]
    seg = edge_segments_2d(torch.tensor([box], dtype=torch.float64), K, convention=convention)[0]
    shift = TO_CONTINUOUS[convention]
    expected = [(project(a) + shift, project(b) + shift) for a, b in ref_edges(box, 0.1)]
    assert all(e is not None for e in ref_edges(box, 0.1))
    assert _match_segments(seg, expected) < 1e-9


def test_edges_clipped_at_near_plane():
    """A box straddling z = 0.1: edges behind the plane are NaN rows, crossing edges end exactly on it."""
    box = [4.0, 1.5, 1.8, 0.0, 1.0, 1.0, -np.pi / 2]  # heading +z, from z = -1 to z = 3
    seg = edge_segments_2d(torch.tensor([box], dtype=torch.float64), K, near=0.1, convention='v2')[0]
    ref = ref_edges(box, 0.1)
    n_behind = sum(e is None for e in ref)
    n_crossing = sum(e is not None and min(e[0][2], e[1][2]) == pytest.approx(0.1) for e in ref)
    assert n_behind == 4 and n_crossing == 4  # the back face's 4 edges behind, the 4 long edges cut
    assert np.isnan(seg).all(-1).all(-1).sum() == n_behind
    shift = TO_CONTINUOUS['v2']
    expected = [(project(a) + shift, project(b) + shift) for a, b in (e for e in ref if e is not None)]
    assert _match_segments(seg, expected) < 1e-6


def test_bev_footprint_heading():
    boxes = np.array([[4.0, 1.5, 2.0, 1.0, 0.0, 10.0, 0.0]])   # yaw 0 -> heading +x
    fp = _bev_footprints(boxes)[0]
    front_mid = (fp[0] + fp[1]) / 2
    np.testing.assert_allclose(front_mid, [3.0, 10.0])
    boxes[0, 6] = -np.pi / 2                                       # heading +z
    fp = _bev_footprints(boxes)[0]
    np.testing.assert_allclose((fp[0] + fp[1]) / 2, [1.0, 12.0], atol=1e-12)
    np.testing.assert_allclose(np.ptp(fp[:, 0]), 2.0, atol=1e-12)  # width across x


def _dist_to_segments(px, segs):
    """(M, 2) points → (M,) distance to the nearest of the 2D segments ``segs`` (S, 2, 2)."""
    a, b = segs[None, :, 0], segs[None, :, 1]
    ab = b - a
    t = np.clip(((px[:, None] - a) * ab).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(px[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


@pytest.mark.parametrize('convention', ['v1', 'v2'])
def test_drawn_edges_lie_on_the_projected_edges(convention):
    """Thickness-1 anti-aliased lines on black: across every near-axis-aligned edge the intensity centroid is
    at the projected edge to 0.2 px (a half-pixel convention error moves it by 0.5), every interior point of
    every edge is lit, and nothing is drawn farther than 2 px from the edges and the front-face cross."""
    img = np.zeros((900, 1600, 3), np.uint8)
    box = [4.0, 1.5, 1.8, 2.0, 1.0, 20.0, 0.3]
    out = draw_boxes_3d(img, np.array([box]), K, colors=(0, 255, 0), thickness=1, convention=convention)
    assert img.sum() == 0 and out[..., [0, 2]].sum() == 0
    g = out[..., 1].astype(np.float64)
    # Pixel-index coordinates of the projection (pixel i's centre = index i): continuous − 0.5.
    off = TO_CONTINUOUS[convention] - 0.5
    edges = np.array([(project(a) + off, project(b) + off) for a, b in ref_edges(box, 0.1)])
    corners, signs = ref_corners(box)
    front = corners[signs[:, 0] > 0]
    fs = signs[signs[:, 0] > 0]
    diag = [(i, j) for i, j in itertools.combinations(range(4), 2) if (fs[i] != fs[j]).sum() == 2]
    cross = np.array([(project(front[i]) + off, project(front[j]) + off) for i, j in diag])
    assert len(cross) == 2
    n_centroid = 0
    for k, (a, b) in enumerate(edges):
        others = np.delete(np.concatenate([edges, cross]), k, axis=0)
        for t in np.linspace(0.2, 0.8, 7):
            p = a + t * (b - a)
            if _dist_to_segments(p[None], others)[0] < 4.0:
                continue
            iu, iv = int(round(p[0])), int(round(p[1]))
            assert g[iv - 1:iv + 2, iu - 1:iu + 2].max() > 60, (k, t, p)
            d = b - a
            if abs(d[0]) > 3 * abs(d[1]):  # near-horizontal: centroid of a column profile
                col = g[iv - 2:iv + 3, iu]
                v = np.arange(iv - 2, iv + 3)
                expect = a[1] + (iu - a[0]) / d[0] * d[1]
                assert abs((col * v).sum() / col.sum() - expect) < 0.2, (k, t)
                n_centroid += 1
            elif abs(d[1]) > 3 * abs(d[0]):  # near-vertical: centroid of a row profile
                row = g[iv, iu - 2:iu + 3]
                u = np.arange(iu - 2, iu + 3)
                expect = a[0] + (iv - a[1]) / d[1] * d[0]
                assert abs((row * u).sum() / row.sum() - expect) < 0.2, (k, t)
                n_centroid += 1
    assert n_centroid >= 10
    lit = np.argwhere(g > 0)[:, ::-1].astype(np.float64)  # (u, v) pixel indices
    assert len(lit) > 200
    assert _dist_to_segments(lit, np.concatenate([edges, cross])).max() < 2.0


def test_bev_draws_boxes_where_expected():
    canvas = BEVCanvas(size=(400, 600), scale=10.0)
    pred = np.array([[4.0, 1.5, 2.0, 0.0, 1.0, 20.0, 0.0]])
    img = draw_bev(pred_boxes=pred, gt_boxes=pred, cam2img=K, image_width=1600, canvas=canvas)
    px = np.round(canvas.to_px(np.array([2.0, 20.0]))).astype(int)   # front edge middle of the box
    assert (img[px[1] - 2:px[1] + 3, px[0] - 2:px[0] + 3] != 255).any()
    assert img.shape == (600, 400, 3)
