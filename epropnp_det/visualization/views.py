"""The demo's pictures of one image's detections (paper figures), one view per function (docs/method.md §9, §10.17):

* :func:`view_boxes_3d` — projected 3D boxes, coloured by class, labelled with class and score ('3d');
* :func:`view_bev` — bird's-eye view with the ``n``-sigma ellipses of the position covariance ('bev');
* :func:`view_orientation` — bird's-eye view with orientation-density roses of Monte-Carlo pose samples
  ('orient');
* :func:`view_correspondences` — the deformable correspondences: each object's sampled 2D points coloured by
  their learned weights on the image, and below, per object, its 3D object coordinates in an oblique view of the
  box, coloured the same way ('points');
* :func:`view_depth` — the v2 dense depth prediction mapped back onto the image as given ('depth').

Inputs are numpy arrays in the conventions of :mod:`epropnp_det.visualization.draw`: model boxes ``(N, 7)``
``[l, h, w, x, y, z, yaw]`` in the camera frame, ``(H, W, 3)`` uint8 BGR images, original intrinsics ``K``.
Outputs are uint8 BGR images.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS

from .draw import BEVCanvas, _as_numpy_boxes, _np, depth_to_image, draw_bev, draw_boxes_3d

__all__ = ['CLASS_COLORS', 'class_color', 'fit_bev_canvas', 'view_boxes_3d', 'view_bev', 'view_orientation',
           'view_correspondences', 'view_depth', 'weight_colors']

#: BGR colour per nuScenes class index (car, truck, trailer, bus, construction_vehicle, bicycle, motorcycle,
#: pedestrian, traffic_cone, barrier)
CLASS_COLORS = ((0, 140, 255), (0, 200, 255), (60, 180, 230), (40, 90, 240), (0, 215, 160), (255, 120, 60),
                (230, 60, 160), (60, 60, 230), (30, 200, 30), (160, 160, 160))


def class_color(label: int) -> Tuple[int, int, int]:
    return CLASS_COLORS[int(label) % len(CLASS_COLORS)]


def _texts(labels, scores, class_names) -> list:
    names = list(class_names or [])
    return [f'{names[int(c)] if 0 <= int(c) < len(names) else int(c)} {float(s):.2f}' for c, s in zip(labels, scores)]


def view_boxes_3d(img: np.ndarray, boxes, cam2img, labels, scores, class_names: Sequence[str] = (),
                  convention: str = 'v1', thickness: int = 2, img_transform=None) -> np.ndarray:
    """Projected 3D boxes (near-plane clipped, heading face crossed) in class colours with ``class score``.
    ``img_transform`` (3, 3): map of the continuous pixels of ``cam2img``'s image to those of ``img`` (e.g. the
    level virtual camera → the real, tilted one; a homography keeps the edges straight)."""
    boxes = _as_numpy_boxes(boxes).numpy()
    return draw_boxes_3d(img, boxes, cam2img, colors=[class_color(c) for c in labels],
                         texts=_texts(labels, scores, class_names), thickness=thickness, convention=convention,
                         img_transform=img_transform)


def fit_bev_canvas(boxes, size: Tuple[int, int] = (600, 800), min_range: float = 20.0,
                   max_range: float = 80.0) -> Tuple[BEVCanvas, float]:
    """A :class:`BEVCanvas` of ``size`` whose scale shows every box centre (plus 5 m), and the range in metres
    (a multiple of 10 in ``[min_range, max_range]``)."""
    b = _as_numpy_boxes(boxes).numpy()
    far = 0.0
    if len(b):
        far = max(float(np.max(b[:, 5])), float(np.max(np.abs(b[:, 3]))) * 2 * size[1] / size[0])
    rng = float(np.clip(np.ceil((far + 5.0) / 10.0) * 10.0, min_range, max_range))
    return BEVCanvas(size=size, scale=(size[1] - 30.0) / rng), rng


def view_bev(boxes, cam2img, image_width: float, labels, scores, class_names: Sequence[str] = (), pose_cov=None,
             n_std: float = 2.0, canvas: Optional[BEVCanvas] = None) -> np.ndarray:
    """Bird's-eye view (camera frame, +z up the picture) of the boxes with their ``n_std``-sigma position
    ellipses from ``pose_cov`` (N, 4, 4) (pose ``[x, y, z, yaw]`` covariance) and the camera's field of view."""
    rng = 60.0
    if canvas is None:
        canvas, rng = fit_bev_canvas(boxes)
    return draw_bev(pred_boxes=boxes, cam2img=cam2img, image_width=image_width, canvas=canvas,
                    pred_texts=_texts(labels, scores, class_names), max_range=rng, pred_pos_cov=pose_cov,
                    ellipse_std=n_std)


