"""Object outputs → detections: the non-finite exclusion of training (:func:`exclude_nonfinite_objects`) and the
post-processing of decoded candidates into per-image detections (:func:`assemble_detections`, docs/method.md §6.3).

Steps: projected 2D boxes of the near-plane-clipped 3D boxes, drop candidates behind the camera, smaller than
``min_bbox_size`` or with a NaN/Inf pose or score (counted in the MessageHub info ``num_nonfinite_predictions``),
class-wise 2D NMS then rotated BEV NMS, attributes restricted to the class, and the pose uncertainty of every kept
box (:mod:`.uncertainty`).
"""
import functools
import logging
import math
from typing import Callable, List, Optional, Tuple

import torch
from mmcv.ops import batched_nms
from mmengine.logging import MessageHub, print_log
from mmengine.structures import InstanceData
from torch import Tensor

from epropnp_det.structures.boxes import model_to_cam_boxes
from epropnp_det.structures.correspondences import Correspondences

from .postprocess import bev_nms, project_boxes_2d
from .uncertainty import fold_uncertainty_into_score, pose_cov_to_std, pose_std_components, scale_pose_cov

__all__ = ['assemble_detections', 'exclude_nonfinite_objects', 'merge_flip_outputs', 'OBJECT_OUTPUTS']

#: object outputs checked by :func:`exclude_nonfinite_objects`, with the value that replaces a non-finite object's
OBJECT_OUTPUTS = dict(noc=0., x2d=0., w2d=0., dims=1., dim_enc=0., scale=1., score_logit=0., velo=0., attr_logits=0.)


def exclude_nonfinite_objects(out: dict) -> Tuple[dict, Tensor]:
    """Objects whose outputs (:data:`OBJECT_OUTPUTS`) are all finite: (N,) bool, and a copy of ``out`` in which the
    other objects' values are replaced by harmless ones.

    ``torch.where`` sends exactly zero gradient to the replaced values, so one NaN/Inf object cannot turn a training
    step's gradients into NaN (which would make the NaN-safe optimiser skip the whole step); the losses give these
    objects zero weight and ``num_nonfinite_objects`` counts them. No host synchronisation.
    """
    N = out['noc'].shape[0]
    # one isfinite over all outputs side by side (few launches on a GPU); an Inf·0 = NaN sum would do the same
    # with fewer ops but could overflow for large finite values
    present = [out[k].reshape(N, math.prod(out[k].shape[1:])) for k in OBJECT_OUTPUTS if out.get(k) is not None]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in present])
    finite = torch.isfinite(torch.cat([t if t.dtype == dtype else t.to(dtype) for t in present], 1)).all(1)
    clean = dict(out)
    for k, fill in OBJECT_OUTPUTS.items():
        v = out.get(k)
        if v is not None:
            clean[k] = torch.where(finite.reshape(N, *([1] * (v.dim() - 1))), v, fill)
    return clean, finite


def merge_flip_outputs(a: dict, b: dict, img_inds: Tensor) -> dict:
    """Object outputs of the same candidates seen in the image and its mirror (flip test-time augmentation,
    docs/method.md §6.4): correspondences concatenated (:meth:`~epropnp_det.structures.Correspondences.cat`, dims
    averaged in log space), 3D-score probabilities, velocities and attribute logits averaged."""
    corr = Correspondences.cat(*(Correspondences(o['noc'], o['dims'], o['x2d'], o['w2d'], o['scale'], img_inds)
                                 for o in (a, b)))
    mean_prob = (a['score_logit'].sigmoid() + b['score_logit'].sigmoid()) / 2
    return dict(noc=corr.noc, x2d=corr.x2d, w2d=corr.w2d_unit, scale=corr.scale, dims=corr.dims,
                score_logit=torch.logit(mean_prob, eps=1e-6),
                velo=None if a['velo'] is None else (a['velo'] + b['velo']) / 2,
                attr_logits=None if a['attr_logits'] is None else (a['attr_logits'] + b['attr_logits']) / 2)


def _count_nonfinite(num: int):
    hub = MessageHub.get_current_instance()
    total = hub.get_info('num_nonfinite_predictions', 0) + num
    hub.update_info('num_nonfinite_predictions', total)
    print_log(f'EProPnPDeformPnPHead.predict: {num} candidate(s) with a NaN/Inf pose or score gave no box '
              f'({total} so far, MessageHub info "num_nonfinite_predictions")', logger='current',
              level=logging.WARNING)


