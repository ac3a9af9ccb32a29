"""Box, frame and pixel conventions of the data path (docs/method.md §0.1, §0.2, §4.2, §7.2).

**Model box** (what the detector regresses and what ``gt_instances_3d.bboxes_3d`` holds): ``(N, 7)``
``[l, h, w, x, y, z, yaw]``, metres / radians, in the frame of the camera that took the image (OpenCV: +x right,
+y down, +z forward), ``(x, y, z)`` = **geometric centre**. The object-local frame is "KITTI local": +x along the
length (heading), +y down (height), +z along the width, and ``X_cam = R(yaw) · X_obj + t`` with
``R(yaw) = [[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]]`` (heading ``(cos yaw, 0, -sin yaw)``; yaw 0 faces +x,
-π/2 faces +z). Velocities are ``(N, 2)`` ``[vx, vz]`` m/s in the same camera frame (vy is dropped, as in nuScenes).

**mmdet3d** ``CameraInstance3DBoxes``: ``[x, y, z, l, h, w, yaw(, vx, vz)]`` with the same yaw and axes, but
``(x, y, z)`` = **bottom centre** (``y_bottom = y_centre + h/2``). Conversions: :func:`model_to_cam_boxes`,
:func:`cam_boxes_to_model`.

**nuScenes boxes** (devkit ``Box``) in any z-up frame (ego, global) or in the camera frame: ``center (N, 3)``,
``wlh (N, 3)``, orientation = rotation from the nuScenes-local frame (x forward = l, y left = w, z up = h).
A model box maps to ``rot = T_R · R(yaw) · KITTI2NUS_ROTᵀ`` (docs/method.md §7.2; equal to mmdet3d's
``Q(x, π/2)·Q(z, −yaw)``). :func:`model_boxes_to_frame` / :func:`frame_boxes_to_model` convert both ways
with a 4×4 ``frame_from_cam`` matrix (cam→ego = ``cam2ego``; cam→global = :func:`cam2global_matrix`).

**Pixels**: ``img_transform`` (3×3) maps ORIGINAL continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``)
to AUGMENTED continuous coordinates; flips/crops/resizes left-multiply it (:func:`flip_transform`,
:func:`crop_transform`, :func:`scale_transform`). A ``K``-projection ``u = fx·X/Z + cx`` is a continuous
coordinate in the v2 convention and an integer-centre coordinate in v1 (continuous = ``u + 0.5``):
:func:`k_projection_to_continuous` / :func:`continuous_to_k_projection` with ``convention='v1'|'v2'``
(defined in :mod:`epropnp_det.ops.pixels`, the one home of the convention).

All functions are torch-based, batch-first, and keep the input dtype (use float64 for exact round trips).
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from epropnp_det.ops.pixels import PIXEL_CONVENTIONS, continuous_to_k_projection, k_projection_to_continuous
from epropnp_det.ops.pnp.rotation import quaternion_to_rot_mat, rot_mat_to_yaw, yaw_to_rot_mat
from epropnp_det.ops.pnp.rotation import wrap_angle as wrap_to_pi  # radians into [-π, π); public name kept

__all__ = [
    'KITTI2NUS_ROT', 'PIXEL_CONVENTIONS', 'model_to_cam_boxes', 'cam_boxes_to_model', 'model_boxes_corners',
    'rot_mat_to_quaternion', 'yaw_to_nus_quaternion', 'nus_quaternion_to_yaw', 'model_boxes_to_frame',
    'frame_boxes_to_model', 'cam2global_matrix', 'invert_pose', 'flip_boxes', 'flip_intrinsics',
    'k_projection_to_continuous', 'continuous_to_k_projection', 'flip_transform', 'crop_transform',
    'scale_transform', 'apply_transform', 'project_points', 'box_edges', 'nearclip_box_points',
    'project_boxes_to_2d', 'points_to_box_local', 'wrap_to_pi'
]

#: KITTI-local → nuScenes-local axes (docs/method.md §4.2): ``p_kitti = KITTI2NUS_ROTᵀ · p_nus``, row form
#: ``p_nus @ K2N``.
KITTI2NUS_ROT = ((1., 0., 0.), (0., 0., 1.), (0., -1., 0.))


def _k2n(ref: Tensor) -> Tensor:
    return ref.new_tensor(KITTI2NUS_ROT)


def _check(t: Tensor, last: int, name: str):
    if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[-1] != last:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f'{name} must be a (N, {last}) tensor, got {shape}')


# ----------------------------------------------------------------------------------------------------------- mmdet3d
def model_to_cam_boxes(boxes: Tensor, velocities: Optional[Tensor] = None):
    """Model boxes (N, 7) ``[l,h,w,x,y,z,yaw]`` centre (+ velocities (N, 2) ``[vx, vz]``) → mmdet3d
    ``CameraInstance3DBoxes`` (bottom centre, ``box_dim`` 7, or 9 with velocities)."""
    from mmdet3d.structures import CameraInstance3DBoxes
    _check(boxes, 7, 'boxes')
    lhw, xyz, yaw = boxes[:, 0:3], boxes[:, 3:6], boxes[:, 6:7]
    cols = [xyz, lhw, yaw]
    if velocities is not None:
        _check(velocities, 2, 'velocities')
        cols.append(velocities)
    tensor = torch.cat(cols, dim=1)
    return CameraInstance3DBoxes(tensor, box_dim=tensor.shape[1], origin=(0.5, 0.5, 0.5))


def cam_boxes_to_model(cam_boxes) -> Tuple[Tensor, Optional[Tensor]]:
    """mmdet3d ``CameraInstance3DBoxes`` → (model boxes (N, 7) centre, velocities (N, 2) or None)."""
    t = cam_boxes.tensor
    boxes = torch.cat([t[:, 3:6], cam_boxes.gravity_center, t[:, 6:7]], dim=1)
    velo = t[:, 7:9] if t.shape[1] >= 9 else None
    return boxes, velo


# Corner order of mmdet3d's CameraInstance3DBoxes.corners (x0y0z0, x0y0z1, x0y1z1, x0y1z0, x1y0z0, ...).
_CORNER_SIGNS = ((-1, -1, -1), (-1, -1, 1), (-1, 1, 1), (-1, 1, -1), (1, -1, -1), (1, -1, 1), (1, 1, 1), (1, 1, -1))


def model_boxes_corners(boxes: Tensor) -> Tensor:
    """(N, 7) model boxes → (N, 8, 3) corners in the camera frame, same order as mmdet3d ``.corners``."""
    _check(boxes, 7, 'boxes')
    signs = boxes.new_tensor(_CORNER_SIGNS)
    local = 0.5 * signs[None] * boxes[:, None, 0:3]                          # KITTI-local (l, h, w) axes
    return local @ yaw_to_rot_mat(boxes[:, 6]).transpose(-1, -2) + boxes[:, None, 3:6]


def box_edges():
    """The 12 edges of :func:`model_boxes_corners` as index pairs (corners differing in one sign)."""
    edges = []
    for i in range(8):
        for j in range(i + 1, 8):
            if sum(a != b for a, b in zip(_CORNER_SIGNS[i], _CORNER_SIGNS[j])) == 1:
                edges.append((i, j))
    return edges


# -------------------------------------------------------------------------------------------------------- rotations
def rot_mat_to_quaternion(rot: Tensor) -> Tensor:
    """(..., 3, 3) rotation → (..., 4) unit quaternion ``[w, x, y, z]`` with ``w ≥ 0`` (Shepperd's method)."""
    m = rot
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cand = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - tr, m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - tr,
                     m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 + 2 * m[..., 2, 2] - tr], -1)], dim=-2)                   # (..., 4, 4) each row ∝ q
    diag = torch.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1, keepdim=True)[..., None].expand(*diag.shape[:-1], 1, 4)
    q = torch.gather(cand, -2, best).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def yaw_to_nus_quaternion(yaw: Tensor) -> Tensor:
    """(N,) camera-frame model yaw → (N, 4) ``[w,x,y,z]`` orientation of the nuScenes box in the camera frame
    (``R(yaw) · KITTI2NUS_ROTᵀ``, docs/method.md §7.2)."""
    return rot_mat_to_quaternion(yaw_to_rot_mat(yaw) @ _k2n(yaw).T)