def view_orientation(boxes, pose_samples, pose_sample_weights, cam2img, image_width: float, rose_bins: int = 24,
                     scores_2d=None, pose_density: bool = True, canvas: Optional[BEVCanvas] = None) -> np.ndarray:
    """Bird's-eye view with a polar histogram of the sampled yaw (``pose_samples`` (N, K, 4), importance
    ``pose_sample_weights`` (N, K)) around every box (area ∝ probability, a uniform density is a circle), shaded
    by the samples' position density (weights × ``scores_2d``) with ``pose_density`` — the paper's orientation
    view (the original's 'mc' view)."""
    rng = 60.0
    if canvas is None:
        canvas, rng = fit_bev_canvas(boxes)
    radius = max(1.0, 20.0 / canvas.scale)  # at least 20 px across the uniform circle
    return draw_bev(pred_boxes=boxes, cam2img=cam2img, image_width=image_width, canvas=canvas, max_range=rng,
                    pred_pose_samples=pose_samples, pred_pose_weights=pose_sample_weights, rose_bins=rose_bins,
                    rose_radius=radius, pose_density=pose_density, pred_scores=scores_2d)


def weight_colors(weights) -> np.ndarray:
    """(..., ) weights in [0, 1] → (..., 3) uint8 BGR of OpenCV's JET colour map (blue = 0, red = 1)."""
    w = np.clip(np.nan_to_num(_np(weights)), 0, 1)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    return lut[np.round(w * 255).astype(np.int64)]


# local box corners (KITTI-local axes: x length, y height (down), z width)
_SIGNS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64) - 0.5
_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count('1') == 1]


def _oblique(points: np.ndarray, azimuth: float = -35.0, elevation: float = 25.0) -> np.ndarray:
    """Object-frame points (..., 3) → (..., 3) view coordinates (right, down, depth) of a camera looking at the
    object from its front-left, ``elevation`` degrees above."""
    a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    return points @ (rx @ ry).T