def assemble_detections(out: dict, cand, pose: Tensor, pose_cov: Tensor, score3d: Tensor, cams, num_imgs: int,
                        num_classes: int, cfg: dict, sample: Optional[Callable] = None) -> List[InstanceData]:
    """Detections of N decoded candidates.

    Args:
        out: object outputs of the candidates (``dims`` (N, 3), ``velo`` (N, 2) or None, ``attr_logits`` (N, A)
            or None).
        cand: :class:`~epropnp_det.models.dense_heads.fcos_emb_head.FCOSCandidates` (``img_inds, labels, scores``).
        pose: (N, 4) ``[x, y, z, yaw]`` camera frame; pose_cov: (N, 4, 4) its Laplace covariance.
        score3d: (N,) 3D score in [0, 1]; the detection score is ``cand.scores · score3d``.
        cams: the batch's :class:`~epropnp_det.structures.CameraBatch`.
        cfg: the head's ``test_cfg``.
        sample: ``sample(idx) → PoseSamples`` of the kept candidates ``idx`` (``test_cfg.mc_samples > 0``).

    Returns:
        per image an ``InstanceData`` with ``bboxes_3d`` (``CameraInstance3DBoxes``, box_dim 9), ``scores_3d``,
        ``labels_3d``, ``attr_labels``, ``bboxes_2d`` (original-image continuous px), ``scores_2d``, ``score3d``,
        the uncertainty ``pose_cov`` (n, 4, 4) of ``[x, y, z, yaw]`` (camera frame; m², rad², after
        ``pose_cov_scale``), ``pose_std`` (n, 4), ``lateral_std`` (camera x, m), ``depth_std`` (camera z, m),
        ``yaw_std`` (rad), and with ``sample``: ``pose_samples`` (n, K, 4), ``pose_sample_weights`` (n, K).
    """
    N = cand.labels.shape[0]
    boxes = torch.cat((out['dims'], pose), -1)  # (N, 7)
    # the one place where the pose covariance of a detection is produced: calibration, then the optional
    # uncertainty-folded score (docs/uncertainty.md)
    if cfg.get('pose_cov_scale') is not None:
        pose_cov = scale_pose_cov(pose_cov, cand.labels, cfg['pose_cov_scale'])
    scores = cand.scores * score3d
    if cfg.get('score_uncertainty') is not None:
        scores = fold_uncertainty_into_score(scores, pose_cov, cand.labels, cfg['score_uncertainty'])
    bbox2d, in_front = project_boxes_2d(boxes, cams.cam2img[cand.img_inds], cams.ori_hw[cand.img_inds].flip(-1),
                                        pixel_offset=cams.k_offset)
    wh = bbox2d[:, 2:] - bbox2d[:, :2]
    finite = torch.isfinite(boxes).all(-1) & torch.isfinite(scores)
    ok = in_front & (wh.min(-1).values >= cfg['min_bbox_size']) & finite
    idx = ok.nonzero()[:, 0]
    # read after the nonzero above has waited for the device anyway: candidates dropped for a NaN/Inf pose or
    # score (e.g. non-finite network outputs, excluded by the PnP layer) are counted and reported
    num_nonfinite = int((~finite).sum())
    if num_nonfinite:
        _count_nonfinite(num_nonfinite)
    groups = cand.img_inds * num_classes + cand.labels
    if len(idx):
        _, k2d = batched_nms(bbox2d[idx].float(), scores[idx].float().contiguous(), groups[idx],
                             dict(type='nms', iou_threshold=cfg['nms_iou2d']))
        idx = idx[k2d]
        idx = idx[bev_nms(boxes[idx], scores[idx], groups[idx], cfg['nms_ioubev_thr'])]
    attr = None
    if out['attr_logits'] is not None:
        allowed = torch.zeros(num_classes, out['attr_logits'].shape[-1], dtype=torch.bool, device=boxes.device)
        for c, attrs in enumerate(cfg['cls_attrs'][:num_classes]):
            allowed[c, list(attrs)] = True
        attr = out['attr_logits'].masked_fill(~allowed[cand.labels], -math.inf).argmax(-1)
    velo = out['velo'] if out['velo'] is not None else boxes.new_zeros(N, 2)
    mc = sample(idx) if sample is not None and len(idx) else None
    results = []
    for b in range(num_imgs):
        ib = idx[cand.img_inds[idx] == b]
        r = InstanceData()
        r.bboxes_3d = model_to_cam_boxes(boxes[ib].detach(), velo[ib].detach())
        r.scores_3d = scores[ib].detach()
        r.labels_3d = cand.labels[ib]
        r.attr_labels = attr[ib] if attr is not None else torch.full_like(cand.labels[ib], 8)
        r.bboxes_2d = bbox2d[ib].detach()  # original-image continuous px
        r.scores_2d = cand.scores[ib].detach()
        r.pose_cov = pose_cov[ib]  # (n, 4, 4) Laplace covariance of [x, y, z, yaw]
        r.pose_std = pose_cov_to_std(r.pose_cov)
        for k, v in pose_std_components(r.pose_cov).items():
            r[k] = v
        r.score3d = score3d[ib].detach()
        if mc is not None:
            pos = (idx[:, None] == ib[None]).float().argmax(0)  # rows of ib in the MC batch
            r.pose_samples = mc.pose_samples[:, pos].transpose(0, 1)  # (n, K, 4)
            r.pose_sample_weights = mc.weights[:, pos].T  # (n, K)
        results.append(r)
    return results
