"""Pictures of 3D detections: wireframes projected on the image, a bird's-eye view (BEV) with optional orientation
histograms of the Monte-Carlo pose samples, and the v2 dense depth view (docs/method.md §9, §10.17).

Boxes are model boxes ``(N, 7) [l, h, w, x, y, z, yaw]``, geometric centre, in the camera frame of the image
(OpenCV axes, metres), see :mod:`epropnp_det.structures.boxes`. Images are ``(H, W, 3)`` uint8 BGR (cv2 order).
Pixel coordinates are continuous (pixel ``i`` covers ``[i, i + 1)``); ``K``-projections are converted with the
model's pixel convention (``'v2'``: continuous already; ``'v1'``: +0.5).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS, box_edges, model_boxes_corners

_SHIFT = 4                      # cv2 fixed-point bits: sub-pixel accurate lines
_FRONT = (4, 5, 6, 7)           # corners with local +x (the heading side)


def _as_numpy_boxes(boxes) -> np.ndarray:
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not torch.is_tensor(boxes) else boxes)
    if boxes.dim() != 2 or boxes.shape[-1] < 7:
        raise ValueError(f'boxes must be (N, >=7) [l,h,w,x,y,z,yaw,...], got {tuple(boxes.shape)}')
    return boxes[:, :7].double()


def edge_segments_2d(boxes, cam2img, near: float = 0.1, convention: str = 'v2') -> np.ndarray:
    """Projects the 12 edges of each box, clipped at the plane ``z = near``.

    Args:
        boxes: (N, 7) model boxes, camera frame. cam2img: (3, 3) intrinsics (original image).
    Returns:
        (N, 12, 2, 2) float64 segment end points in continuous pixels; NaN rows for edges fully behind the plane.
    """
    boxes = _as_numpy_boxes(boxes)
    corners = model_boxes_corners(boxes).numpy()                                   # (N, 8, 3)
    k = np.asarray(cam2img, dtype=np.float64)[:3, :3]
    edges = np.asarray(box_edges())                                                # (12, 2)
    a, b = corners[:, edges[:, 0]], corners[:, edges[:, 1]]                        # (N, 12, 3)
    za, zb = a[..., 2:3], b[..., 2:3]
    both_behind = (za < near) & (zb < near)
    # Move the end point that is behind the near plane onto it (parameter t along a->b).
    t = np.where(np.abs(zb - za) > 1e-12, (near - za) / np.where(np.abs(zb - za) > 1e-12, zb - za, 1.), 0.)
    a_clip = np.where(za < near, a + t * (b - a), a)
    b_clip = np.where(zb < near, a + t * (b - a), b)
    seg = np.stack([a_clip, b_clip], axis=2)                                       # (N, 12, 2, 3)
    uvw = seg @ k.T
    uv = uvw[..., :2] / np.maximum(uvw[..., 2:3], near) + PIXEL_CONVENTIONS[convention]
    uv[np.broadcast_to(both_behind[..., None, :], uv.shape)] = np.nan
    return uv


def _color(i, colors):
    if colors is None:
        return (0, 200, 255)
    c = colors[i] if isinstance(colors, (list, tuple)) and isinstance(colors[0], (list, tuple)) else colors
    return tuple(int(v) for v in c)


def draw_boxes_3d(img: np.ndarray, boxes, cam2img, colors=None, texts: Optional[Sequence[str]] = None,
                  thickness: int = 2, convention: str = 'v2', img_transform=None) -> np.ndarray:
    """Draws wireframes of model boxes on a copy of ``img``; the heading (front) face gets a cross.

    Boxes are drawn far-to-near so near objects stay on top. ``img_transform`` (3, 3) maps original continuous
    pixels to the pixels of ``img`` (augmented view); identity when ``img`` is the original image.
    """
    out = np.ascontiguousarray(img.copy())
    boxes_t = _as_numpy_boxes(boxes)
    if len(boxes_t) == 0:
        return out
    seg = edge_segments_2d(boxes_t, cam2img, convention=convention)
    corners = model_boxes_corners(boxes_t).numpy()
    k = np.asarray(cam2img, dtype=np.float64)[:3, :3]
    if img_transform is not None:
        tf = np.asarray(img_transform, dtype=np.float64)
        hom = np.concatenate([seg, np.ones_like(seg[..., :1])], -1) @ tf.T
        seg = hom[..., :2] / hom[..., 2:3]
    order = np.argsort(-boxes_t[:, 5].numpy())
    scale = float(1 << _SHIFT)
    for i in order:
        color = _color(i, colors)
        for (p, q) in seg[i]:
            if not np.all(np.isfinite(p)) or not np.all(np.isfinite(q)):
                continue
            if np.abs(np.concatenate([p, q])).max() > 1e5:
                continue
            cv2.line(out, tuple(np.round(p * scale - 0.5 * scale).astype(int)),
                     tuple(np.round(q * scale - 0.5 * scale).astype(int)), color, thickness, cv2.LINE_AA, _SHIFT)
        front = corners[i, list(_FRONT)]
        if np.all(front[:, 2] > 0.1):
            uvw = front @ k.T
            uv = uvw[:, :2] / uvw[:, 2:3] + PIXEL_CONVENTIONS[convention]
            if img_transform is not None:
                hom = np.concatenate([uv, np.ones_like(uv[:, :1])], -1) @ tf.T
                uv = hom[:, :2] / hom[:, 2:3]
            for a, b in ((0, 2), (1, 3)):
                cv2.line(out, tuple(np.round(uv[a] * scale - 0.5 * scale).astype(int)),
                         tuple(np.round(uv[b] * scale - 0.5 * scale).astype(int)), color, max(thickness - 1, 1),
                         cv2.LINE_AA, _SHIFT)
        if texts is not None:
            pts = seg[i].reshape(-1, 2)
            pts = pts[np.all(np.isfinite(pts), axis=1)]
            if len(pts):
                x, y = pts[:, 0].min(), pts[:, 1].min()
                cv2.putText(out, str(texts[i]), (int(x), max(int(y) - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            color, 1, cv2.LINE_AA)
    return out


@dataclass
class BEVCanvas:
    """Top view of the camera frame: +z (forward) points up in the picture, +x (right) points right.

    ``scale`` px per metre; the camera sits at the bottom centre of a ``size`` (W, H) canvas. Canvas coordinates are
    cv2's (pixel ``(i, j)`` is centred on the integer point); everything is drawn with ``_SHIFT`` fractional bits,
    i.e. sub-pixel accurate (docs/method.md §10.17).
    """
    size: Tuple[int, int] = (600, 800)
    scale: float = 12.0

    @property
    def origin(self):
        return np.array([self.size[0] / 2, self.size[1] - 20.0])

    def to_px(self, xz: np.ndarray) -> np.ndarray:
        """(..., 2) camera-frame ``(x, z)`` metres → (..., 2) canvas pixels."""
        xz = np.asarray(xz, dtype=np.float64)
        return np.stack([self.origin[0] + xz[..., 0] * self.scale, self.origin[1] - xz[..., 1] * self.scale], -1)


def _np(x) -> np.ndarray:
    """Tensor or array-like → float64 numpy array."""
    return np.asarray(x.detach().cpu().double().numpy() if torch.is_tensor(x) else x, dtype=np.float64)


def _fx(p) -> np.ndarray:
    """Canvas pixels → cv2 fixed-point integers with ``_SHIFT`` fractional bits."""
    return np.round(np.asarray(p, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def _pt(p) -> tuple:
    return tuple(int(v) for v in _fx(p))


def _yaw_dir(yaw) -> np.ndarray:
    """Heading (object local +x) of ``yaw`` as a camera-frame ``(x, z)`` unit vector (..., 2)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    return np.stack([np.cos(yaw), -np.sin(yaw)], -1)


