"""The demo's views: uncertainty ellipses (exact Mahalanobis radius), the depth view's mapping back to the image
as given, and the correspondence view's point colours."""
import numpy as np
import pytest

from epropnp_det.visualization import (
    BEVCanvas,
    covariance_ellipse,
    draw_bev,
    view_correspondences,
    view_depth,
    weight_colors,
)

K = np.array([[500., 0., 320.], [0., 500., 180.], [0., 0., 1.]])


def test_covariance_ellipse_is_the_n_sigma_contour():
    angle = 0.6
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov = rot @ np.diag([4.0, 0.25]) @ rot.T                 # sigmas 2 m and 0.5 m
    centre = np.array([3.0, 20.0])
    pts = covariance_ellipse(centre, cov, n_std=2.0, num=360)
    d = pts - centre
    maha = np.einsum('ni,ij,nj->n', d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(maha, 4.0, rtol=1e-9)
    dist = np.linalg.norm(d, axis=1)
    np.testing.assert_allclose([dist.max(), dist.min()], [4.0, 1.0], rtol=1e-3)
    np.testing.assert_allclose(d[np.argmax(dist)] / 4.0 * np.sign(d[np.argmax(dist)] @ rot[:, 0]), rot[:, 0],
                               atol=1e-3)


def test_bev_ellipse_covers_the_n_sigma_region_only():
    canvas = BEVCanvas(size=(400, 600), scale=10.0)
    box = np.array([[0.4, 1.5, 0.4, 0.0, 1.0, 30.0, 0.0]])      # small box, 30 m ahead
    cov4 = np.zeros((1, 4, 4))
    cov4[0, 0, 0], cov4[0, 2, 2], cov4[0, 1, 1], cov4[0, 3, 3] = 9.0, 1.0, 5.0, 0.1   # sigma_x 3 m, sigma_z 1 m
    plain = draw_bev(pred_boxes=box, canvas=canvas)
    assert np.array_equal(plain, draw_bev(pred_boxes=box, canvas=canvas, pred_pos_cov=None))
    ell = draw_bev(pred_boxes=box, canvas=canvas, pred_pos_cov=cov4, ellipse_std=2.0)
    changed = (ell != plain).any(-1)

    def px(x, z):
        return tuple(np.round(canvas.to_px(np.array([x, z]))).astype(int)[::-1])   # (row, col)
    assert changed[px(4.5, 30.0)] and changed[px(-4.5, 30.0)] and changed[px(0.0, 31.5)]   # inside 2 sigma
    assert not changed[px(7.0, 30.0)] and not changed[px(0.0, 33.0)]                      # outside
    with pytest.raises(ValueError, match='pred_pos_cov'):
        draw_bev(pred_boxes=box, canvas=canvas, pred_pos_cov=np.zeros((2, 3, 3)))


def test_depth_view_maps_cells_back_to_the_given_image():
    # the given image 1280x720 was halved to 640x360 and the top 104 rows cropped: input 640x256, stride 4
    scale, crop_y, stride = 0.5, 104, 4
    T = np.array([[scale, 0, 0], [0, scale, -crop_y], [0, 0, 1.]])
    depth = np.full((64, 160), 20.0)
    depth[:, :40] = 2.0                                          # input columns 0..159 are near (grey 255)
    out = view_depth(depth, T, (1280, 720), stride)
    assert out.shape == (720, 1280, 3)
    # rows above the crop were not seen: black; input column 160 starts at given-image column 320
    assert (out[:2 * crop_y - 1] == 0).all() and (out[2 * crop_y + 1:] > 0).all()
    assert (out[2 * crop_y + 1:, :319] == 255).all() and (out[2 * crop_y + 1:, 321:] == round(255 * 2 / 20)).all()


def test_correspondence_view_colours_points_by_weight():
    img = np.full((200, 300, 3), 200, np.uint8)
    boxes = np.array([[4.0, 1.5, 1.8, 0.0, 1.0, 15.0, 0.0]])
    x2d = np.array([[[100.0, 120.0], [220.0, 140.0], [160.0, 60.0]]])       # v1 K-projections
    w2d = np.array([[[1.0, 1.0], [0.0, 0.0], [0.5, 0.5]]])
    x3d = np.array([[[1.0, 0.0, 0.2], [-1.0, 0.3, 0.0], [0.0, -0.5, 0.5]]])
    out = view_correspondences(img, x2d, w2d, x3d, boxes, K, [0], [0.9], ['car'], convention='v1',
                               max_objects=3)
    assert out.shape[0] > img.shape[0] and out.shape[1] == img.shape[1]
    lut = weight_colors(np.array([1.0, 0.0, 0.5]))
    for (u, v), color in zip(x2d[0], lut):                     # K-projection (u, v) is pixel (u, v)'s centre
        np.testing.assert_array_equal(out[int(v), int(u)], color)
    assert (lut[0] != lut[1]).any()
    # darkened image elsewhere
    assert (out[5, 5] == np.round(200 * 0.55)).all()