def nus_quaternion_to_yaw(quat: Tensor) -> Tensor:
    """(N, 4) ``[w,x,y,z]`` camera-frame nuScenes orientation → (N,) model yaw (``rot_mat_to_yaw(R·K2N)``, exact
    for a rotation about the camera y axis, the yaw part otherwise)."""
    return rot_mat_to_yaw(quaternion_to_rot_mat(quat) @ _k2n(quat))


# ----------------------------------------------------------------------------------------------------------- frames
def invert_pose(mat: Tensor) -> Tensor:
    """(..., 4, 4) rigid transform → its inverse (exact: ``[Rᵀ, −Rᵀt]``)."""
    rot_t = mat[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(mat)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ mat[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def cam2global_matrix(lidar2cam, lidar2ego, ego2global) -> Tensor:
    """Exact camera-time camera→global (4, 4) float64 from the mmdet3d info fields of one image:
    ``ego2global @ lidar2ego @ inv(lidar2cam)`` (``lidar2cam`` includes the ego motion between the LiDAR and the
    camera timestamps; ``ego2global @ cam2ego`` would use the LiDAR-time ego pose)."""
    l2c = torch.as_tensor(np.asarray(lidar2cam, dtype=np.float64))
    l2e = torch.as_tensor(np.asarray(lidar2ego, dtype=np.float64))
    e2g = torch.as_tensor(np.asarray(ego2global, dtype=np.float64))
    return e2g @ l2e @ invert_pose(l2c)


def model_boxes_to_frame(boxes: Tensor, frame_from_cam: Tensor,
                         velocities: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Model boxes (N, 7) in the camera frame → nuScenes-convention boxes in another frame.

    Args:
        boxes: (N, 7) ``[l,h,w,x,y,z,yaw]`` centre, camera frame.
        frame_from_cam: (4, 4) rigid transform camera → target frame (identity = camera frame itself).
        velocities: (N, 2) ``[vx, vz]`` camera frame, optional.
    Returns:
        dict(center (N, 3), wlh (N, 3), rot (N, 3, 3) nuScenes-local → frame, quat (N, 4) ``[w,x,y,z]``,
        yaw (N,) heading angle about the frame's z axis, velocity (N, 3) frame (zeros if not given)).
    """
    _check(boxes, 7, 'boxes')
    tf = frame_from_cam.to(boxes)
    rot_fc, t_fc = tf[:3, :3], tf[:3, 3]
    center = boxes[:, 3:6] @ rot_fc.T + t_fc
    rot = rot_fc @ yaw_to_rot_mat(boxes[:, 6]) @ _k2n(boxes).T
    velo = boxes.new_zeros(len(boxes), 3)
    if velocities is not None:
        _check(velocities, 2, 'velocities')
        velo = torch.stack([velocities[:, 0], torch.zeros_like(velocities[:, 0]), velocities[:, 1]], 1) @ rot_fc.T
    return dict(center=center, wlh=boxes[:, [2, 0, 1]], rot=rot, quat=rot_mat_to_quaternion(rot),
                yaw=torch.atan2(rot[:, 1, 0], rot[:, 0, 0]), velocity=velo)


def frame_boxes_to_model(center: Tensor, wlh: Tensor, rot: Tensor, cam_from_frame: Tensor,
                         velocity: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Inverse of :func:`model_boxes_to_frame`.

    Args:
        center (N, 3), wlh (N, 3): nuScenes box in the source frame; rot: (N, 3, 3) rotation matrices or (N, 4)
            ``[w,x,y,z]`` quaternions; cam_from_frame: (4, 4) source frame → camera; velocity: (N, 3) or (N, 2)
            (xy, z = 0) in the source frame, optional.
    Returns:
        model boxes (N, 7), velocities (N, 2) ``[vx, vz]`` camera frame or None. The yaw is
        ``rot_mat_to_yaw`` of the camera-frame rotation (exact when the box is upright in the camera frame).
    """
    tf = cam_from_frame.to(center)
    rot_cf, t_cf = tf[:3, :3], tf[:3, 3]
    if rot.shape[-1] == 4:
        rot = quaternion_to_rot_mat(rot)
    c_cam = center @ rot_cf.T + t_cf
    yaw = rot_mat_to_yaw(rot_cf @ rot @ _k2n(center))
    boxes = torch.cat([wlh[:, [1, 2, 0]], c_cam, yaw[:, None]], dim=1)
    velo = None
    if velocity is not None:
        if velocity.shape[-1] == 2:
            velocity = torch.cat([velocity, torch.zeros_like(velocity[:, :1])], 1)
        v_cam = velocity @ rot_cf.T
        velo = v_cam[:, [0, 2]]
    return boxes, velo


# ------------------------------------------------------------------------------------------------------------- flip
def flip_boxes(boxes: Tensor, velocities: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Mirror model boxes at the camera's y-z plane: ``x → −x``, ``yaw → π − yaw`` (wrapped to [−π, π)),
    ``vx → −vx``. A mirrored box seen with :func:`flip_intrinsics` projects to the horizontally flipped image
    (``u → W − u``). Applying it twice is the identity."""
    _check(boxes, 7, 'boxes')
    out = boxes.clone()
    out[:, 3] = -boxes[:, 3]
    out[:, 6] = wrap_to_pi(math.pi - boxes[:, 6])
    velo = None
    if velocities is not None:
        velo = velocities.clone()
        velo[:, 0] = -velocities[:, 0]
    return out, velo


def flip_intrinsics(cam2img: Tensor, width: float, convention: str = 'v2') -> Tensor:
    """(3, 3) K of the horizontally flipped image of width W: ``cx' = W − cx`` (v2, continuous) or
    ``W − 1 − cx`` (v1 integer-centre), so that ``u'(−X) = W − u(X)`` resp. ``W − 1 − u``."""
    k = cam2img.clone()
    k[0, 2] = width - 2 * PIXEL_CONVENTIONS[convention] - cam2img[0, 2]
    return k


# ----------------------------------------------------------------------------------------------------------- pixels
# PIXEL_CONVENTIONS, k_projection_to_continuous and continuous_to_k_projection live in epropnp_det.ops.pixels (one
# home for the 0.5-pixel convention, importable by the torch-only ops) and are re-exported here.
def flip_transform(width: float) -> np.ndarray:
    """(3, 3) horizontal flip of continuous coordinates in an image of width W: ``u → W − u``."""
    return np.array([[-1., 0., width], [0., 1., 0.], [0., 0., 1.]])


def crop_transform(x1: float, y1: float) -> np.ndarray:
    """(3, 3) crop with top-left corner ``(x1, y1)``: ``(u, v) → (u − x1, v − y1)``."""
    return np.array([[1., 0., -x1], [0., 1., -y1], [0., 0., 1.]])


def scale_transform(sx: float, sy: float) -> np.ndarray:
    """(3, 3) resize of continuous coordinates: ``(u, v) → (sx·u, sy·v)`` (pixel edges scale exactly)."""
    return np.array([[sx, 0., 0.], [0., sy, 0.], [0., 0., 1.]])


def apply_transform(mat, uv):
    """Apply a 3×3 homography to (..., 2) points (numpy or torch, same type out)."""
    if isinstance(uv, Tensor):
        mat = torch.as_tensor(np.asarray(mat), dtype=uv.dtype, device=uv.device)
        h = uv @ mat[:2, :2].T + mat[:2, 2]
        w = uv @ mat[2, :2] + mat[2, 2]
        return h / w[..., None]
    mat = np.asarray(mat, dtype=np.float64)
    h = uv @ mat[:2, :2].T + mat[:2, 2]
    w = uv @ mat[2, :2] + mat[2, 2]
    return h / w[..., None]


def project_points(points: Tensor, cam2img: Tensor, min_depth: float = 0.0) -> Tensor:
    """(..., 3) camera-frame points → (..., 2) K-projections ``(K·p)_xy / max(z, min_depth)``."""
    k = cam2img.to(points)[:3, :3]
    z = points[..., 2:3].clamp(min=min_depth) if min_depth > 0 else points[..., 2:3]
    return (points @ k.T)[..., :2] / z


def nearclip_box_points(corners: np.ndarray, near: float = 0.1) -> np.ndarray:
    """(8, 3) corners → (m, 3) corners with ``z ≥ near`` plus the crossings of all 12 edges with ``z = near``
    (docs/method.md §4.1, the converter's version that keeps every crossing, docs/method.md §13.21)."""
    corners = np.asarray(corners, dtype=np.float64)
    keep = [corners[corners[:, 2] >= near]]
    for i, j in box_edges():
        zi, zj = corners[i, 2], corners[j, 2]
        if (zi - near) * (zj - near) < 0:
            t = (near - zi) / (zj - zi)
            keep.append((corners[i] + t * (corners[j] - corners[i]))[None])
    return np.concatenate(keep, axis=0)


def project_boxes_to_2d(boxes: Tensor, cam2img, img_size: Tuple[float, float], near: float = 0.1,
                        convention: str = 'v2', img_transform=None, out_size=None) -> Tuple[np.ndarray, np.ndarray]:
    """2D boxes of model boxes (docs/method.md §4.1 ``bbox``): near-plane-clipped corners projected with K, convex hull,
    intersected with the original canvas ``[0, W] × [0, H]``, axis-aligned extent in continuous coordinates.

    Optionally mapped through an axis-aligned ``img_transform`` (flip/crop/scale) and clipped to the augmented
    canvas ``out_size = (W', H')`` exactly as the pipeline does with the stored boxes.

    Args:
        boxes: (N, 7) model boxes; cam2img: (3, 3) original K; img_size: original (W, H).
        convention: 'v2' keeps the raw K-projection (also the converter's v1 behaviour for gt boxes,
            docs/method.md §0.2); 'v1' adds +0.5 (v1 predicted boxes).
    Returns:
        bboxes (N, 4) float64 ``[x1, y1, x2, y2]`` and valid (N,) bool (False: no intersection / all behind).
    """
    from shapely.geometry import MultiPoint
    from shapely.geometry import box as shp_box
    corners = model_boxes_corners(boxes.double()).cpu().numpy()
    k = np.asarray(cam2img, dtype=np.float64)[:3, :3]
    w, h = img_size
    canvas = shp_box(0, 0, w, h)
    out = np.zeros((len(boxes), 4))
    valid = np.zeros(len(boxes), dtype=bool)
    for n in range(len(boxes)):
        pts = nearclip_box_points(corners[n], near)
        if len(pts) == 0:
            continue
        uvw = pts @ k.T
        uv = uvw[:, :2] / np.maximum(uvw[:, 2:3], near) + PIXEL_CONVENTIONS[convention]
        hull = MultiPoint([tuple(p) for p in uv]).convex_hull
        if not hull.intersects(canvas):
            continue
        inter = hull.intersection(canvas)
        if inter.is_empty:
            continue
        out[n] = inter.bounds
        valid[n] = True
    if img_transform is not None:
        tf = np.asarray(img_transform, dtype=np.float64)
        p1 = apply_transform(tf, out[:, 0:2])
        p2 = apply_transform(tf, out[:, 2:4])
        out = np.concatenate([np.minimum(p1, p2), np.maximum(p1, p2)], axis=1)
        if out_size is not None:
            out[:, 0::2] = out[:, 0::2].clip(0, out_size[0])
            out[:, 1::2] = out[:, 1::2].clip(0, out_size[1])
            valid &= (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, valid


def points_to_box_local(points: Tensor, boxes: Tensor) -> Tensor:
    """(M, 3) camera-frame points, (N, 7) boxes → (N, M, 3) KITTI-local object coordinates relative to each box
    centre (``R(yaw)ᵀ (p − c)``); a point is inside box n iff ``|oc| ≤ (l, h, w)/2``."""
    rot = yaw_to_rot_mat(boxes[:, 6])                                          # (N, 3, 3)
    return (points[None] - boxes[:, None, 3:6]) @ rot