def _object_tile(x3d: np.ndarray, colors: np.ndarray, lhw: np.ndarray, size: int, title: str,
                 title_color) -> np.ndarray:
    tile = np.full((size, size, 3), 255, np.uint8)
    corners = _oblique(_SIGNS * lhw)
    pts = _oblique(x3d)
    extent = np.abs(np.concatenate([corners[:, :2], pts[:, :2]])).max() if len(pts) else np.abs(corners).max()
    s = (size * 0.5 - 20) / max(extent, 1e-3)
    c = np.array([size / 2, size / 2 + 10])
    px = lambda p: tuple(np.round((p[:2] * s + c) * 16).astype(int))  # noqa: E731
    for a, b in _EDGES:
        front = _SIGNS[a, 0] > 0 and _SIGNS[b, 0] > 0
        cv2.line(tile, px(corners[a]), px(corners[b]), (0, 0, 200) if front else (120, 120, 120), 1, cv2.LINE_AA, 4)
    for i in np.argsort(-pts[:, 2]):  # far first
        cv2.circle(tile, px(pts[i]), 3 * 16, tuple(int(v) for v in colors[i]), -1, cv2.LINE_AA, 4)
    for row, text in enumerate(title.split('\n')):
        cv2.putText(tile, text, (4, 12 + 12 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.35, title_color, 1, cv2.LINE_AA)
    return tile


def view_correspondences(img: np.ndarray, x2d, w2d, x3d, boxes, cam2img, labels, scores,
                         class_names: Sequence[str] = (), convention: str = 'v1', max_objects: int = 6,
                         dim: float = 0.45, img_transform=None) -> np.ndarray:
    """The deformable correspondence view (paper Fig. 1/5 style).

    Top: the image (darkened by ``dim``) with each object's ``P`` sampled points ``x2d`` (N, P, 2) (K-projection
    coordinates of the image in the model's pixel ``convention``) as dots coloured by their weight (mean of the
    two components of ``w2d`` (N, P, 2), divided by the object's largest: JET, red = highest), drawn low to high,
    the box wireframe in its class colour and the object's number. Bottom: for the ``max_objects`` highest-scored
    objects, the 3D object coordinates ``x3d`` (N, P, 3) (metres, object frame) inside the box's outline (front
    face red), coloured the same way, in one oblique view. ``img_transform``: as in :func:`view_boxes_3d` (for the
    wireframes; ``x2d`` are pixels of ``img``).
    """
    x2d, w2d, x3d, boxes = _np(x2d), _np(w2d), _np(x3d), _as_numpy_boxes(boxes).numpy()
    n = len(boxes)
    if not (len(x2d) == len(w2d) == len(x3d) == n):
        raise ValueError(f'{len(x2d)} x2d / {len(w2d)} w2d / {len(x3d)} x3d sets for {n} boxes')
    out = np.round(img.astype(np.float32) * (1 - dim)).astype(np.uint8)
    order = np.argsort(-np.asarray(scores, dtype=np.float64))[:max_objects]
    if n:
        out = draw_boxes_3d(out, boxes[order], cam2img, colors=[class_color(labels[i]) for i in order],
                            thickness=1, convention=convention, img_transform=img_transform)
    w = w2d.mean(-1) if n else np.zeros((0, 0))
    w = w / np.maximum(w.max(-1, keepdims=True), 1e-12) if n else w
    colors = weight_colors(w)
    uv = x2d + PIXEL_CONVENTIONS[convention] - 0.5  # continuous → cv2 (integer = pixel centre)
    r = max(2, int(round(min(img.shape[:2]) / 180)))
    for k, i in enumerate(order):
        for j in np.argsort(w[i]):
            cv2.circle(out, tuple(np.round(uv[i, j] * 16).astype(int)), r * 16, tuple(int(v) for v in colors[i, j]),
                       -1, cv2.LINE_AA, 4)
        centre = np.round(uv[i].mean(0)).astype(int)
        cv2.putText(out, str(k + 1), (int(centre[0]) + 6, int(centre[1]) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 2, cv2.LINE_AA)
    W = out.shape[1]
    size = max(120, W // max(max_objects, 1))
    names = _texts(labels, scores, class_names)
    tiles = [_object_tile(x3d[i], colors[i], boxes[i, :3], size, f'{k + 1}\n{names[i]}', class_color(labels[i]))
             for k, i in enumerate(order)]
    strip = np.full((size, max(W, size * len(tiles)), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        strip[:, k * size:(k + 1) * size] = t
    if strip.shape[1] > W:
        out = np.concatenate([out, np.zeros((out.shape[0], strip.shape[1] - W, 3), np.uint8)], 1)
    return np.concatenate([out, strip], 0)


def view_depth(depth_map, img_transform, image_size: Tuple[int, int], output_stride: int,
               image: Optional[np.ndarray] = None, alpha: float = 0.0) -> np.ndarray:
    """The v2 depth view (``255·2/max(depth, 2)``, near = bright, :func:`depth_to_image`) in the pixels of the
    image as given.

    ``depth_map`` (h, w) holds one depth per ``output_stride × output_stride`` cell of the (padded) network input,
    whose continuous pixels are ``img_transform`` (3, 3) of the image's (``image_size`` = (W, H)); parts of the image
    the network did not see (cropped away) are black. With ``image`` and ``alpha > 0`` the image is blended in.
    """
    d = depth_to_image(depth_map)
    h, w = d.shape[:2]
    d = cv2.resize(d, (w * output_stride, h * output_stride), interpolation=cv2.INTER_NEAREST)
    # continuous → cv2 integer-centre coordinates: p_int = p_cont − 0.5 on both sides
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.]])
    to_input = np.linalg.inv(shift) @ np.asarray(img_transform, dtype=np.float64) @ shift  # original → input px
    out = cv2.warpPerspective(d, to_input, tuple(int(v) for v in image_size),
                              flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    if image is not None and alpha > 0:
        out = np.round(out * (1 - alpha) + image.astype(np.float32) * alpha).astype(np.uint8)
    return out
