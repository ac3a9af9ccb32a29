"""Inference post-processing geometry (docs/method.md §6.3): projected 2D boxes and rotated BEV NMS.

Fixes relative to the published code:

* docs/method.md §13.21: the original writes every near-plane edge intersection into the slot of the behind-camera
  corner, so a corner with 2–3 clipped edges keeps only one intersection and boxes crossing ``z = near`` can come out
  too small. Here every edge crossing the plane contributes its own intersection point (12 edge slots + 8 corners).
* docs/method.md §13.1: the original BEV NMS returns nothing when the whole batch holds ≤ 1 box (a lone detection was
  dropped). Here a single box is kept.

Box convention: ``[l, h, w, x, y, z, yaw]``, geometric centre, camera frame (docs/method.md §0.1). Box corners
and edges come from :func:`epropnp_det.structures.boxes.model_boxes_corners` / ``box_edges`` (mmdet3d's corner
order); :func:`rotated_bev_nms` is the one rotated BEV NMS of the project (the head's camera-frame NMS and the
metric's cross-camera NMS in the global frame both call it).
"""
from typing import Tuple

import torch
from mmcv.ops import nms_rotated
from torch import Tensor

from epropnp_det.structures.boxes import box_edges, model_boxes_corners

__all__ = ['box_corners', 'project_boxes_2d', 'bev_nms', 'rotated_bev_nms', 'BOX_EDGES']

#: (12, 2) corner index pairs of the box edges (in :func:`box_corners` order)
BOX_EDGES = torch.tensor(box_edges())
#: (N, 7) model boxes → (N, 8, 3) camera-frame corners, mmdet3d ``CameraInstance3DBoxes.corners`` order
box_corners = model_boxes_corners


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


def rotated_bev_nms(centers: Tensor, sizes: Tensor, headings: Tensor, scores: Tensor, groups: Tensor,
                    iou_thr: float) -> Tensor:
    """Group-wise NMS of rotated rectangles in a plane; suppress if IoU > ``iou_thr``, highest score first.

    Convention: a rectangle has centre ``(a, b)`` in the plane's two axes, size ``(length, width)`` with the length
    along the heading, and ``heading`` (radians) measured from the first axis towards the second (counter-clockwise
    for a right-handed ``x, y`` plane seen from above). That is mmcv ``nms_rotated``'s angle with its default
    ``clockwise=True`` (which rotates the length axis by ``[[cos, −sin], [sin, cos]]``).

    Groups (classes, images) are separated by shifting the centres of each group far apart (one kernel call, no
    host synchronisation; mmcv's CPU kernel ignores its ``labels`` argument). The centres are first moved to start
    at 0, which leaves every IoU unchanged and keeps float32 precision for large (e.g. global-frame) coordinates.

    Args:
        centers: (N, 2); sizes: (N, 2) ``(length, width)``; headings: (N,); scores: (N,); groups: (N,) long.
        iou_thr: IoU threshold.

    Returns:
        (K,) long indices of the kept rectangles, by descending score.
    """
    if centers.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=centers.device)
    ctr = centers - centers.amin(0)
    span = ctr.max() + 2 * sizes.max() + 1
    dets = torch.cat((ctr + groups.to(ctr)[:, None] * span, sizes.to(ctr), headings.to(ctr)[:, None]), -1)
    _, keep = nms_rotated(dets.float(), scores.float(), iou_thr)
    return keep


def bev_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_thr: float) -> Tensor:
    """Class/image-wise rotated NMS of camera-frame BEV footprints (:func:`rotated_bev_nms`).

    Footprint of a box in the camera x–z plane: centre ``(x, z)``, size ``(l, w)``, heading ``(cos yaw, −sin yaw)``
    in ``(x, z)`` coordinates, i.e. the angle ``−yaw`` from x towards z.

    Args:
        boxes: (N, 7); scores: (N,); groups: (N,) long (e.g. ``img·num_classes + label``).

    Returns:
        (K,) long indices of kept boxes, by descending score.
    """
    return rotated_bev_nms(boxes[:, [3, 5]], boxes[:, [0, 2]], -boxes[:, 6], scores, groups, iou_thr)