def _bev_footprints(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) → (N, 4, 2) footprint corners ``(x, z)`` (front-left, front-right, back-right, back-left)."""
    l, w, x, z, yaw = boxes[:, 0], boxes[:, 2], boxes[:, 3], boxes[:, 5], boxes[:, 6]
    heading = _yaw_dir(yaw)                                      # local +x in (x, z)
    side = np.stack([np.sin(yaw), np.cos(yaw)], -1)              # local +z in (x, z)
    signs = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.float64)
    centre = np.stack([x, z], -1)
    return (centre[:, None] + signs[None, :, :1] * (l / 2)[:, None, None] * heading[:, None]
            + signs[None, :, 1:] * (w / 2)[:, None, None] * side[:, None])


def yaw_histogram(yaw_samples, weights=None, yaw_ref=None, bins: int = 24) -> np.ndarray:
    """Weighted circular histogram of sampled yaws relative to a reference yaw (the BEV orientation rose).

    Args:
        yaw_samples: (M, K) radians, e.g. ``pose_samples[..., 3]`` of ``pred_instances_3d`` (any unwrapped value).
        weights: (M, K) non-negative importance weights (``pose_sample_weights``); None = uniform.
        yaw_ref: (M,) reference yaw (the predicted box yaw); None = 0 (absolute histogram).
        bins: number of bins ``B`` over the full circle.

    Returns:
        (M, B) float64: bin ``j`` collects ``wrap(yaw − yaw_ref) ∈ [(j − ½)·2π/B, (j + ½)·2π/B)`` (bin 0 is centred
        on the reference, angles increase with the yaw), each row normalised to sum 1 (all zero if its total
        weight is 0).
    """
    yaw = _np(yaw_samples)
    if yaw.ndim != 2:
        raise ValueError(f'yaw_samples must be (M, K), got {yaw.shape}')
    w = np.ones_like(yaw) if weights is None else np.broadcast_to(_np(weights), yaw.shape)
    ref = np.zeros(len(yaw)) if yaw_ref is None else _np(yaw_ref).reshape(-1)
    width = 2 * np.pi / bins
    idx = np.floor(np.mod(yaw - ref[:, None], 2 * np.pi) / width + 0.5).astype(np.int64) % bins
    hist = np.zeros((len(yaw), bins))
    np.add.at(hist, (np.repeat(np.arange(len(yaw)), yaw.shape[1]), idx.reshape(-1)), w.reshape(-1))
    total = hist.sum(1, keepdims=True)
    return np.divide(hist, total, out=np.zeros_like(hist), where=total > 0)


def rose_polygon(hist, centre_xz, yaw_ref: float, radius: float = 0.5, arc_points: int = 4) -> np.ndarray:
    """Outline of a polar histogram around a box centre, camera-frame ``(x, z)`` metres.

    Bin ``j`` (see :func:`yaw_histogram`) is a circular sector around the heading ``yaw_ref + j·2π/B`` of radius
    ``sqrt(hist_j·B)·radius`` (docs/method.md §9 'mc': a uniform density is a circle of ``radius``; the area of a sector
    is proportional to its probability). Returns (B·arc_points, 2) vertices, one arc per bin.
    """
    hist = np.asarray(hist, dtype=np.float64)
    B = hist.shape[0]
    width = 2 * np.pi / B
    r = np.sqrt(hist * B) * radius                                               # (B,)
    t = np.linspace(-0.5, 0.5, arc_points)
    ang = yaw_ref + (np.arange(B)[:, None] + t[None]) * width                   # (B, arc_points)
    return np.asarray(centre_xz, dtype=np.float64) + (r[:, None, None] * _yaw_dir(ang)).reshape(-1, 2)


def rose_area(hist, radius: float = 0.5) -> float:
    """Exact area (m²) enclosed by :func:`rose_polygon` with infinitely many arc points: Σ ½ r_j² Δθ = π·radius²·Σh."""
    hist = np.asarray(hist, dtype=np.float64)
    return float(np.pi * radius ** 2 * hist.sum())


def covariance_ellipse(centre, cov, n_std: float = 2.0, num: int = 64) -> np.ndarray:
    """(num, 2) points of the ``n_std``-sigma ellipse ``{p : (p − c)ᵀ Σ⁻¹ (p − c) = n_std²}`` of a 2D Gaussian.

    Args:
        centre: (2,) mean. cov: (2, 2) symmetric positive semi-definite covariance (negative eigenvalues from
            round-off are clipped to 0). n_std: radius in standard deviations. num: vertices.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape != (2, 2):
        raise ValueError(f'cov must be (2, 2), got {cov.shape}')
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    t = np.linspace(0, 2 * np.pi, num, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], -1) * (n_std * np.sqrt(np.clip(evals, 0, None)))
    return np.asarray(centre, dtype=np.float64) + circle @ evecs.T


