"""Inference post-processing geometry (spec §6.3): projected 2D boxes and rotated BEV NMS.

Fixes relative to the published code:

* spec §13.21: the original writes every near-plane edge intersection into the slot of the behind-camera corner,
  so a corner with 2–3 clipped edges keeps only one intersection and boxes crossing ``z = near`` can come out too
  small. Here every edge crossing the plane contributes its own intersection point (12 edge slots + 8 corners).
* spec §13.1: the original BEV NMS returns nothing when the whole batch holds ≤ 1 box (a lone detection was
  dropped). Here a single box is kept.

Box convention: ``[l, h, w, x, y, z, yaw]``, geometric centre, camera frame (spec §0.1).
"""
from typing import Tuple

import torch
from mmcv.ops import nms_rotated
from torch import Tensor

__all__ = ['box_corners', 'project_boxes_2d', 'bev_nms', 'BOX_EDGES']

# corner index bits: (x sign, y sign, z sign) = bit 2, bit 1, bit 0 of the index
_SIGNS = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=torch.float64) - 0.5
BOX_EDGES = torch.tensor([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count('1') == 1])


def box_corners(boxes: Tensor) -> Tensor:
    """(N, 7) boxes → (N, 8, 3) camera-frame corners (``±0.5·[l, h, w]`` rotated by yaw about y, translated)."""
    local = _SIGNS.to(boxes)[None] * boxes[:, None, :3]
    c, s = boxes[:, 6].cos()[:, None], boxes[:, 6].sin()[:, None]
    x = c * local[..., 0] + s * local[..., 2]
    z = -s * local[..., 0] + c * local[..., 2]
    return torch.stack((x, local[..., 1], z), -1) + boxes[:, None, 3:6]


def project_boxes_2d(boxes: Tensor, cam2img: Tensor, img_wh: Tensor, near: float = 0.1,
                     pixel_offset: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Axis-aligned 2D boxes of the near-plane-clipped 3D boxes, clipped to the image.

    Args:
        boxes: (N, 7) camera frame.
        cam2img: (N, 3, 3) original intrinsics.
        img_wh: (N, 2) original image ``(w, h)``.
        near: clipping plane ``z = near`` (metres).
        pixel_offset: added to K-projections to get continuous coordinates (0 for v2, 0.5 for v1).

    Returns:
        bboxes (N, 4) ``x1, y1, x2, y2`` continuous px, clipped to ``[0, w] × [0, h]``; in_front (N,) bool
        (False if the box lies entirely behind the near plane, its box is then all zeros).
    """
    N = boxes.shape[0]
    corners = box_corners(boxes)  # (N, 8, 3)
    edges = BOX_EDGES.to(boxes.device)
    a, b = corners[:, edges[:, 0]], corners[:, edges[:, 1]]  # (N, 12, 3)
    za, zb = a[..., 2] - near, b[..., 2] - near
    crosses = za * zb < 0
    t = za / torch.where(crosses, za - zb, torch.ones_like(za))
    inter = a + t[..., None] * (b - a)
    pts = torch.cat((corners, inter), 1)  # (N, 20, 3)
    ok = torch.cat((corners[..., 2] >= near, crosses), 1)
    uvw = pts @ cam2img.transpose(-1, -2)
    uv = uvw[..., :2] / uvw[..., 2:].clamp(min=near) + pixel_offset
    big = torch.finfo(uv.dtype).max
    lo = torch.where(ok[..., None], uv, torch.full_like(uv, big)).amin(1)
    hi = torch.where(ok[..., None], uv, torch.full_like(uv, -big)).amax(1)
    in_front = ok.any(1)
    lo = torch.minimum(lo.clamp(min=0), img_wh)
    hi = torch.minimum(hi, img_wh).clamp(min=0)
    bboxes = torch.cat((lo, hi), -1)
    return torch.where(in_front[:, None], bboxes, bboxes.new_zeros(N, 4)), in_front


def bev_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_thr: float) -> Tensor:
    """Class/image-wise rotated NMS of BEV footprints; suppress if IoU > ``iou_thr``.

    Footprint of a box in the camera x–z plane: centre ``(x, z)``, size ``(l, w)``, heading
    ``(cos yaw, −sin yaw)``. mmcv's ``nms_rotated`` (``clockwise=True``) rotates by ``[[c, −s], [s, c]]``, hence
    the angle ``−yaw``. Groups are separated by shifting centres far apart.

    Args:
        boxes: (N, 7); scores: (N,); groups: (N,) long (e.g. ``img·num_classes + label``).

    Returns:
        (K,) long indices of kept boxes, by descending score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    ctr = boxes[:, [3, 5]]
    span = (ctr.max() - ctr.min()) + 2 * boxes[:, [0, 2]].max() + 1
    dets = torch.cat((ctr + groups.to(boxes)[:, None] * span, boxes[:, [0, 2]], -boxes[:, 6:7]), -1)
    _, keep = nms_rotated(dets.float(), scores.float(), iou_thr)
    return keep
