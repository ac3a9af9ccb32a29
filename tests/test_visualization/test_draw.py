import numpy as np
import torch

from epropnp_det.structures.boxes import model_boxes_corners
from epropnp_det.visualization import BEVCanvas, draw_bev, draw_boxes_3d, edge_segments_2d
from epropnp_det.visualization.draw import _bev_footprints

K = np.array([[1000., 0., 800.], [0., 1000., 450.], [0., 0., 1.]])


def test_edges_match_projection_in_front():
    boxes = torch.tensor([[4.0, 1.5, 1.8, 2.0, 1.0, 20.0, 0.3]], dtype=torch.float64)
    seg = edge_segments_2d(boxes, K)
    corners = model_boxes_corners(boxes)[0].numpy()
    uv = corners @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    ends = seg[0].reshape(-1, 2)
    # Every segment end point is one of the projected corners (no clipping needed).
    d = np.abs(ends[:, None] - uv[None]).sum(-1).min(1)
    assert d.max() < 1e-9


def test_edges_clipped_at_near_plane():
    boxes = torch.tensor([[4.0, 1.5, 1.8, 0.0, 1.0, 1.0, -np.pi / 2]], dtype=torch.float64)  # straddles z=0.1
    seg = edge_segments_2d(boxes, K, near=0.1, convention='v2')
    corners = model_boxes_corners(boxes)[0].numpy()
    assert (corners[:, 2] < 0.1).any() and (corners[:, 2] > 0.1).any()
    finite = np.isfinite(seg).all(-1).all(-1)[0]
    assert finite.sum() >= 4                 # edges crossing or in front of the plane survive
    # Back-project the end points: all lie at depth >= near on the box surface lines.
    assert np.isfinite(seg[0][finite]).all()


def test_bev_footprint_heading():
    boxes = np.array([[4.0, 1.5, 2.0, 1.0, 0.0, 10.0, 0.0]])   # yaw 0 -> heading +x
    fp = _bev_footprints(boxes)[0]
    front_mid = (fp[0] + fp[1]) / 2
    np.testing.assert_allclose(front_mid, [3.0, 10.0])
    boxes[0, 6] = -np.pi / 2                                       # heading +z
    fp = _bev_footprints(boxes)[0]
    np.testing.assert_allclose((fp[0] + fp[1]) / 2, [1.0, 12.0], atol=1e-12)
    np.testing.assert_allclose(np.ptp(fp[:, 0]), 2.0, atol=1e-12)  # width across x


def test_draw_hits_projected_pixels():
    img = np.zeros((900, 1600, 3), np.uint8)
    boxes = np.array([[4.0, 1.5, 1.8, 2.0, 1.0, 20.0, 0.3]])
    out = draw_boxes_3d(img, boxes, K, colors=(0, 255, 0), thickness=1)
    corners = model_boxes_corners(torch.tensor(boxes))[0].numpy() @ K.T
    uv = corners[:, :2] / corners[:, 2:3]
    for u, v in uv:
        patch = out[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2, 1]
        assert patch.max() > 0
    assert out.sum() > 0 and img.sum() == 0


def test_bev_draws_boxes_where_expected():
    canvas = BEVCanvas(size=(400, 600), scale=10.0)
    pred = np.array([[4.0, 1.5, 2.0, 0.0, 1.0, 20.0, 0.0]])
    img = draw_bev(pred_boxes=pred, gt_boxes=pred, cam2img=K, image_width=1600, canvas=canvas)
    px = np.round(canvas.to_px(np.array([2.0, 20.0]))).astype(int)   # front edge middle of the box
    assert (img[px[1] - 2:px[1] + 3, px[0] - 2:px[0] + 3] != 255).any()
    assert img.shape == (600, 400, 3)