def _blend_fill(img: np.ndarray, polys: Sequence[np.ndarray], color, alpha: float) -> None:
    """Fills fixed-point polygons with ``color`` at opacity ``alpha`` (in place, only covered pixels change)."""
    overlay = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(overlay, [p.reshape(-1, 1, 2) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    a = overlay.astype(np.float32)[..., None] * (alpha / 255.0)
    out = img.astype(np.float32) * (1 - a) + np.asarray(color, np.float32) * a
    img[:] = np.round(out).astype(np.uint8)


def draw_bev(pred_boxes=None, gt_boxes=None, cam2img=None, image_width: Optional[float] = None,
             canvas: Optional[BEVCanvas] = None, pred_texts: Optional[Sequence[str]] = None,
             max_range: float = 60.0, pred_pose_samples=None, pred_pose_weights=None, rose_bins: int = 24,
             rose_radius: float = 1.0, rose_color=(0, 140, 255), rose_alpha: float = 0.45,
             pose_density: bool = False, pred_scores=None, density_gain: float = 40.0, pred_pos_cov=None,
             ellipse_std: float = 2.0, ellipse_color=(200, 90, 20), ellipse_alpha: float = 0.25) -> np.ndarray:
    """Bird's-eye view: range rings every 10 m, the camera frustum (from ``cam2img`` and ``image_width``),
    ground truth in green, predictions in blue with a heading line. Returns (H, W, 3) uint8 BGR.

    Orientation histograms (v2 'mc' view, docs/method.md §9 / §10.17): with ``pred_pose_samples`` (M, K, 4) (or (M, K)
    yaws) and ``pred_pose_weights`` (M, K) — ``pred_instances_3d.pose_samples / pose_sample_weights`` of the predicted
    boxes, same order — a polar histogram of ``rose_bins`` bins of the sampled yaw relative to the predicted yaw is
    drawn around each predicted box centre (:func:`rose_polygon`, radius ``sqrt(h·B)·rose_radius`` metres; the
    original's 0.5 m at 25 px/m is about 1 m at the default 12 px/m), filled with ``rose_color`` at ``rose_alpha``
    opacity under the box outlines. Nothing else changes.

    ``pose_density`` (needs (M, K, 4) samples): the 'mc' view's position density under everything else — every
    sample's ``(x, z)`` falls into a canvas pixel with weight ``w · score · density_gain`` (``pred_scores`` (M,),
    e.g. the 2D scores as in the original; default 1), summed over the 3×3 neighbourhood, and the canvas is shaded
    as ``bev · (0.9, 0.5, 0.1)^density`` per BGR channel.

    Position uncertainty: with ``pred_pos_cov`` — (M, 2, 2) covariances of the predicted centres' ``(x, z)``, or
    the (M, 4, 4) pose covariances ``pred_instances_3d.pose_cov`` of ``[x, y, z, yaw]`` (their ``(x, z)`` block is
    used) — an ellipse of ``ellipse_std`` standard deviations (:func:`covariance_ellipse`) is filled with
    ``ellipse_color`` at ``ellipse_alpha`` opacity and outlined under each predicted box.
    """
    canvas = canvas or BEVCanvas()
    img = np.full((canvas.size[1], canvas.size[0], 3), 255, np.uint8)
    o = canvas.origin
    for r in range(10, int(max_range) + 1, 10):
        cv2.circle(img, _pt(o), int(round(r * canvas.scale * (1 << _SHIFT))), (225, 225, 225), 1, cv2.LINE_AA,
                   _SHIFT)
        cv2.putText(img, f'{r} m', (int(o[0]) + 3, int(o[1] - r * canvas.scale) - 3), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (160, 160, 160), 1, cv2.LINE_AA)
    if cam2img is not None and image_width is not None:
        k = np.asarray(cam2img, dtype=np.float64)
        for u in (0.0, float(image_width)):
            x = (u - k[0, 2]) / k[0, 0] * max_range
            p = canvas.to_px(np.array([x, max_range]))
            cv2.line(img, _pt(o), _pt(p), (170, 170, 170), 1, cv2.LINE_AA, _SHIFT)
    if pred_boxes is not None and pred_pos_cov is not None:
        b = _as_numpy_boxes(pred_boxes).numpy()
        cov = _np(pred_pos_cov)
        if cov.ndim != 3 or len(cov) != len(b) or cov.shape[1:] not in ((2, 2), (4, 4)):
            raise ValueError(f'pred_pos_cov must be (M, 2, 2) or (M, 4, 4) for {len(b)} boxes, got {cov.shape}')
        if cov.shape[1] == 4:
            cov = cov[:, [0, 2]][:, :, [0, 2]]
        polys = [_fx(canvas.to_px(covariance_ellipse(b[i, [3, 5]], cov[i], ellipse_std))) for i in range(len(b))
                 if np.isfinite(cov[i]).all()]
        if polys:
            _blend_fill(img, polys, ellipse_color, ellipse_alpha)
            cv2.polylines(img, [p.reshape(-1, 1, 2) for p in polys], True, ellipse_color, 1, cv2.LINE_AA, _SHIFT)
    if pred_boxes is not None and pred_pose_samples is not None:
        b = _as_numpy_boxes(pred_boxes).numpy()
        smp = _np(pred_pose_samples)
        yaw = smp[..., 3] if smp.ndim == 3 else smp
        if len(yaw) != len(b):
            raise ValueError(f'{len(yaw)} pose sample sets for {len(b)} predicted boxes')
        if pose_density and len(b):
            if smp.ndim != 3:
                raise ValueError('pose_density needs (M, K, 4) pose samples')
            w = np.ones(yaw.shape) / yaw.shape[1] if pred_pose_weights is None else _np(pred_pose_weights)
            score = np.ones(len(b)) if pred_scores is None else _np(pred_scores).reshape(-1)
            _shade_density(img, canvas, smp[..., [0, 2]], w * score[:, None] * density_gain)
        if len(b):
            hist = yaw_histogram(yaw, pred_pose_weights, b[:, 6], rose_bins)
            polys = [_fx(canvas.to_px(rose_polygon(h, b[i, [3, 5]], b[i, 6], rose_radius))) for i, h in enumerate(hist)]
            _blend_fill(img, polys, rose_color, rose_alpha)
            cv2.polylines(img, [p.reshape(-1, 1, 2) for p in polys], True, tuple(int(c * 0.7) for c in rose_color), 1,
                          cv2.LINE_AA, _SHIFT)
    for boxes, color, texts in ((gt_boxes, (60, 170, 60), None), (pred_boxes, (200, 90, 20), pred_texts)):
        if boxes is None:
            continue
        b = _as_numpy_boxes(boxes).numpy()
        if len(b) == 0:
            continue
        fp = canvas.to_px(_bev_footprints(b))
        for i in range(len(b)):
            cv2.polylines(img, [_fx(fp[i]).reshape(-1, 1, 2)], True, color, 2, cv2.LINE_AA, _SHIFT)
            front_mid = (fp[i, 0] + fp[i, 1]) / 2
            centre = fp[i].mean(0)
            cv2.line(img, _pt(centre), _pt(front_mid), color, 1, cv2.LINE_AA, _SHIFT)
            if texts is not None:
                cv2.putText(img, str(texts[i]), tuple(np.round(fp[i].max(0)).astype(int)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return img


def _shade_density(img: np.ndarray, canvas: BEVCanvas, xz: np.ndarray, mass: np.ndarray) -> None:
    """Shades ``img`` in place by ``(0.9, 0.5, 0.1)^density`` (BGR); ``density`` = 3×3 box sum of the per-pixel
    ``mass`` of the sample positions ``xz`` (..., 2) metres."""
    px = np.round(canvas.to_px(xz)).astype(np.int64).reshape(-1, 2)
    m = np.broadcast_to(mass, xz.shape[:-1]).reshape(-1)
    H, W = img.shape[:2]
    ok = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H) & np.isfinite(m)
    dens = np.zeros((H, W), np.float64)
    np.add.at(dens, (px[ok, 1], px[ok, 0]), m[ok])
    dens = cv2.boxFilter(dens, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    shade = np.power(np.array([0.9, 0.5, 0.1]), dens[..., None])
    img[:] = np.round(img * shade).astype(np.uint8)


def depth_to_image(depth, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The v2 ``depth`` view (docs/method.md §9): ``255·2/max(depth, 2)`` as a grey BGR image (near = bright).

    Args:
        depth: (h, w) metres, e.g. ``pred_instances_3d.metainfo['depth_map']`` (value-map cells of the network
            input, with ``test_cfg.pred_depth=True``); non-finite values are drawn black.
        size: optional (W, H) output size (nearest-neighbour upsampling keeps the cells visible).
    """
    d = _np(depth)
    if d.ndim != 2:
        raise ValueError(f'depth must be (h, w), got {d.shape}')
    grey = np.where(np.isfinite(d), 255.0 * 2.0 / np.maximum(np.nan_to_num(d, nan=np.inf), 2.0), 0.0)
    img = np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if size is not None:
        img = cv2.resize(img, tuple(int(v) for v in size), interpolation=cv2.INTER_NEAREST)
    return img
