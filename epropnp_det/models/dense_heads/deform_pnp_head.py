"""EPro-PnP-Det head: FCOS queries → deformable sampler → point subnet → correspondences → pose stage.

The head is glue (docs/architecture.md): each idea lives in its own module. ``forward`` runs the query emitter
(:class:`EProPnPFCOSEmbHead`) and passes the dense FPN levels through; ``loss_by_feat`` builds the targets, samples
objects, runs the object sub-heads and hands their :class:`~epropnp_det.structures.Correspondences` to the pose
stage (:class:`~epropnp_det.models.task_modules.EProPnPPoseStage`, which owns the PnP layer and every pose loss);
``predict_by_feat`` selects candidates, decodes their poses with the pose stage and post-processes them.

Conventions: model boxes ``[l, h, w, x, y, z, yaw]`` (geometric centre, original camera frame), poses
``[x, y, z, yaw]``; 2D quantities of the network input are augmented continuous pixels; x2d handed to the pose stage
are original-image K-projections in the head's ``pixel_convention`` (:mod:`epropnp_det.ops.pixels`); the cameras of a
batch are one :class:`~epropnp_det.structures.CameraBatch`. Each option of the v2 model and where it lives:
docs/architecture.md.
"""
from typing import List, Optional, Sequence

import torch
from mmdet3d.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from epropnp_det.ops.pixels import check_pixel_convention
from epropnp_det.structures import CameraBatch, Correspondences
from epropnp_det.structures.nuscenes_attributes import NUSCENES_CLS_ATTRS

from ..task_modules.object_sampler import gather_gt_fields
from ..utils.detections import assemble_detections, exclude_nonfinite_objects

__all__ = ['EProPnPDeformPnPHead', 'NUSCENES_CLS_ATTRS']

#: state-dict keys of the pose layer, its loss and the learnable δ before they moved into ``pose_stage``
_MOVED_TO_POSE_STAGE = ('pnp.', 'loss_pose.', 'log_rel_delta')


@MODELS.register_module()
class EProPnPDeformPnPHead(BaseModule):
    """Monocular 3D detection head of EPro-PnP-Det (layout and options: docs/architecture.md).

    Args:
        num_classes, in_channels, strides: classes, FPN channels and strides of *all* FPN outputs.
        output_stride: stride ``s`` of the key / value maps; embed_dims, num_heads, num_points: sampler sizes.
        dense_lvl_range / det_lvl_range: ``[start, end)`` FPN level ranges of the dense branch / the FCOS head.
        pixel_convention: 'v1' or 'v2' meaning of K-projections (:mod:`epropnp_det.ops.pixels`).
        use_cls_emb: add a learned per-class embedding (zero init) to the query embedding.
        fcos_head, dense_branch, sampler, point_subnet, object_branches, center_target, object_sampler,
            depth_branch (None: off), roi_aux_branch: sub-module configs (shared sizes filled in).
        pnp, loss_pose, loss_score, loss_reg_pos, loss_reg_orient, learnable_rel_delta, detach_pose_x2d,
            detach_reg_inputs: arguments of :class:`EProPnPPoseStage` (``pose_stage`` overrides any of them).
        loss_dim, loss_velo, loss_attr: mmdet loss configs of :meth:`EProPnPObjectBranches.loss` (None disables
            velocity / attributes).
        loss_proj, loss_regr, roi_shape: auxiliary losses on gt RoIs (the RoI branch exists only with one of them).
        train_cfg: ``num_obj_samples_per_img``, ``roi_shape``, ``share_reg_solve`` (pose stage option).
        test_cfg: ``score_thr, max_per_img, nms_iou2d, nms_ioubev_thr, pnp_num_iter, pnp_fast_mode, min_bbox_size,
            cls_attrs`` (allowed attributes per class), ``mc_scoring_ratio`` / ``mc_scoring_samples`` (Monte-Carlo
            score blend), ``mc_samples`` (K > 0: ``pose_samples`` (n, K, 4), ``pose_sample_weights`` (n, K) per
            box), ``mc_seed``, ``pred_depth`` (v2 depth map in the metainfo), ``pose_cov_scale`` (None or per class
            4 std factors, :func:`~epropnp_det.models.utils.uncertainty.scale_pose_cov`), ``score_uncertainty``
            (None or the dict of :func:`~epropnp_det.models.utils.uncertainty.fold_uncertainty_into_score`).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 256,
                 strides: Sequence[int] = (4, 8, 16, 32, 64, 128), output_stride: int = 4,
                 dense_lvl_range: Sequence[int] = (0, 4), det_lvl_range: Sequence[int] = (1, 6),
                 embed_dims: int = 256, num_heads: int = 8, num_points: int = 32, pixel_convention: str = 'v1',
                 use_cls_emb: bool = False, fcos_head: dict = dict(), dense_branch: dict = dict(),
                 sampler: dict = dict(), point_subnet: dict = dict(), object_branches: dict = dict(),
                 center_target: dict = dict(), object_sampler: dict = dict(),
                 pnp: dict = dict(mc_samples=512, num_iter=4, solver_cfg=dict(num_iter=10)),
                 loss_pose: dict = dict(loss_weight=0.15, momentum=0.01),
                 loss_dim: dict = dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=1.0),
                 loss_score: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 loss_reg_pos: Optional[dict] = dict(loss_weight=0.05, beta=1.0),
                 loss_reg_orient: Optional[dict] = dict(loss_weight=0.05),
                 loss_velo: Optional[dict] = dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=0.05),
                 loss_attr: Optional[dict] = dict(type='mmdet.CrossEntropyLoss', loss_weight=0.5),
                 loss_proj: Optional[dict] = None, loss_regr: Optional[dict] = None,
                 roi_shape: Optional[Sequence[int]] = None, roi_aux_branch: dict = dict(),
                 depth_branch: Optional[dict] = None, detach_pose_x2d: bool = True, detach_reg_inputs: bool = True,
                 learnable_rel_delta: bool = False, pose_stage: dict = dict(),
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes, self.output_stride = num_classes, output_stride
        self.pixel_convention = check_pixel_convention(pixel_convention)
        self.dense_lvl_range, self.det_lvl_range = tuple(dense_lvl_range), tuple(det_lvl_range)
        strides = tuple(strides)
        self.fcos_head = MODELS.build(dict(dict(type='EProPnPFCOSEmbHead', num_classes=num_classes,
                                                in_channels=in_channels, emb_channels=embed_dims,
                                                strides=strides[slice(*det_lvl_range)]), **fcos_head))
        self.dense_branch = MODELS.build(dict(dict(type='EProPnPDenseBranch', in_channels=in_channels,
                                                   out_channels=embed_dims, strides=strides[slice(*dense_lvl_range)],
                                                   output_stride=output_stride), **dense_branch))
        self.sampler = MODELS.build(dict(dict(type='EProPnPDeformableAttentionSampler', embed_dims=embed_dims,
                                              num_heads=num_heads, num_points=num_points, stride=output_stride,
                                              pixel_convention=pixel_convention), **sampler))
        self.point_subnet = MODELS.build(dict(dict(type='EProPnPPointSubnet', num_heads=num_heads,
                                                   head_dims=embed_dims // num_heads), **point_subnet))
        self.object_branches = MODELS.build(dict(dict(type='EProPnPObjectBranches', embed_dims=embed_dims,
                                                      num_classes=num_classes, loss_dim=loss_dim,
                                                      loss_velo=loss_velo, loss_attr=loss_attr),
                                                 **object_branches))
        self.cls_emb = nn.Parameter(torch.zeros(num_classes, embed_dims)) if use_cls_emb else None
        self.center_target = TASK_UTILS.build(dict(dict(type='EProPnPVolumeCenter', output_stride=output_stride,
                                                        pixel_convention=pixel_convention), **center_target))
        train_cfg = dict(train_cfg or {})
        self.object_sampler = TASK_UTILS.build(dict(dict(
            type='EProPnPObjectSampler', num_per_img=train_cfg.get('num_obj_samples_per_img', 48)),
            **object_sampler))
        self.pose_stage = MODELS.build(dict(dict(
            type='EProPnPPoseStage', pnp=pnp, loss_pose=loss_pose, loss_score=loss_score, loss_reg_pos=loss_reg_pos,
            loss_reg_orient=loss_reg_orient, learnable_rel_delta=learnable_rel_delta, detach_pose_x2d=detach_pose_x2d,
            detach_reg_inputs=detach_reg_inputs, share_reg_solve=train_cfg.get('share_reg_solve', True)),
            **pose_stage))
        self.train_cfg = train_cfg
        self.depth_branch = None if depth_branch is None else MODELS.build(dict(dict(
            type='EProPnPDepthBranch', embed_dims=embed_dims, pixel_convention=pixel_convention), **depth_branch))
        self.roi_aux = None
        if loss_proj is not None or loss_regr is not None:
            self.roi_aux = MODELS.build(dict(dict(
                type='EProPnPRoIAuxBranch', embed_dims=embed_dims, num_heads=num_heads,
                roi_shape=roi_shape or train_cfg.get('roi_shape', (28, 28)), output_stride=output_stride,
                pixel_convention=pixel_convention, loss_proj=loss_proj, loss_regr=loss_regr), **roi_aux_branch))
        self.test_cfg = dict(dict(score_thr=0.04, max_per_img=256, nms_iou2d=0.8, nms_ioubev_thr=0.25,
                                  pnp_num_iter=5, min_bbox_size=4.0, mc_samples=0, cls_attrs=NUSCENES_CLS_ATTRS,
                                  mc_scoring_ratio=0.0, mc_scoring_samples=None, pnp_fast_mode=True, pred_depth=False,
                                  mc_seed=None, pose_cov_scale=None, score_uncertainty=None),
                             **(test_cfg or {}))

    # the pose layer, its loss and δ belong to the pose stage; these read-only aliases keep the old attribute paths
    pnp = property(lambda self: self.pose_stage.pnp)
    loss_pose = property(lambda self: self.pose_stage.loss_pose)
    log_rel_delta = property(lambda self: self.pose_stage.log_rel_delta)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of the layout before the pose stage: ``<head>.pnp.*``, ``<head>.loss_pose.norm_factor`` and
        # ``<head>.log_rel_delta`` now live under ``<head>.pose_stage.``
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if key[len(prefix):].startswith(_MOVED_TO_POSE_STAGE):
                state_dict[prefix + 'pose_stage.' + key[len(prefix):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --------------------------------------------------------------------------------------------- common
    def forward(self, x: Sequence[Tensor], with_bbox: bool = False):
        """FPN levels → (FCOS per-level outputs ``cls, centers, centerness, emb`` (+ ``bbox`` with ``with_bbox`` and
        the v2 box branch), dense FPN levels)."""
        if len(x) < max(self.det_lvl_range[1], self.dense_lvl_range[1]):
            raise ValueError(f'got {len(x)} FPN levels; det_lvl_range={self.det_lvl_range}, '
                             f'dense_lvl_range={self.dense_lvl_range}')
        return self.fcos_head(x[slice(*self.det_lvl_range)], with_bbox=with_bbox), x[slice(*self.dense_lvl_range)]

    def cameras(self, metas: List[dict], ref: Tensor, dense_x2d: Optional[Tensor] = None,
                dense_mask: Optional[Tensor] = None) -> CameraBatch:
        """The batch's :class:`CameraBatch` (with the stride-pooled dense maps in the sampler's ``dense_map``
        mode)."""
        if self.sampler.x2d_mode == 'dense_map' and (dense_x2d is None or dense_mask is None):
            raise ValueError("sampler x2d_mode='dense_map' needs inputs['img_dense_x2d'] and "
                             "inputs['img_dense_x2d_mask'] (EProPnPDataPreprocessor(with_dense_x2d=True))")
        dense = self.sampler.x2d_mode == 'dense_map'
        return CameraBatch.from_metainfo(metas, ref, self.pixel_convention, dense_x2d if dense else None,
                                         dense_mask if dense else None, self.output_stride)

    def forward_subheads(self, emb: Tensor, centers: Tensor, strides: Tensor, img_inds: Tensor, labels: Tensor,
                         key_map: Tensor, value_map: Tensor, cams: CameraBatch) -> dict:
        """Object queries (N, C) at reference points ``centers`` (N, 2, augmented px) → a dict of the object
        outputs (``dims, dim_enc, score_logit, velo, attr_logits``, ...), the point subnet's ``noc`` (N, n, 3),
        ``x2d`` (N, n, 2, original K-projection px), ``w2d`` (N, n, 2), ``scale`` (N, 2), and ``query``."""
        if self.cls_emb is not None:
            emb = emb + self.cls_emb[labels]
        pe = self.dense_branch.positional_encoding.points_to_enc(centers, cams.img_wh[img_inds].flip(-1))
        samp = self.sampler(emb, pe, centers, strides, img_inds, key_map, value_map, cams.img_wh,
                            img_transforms=cams.img_transform, dense_x2d=cams.dense_x2d, dense_mask=cams.dense_mask)
        flip = cams.flip[img_inds]
        obj = self.object_branches(samp.output, labels, flip)
        pts = self.point_subnet(samp.values, samp.x2d, samp.query, samp.mask, flip)
        return dict(obj._asdict(), **pts._asdict(), query=samp.query)

    @staticmethod
    def correspondences(out: dict, img_inds: Tensor) -> Correspondences:
        """The typed correspondences of :meth:`forward_subheads`' output."""
        return Correspondences(out['noc'], out['dims'], out['x2d'], out['w2d'], out['scale'], img_inds)

    # ------------------------------------------------------------------------------------------- training
    def loss(self, x: Sequence[Tensor], batch_data_samples: list, dense_x2d: Optional[Tensor] = None,
             dense_mask: Optional[Tensor] = None) -> dict:
        """Training losses (mmdet's ``loss``: ``forward`` then :meth:`loss_by_feat` on the unpacked samples);
        ``dense_x2d`` (B,2,H,W) / ``dense_mask`` (B,1,H,W) only for the sampler's ``dense_map`` mode."""
        fcos_out, dense_feats = self(x, with_bbox=True)
        cam_pts = None
        if self.depth_branch is not None:
            if not all('cam_pts_uvz' in ds for ds in batch_data_samples):
                raise KeyError("depth_branch needs data_sample.cam_pts_uvz: use EProPnPLoadLidarObjectCoords("
                               "with_cam_pts=True) in the training pipeline (see docs/data_contract.md)")
            cam_pts = [ds.cam_pts_uvz for ds in batch_data_samples]
        ignore = [ds.ignored_instances if 'ignored_instances' in ds else None for ds in batch_data_samples]
        return self.loss_by_feat(
            *fcos_out[:4], fcos_out[4] if len(fcos_out) > 4 else None, dense_feats,
            [ds.gt_instances_3d for ds in batch_data_samples], [ds.gt_instances for ds in batch_data_samples],
            [ds.metainfo for ds in batch_data_samples], ignore, cam_pts, dense_x2d, dense_mask)

    def loss_by_feat(self, cls_scores: List[Tensor], centers: List[Tensor], centernesses: List[Tensor],
                     embs: List[Tensor], bbox_preds: Optional[List[Tensor]], dense_feats: Sequence[Tensor],
                     batch_gt_instances_3d: list, batch_gt_instances: list, batch_img_metas: List[dict],
                     batch_gt_instances_ignore: Optional[list] = None, batch_cam_pts: Optional[List[Tensor]] = None,
                     dense_x2d: Optional[Tensor] = None, dense_mask: Optional[Tensor] = None) -> dict:
        """Losses of the head's outputs against the batch's gt (docs/method.md §5): volume-centre targets
        (invalid objects dropped and counted, ``num_dropped_centers``), FCOS losses, importance-weighted object
        sampling, sub-heads on the sampled gt labels, the pose stage's and the object branches' losses,
        and the optional RoI / depth losses. ``batch_cam_pts``: per image (m, 3) LiDAR ``[u, v, z]`` (depth
        branch)."""
        ref = cls_scores[0]
        cams = self.cameras(batch_img_metas, ref, dense_x2d, dense_mask)
        B = len(batch_img_metas)
        gt3d = batch_gt_instances_3d
        gt = self.center_target.filter(gt3d, batch_gt_instances, cams, ref)  # the one host read of the gt filtering
        boxes2d, labels, centres = gt.boxes2d, gt.labels, gt.centres
        ignore = [g.bboxes if g is not None and 'bboxes' in g else None
                  for g in (batch_gt_instances_ignore or [None] * B)]
        # ---- FCOS
        points, strides, ranges = self.fcos_head.get_points([c.shape[-2:] for c in cls_scores], ref.dtype,
                                                            ref.device)
        targets = self.fcos_head.get_targets(points, strides, ranges, boxes2d, labels, centres, ignore)
        losses = self.fcos_head.loss_by_feat(cls_scores, centers, centernesses, targets, boxes2d, centres,
                                             bbox_preds=bbox_preds)
        # ---- object sampling and sub-heads
        M = points.shape[0]
        fg = targets.labels.reshape(-1) < self.num_classes
        smp = self.object_sampler(fg, targets.centerness.reshape(-1), targets.gt_inds.reshape(-1), B,
                                  num_gts=sum(len(b) for b in gt.boxes3d))
        img_inds, pt = smp.point_inds // M, smp.point_inds % M
        all_boxes, all_labels = torch.cat(gt.boxes3d), torch.cat(labels)
        obj_labels = all_labels[smp.gt_inds]
        emb = self.fcos_head.flatten(embs).reshape(B * M, -1)[smp.point_inds]
        cen = self.fcos_head.flatten(centers).reshape(B * M, -1)[smp.point_inds]
        cen = self.fcos_head.select_centers(cen, obj_labels)
        key_map, value_map = self.dense_branch(dense_feats, cams.img_wh, cams.pad_hw)
        out = self.forward_subheads(emb, cen, strides[pt], img_inds, obj_labels, key_map, value_map, cams)
        out, finite = self.exclude_nonfinite_objects(out)
        losses.update(self.loss_objects(out, all_boxes[smp.gt_inds], obj_labels, img_inds, smp, cams,
                                        gather_gt_fields(gt3d, gt.keep_idx, smp.gt_inds, ref.device), finite))
        if self.depth_branch is not None:
            losses.update(self.depth_branch.loss(value_map, [p.to(ref) for p in batch_cam_pts], cams.cam2img,
                                                 cams.img_transform, cams.img_wh, self.output_stride))
        if self.roi_aux is not None:
            losses.update(self.roi_aux.loss_from_samples(out['query'], out['dims'], smp.gt_inds, smp.weights,
                                                         all_boxes, boxes2d, gt3d, gt.valid_host, cams, key_map,
                                                         value_map, dense_x2d))
        losses['num_dropped_centers'] = gt.num_dropped.to(ref)
        return losses

    # objects left out of every loss for NaN/Inf outputs (:func:`~epropnp_det.models.utils.exclude_nonfinite_objects`)
    exclude_nonfinite_objects = staticmethod(exclude_nonfinite_objects)

    def loss_objects(self, out: dict, boxes: Tensor, labels: Tensor, img_inds: Tensor, smp, cams: CameraBatch,
                     gt_extra: dict, finite: Optional[Tensor] = None) -> dict:
        """Object-level losses of the ``N`` samples (docs/method.md §5.4–5.7): the pose stage's (pose, score,
        regularisation) and the object branches' (dims, velocity, attributes). ``boxes`` (N, 7) are their gt
        boxes; ``finite`` (N,) bool (:meth:`exclude_nonfinite_objects`): objects with weight zero in every loss."""
        w, w_u = smp.weights.to(boxes), smp.uniform_weights.to(boxes)
        if finite is not None:
            w, w_u = w * finite, w_u * finite
        losses = self.object_branches.loss(out, boxes, labels, w, gt_extra)
        losses.update(self.pose_stage.loss(self.correspondences(out, img_inds), cams.pnp_camera(img_inds),
                                           boxes[:, 3:7], out['score_logit'], w, w_u))
        # objects left out of every loss for NaN/Inf outputs (0 when ``finite`` is not given)
        losses['num_nonfinite_objects'] = (boxes.new_zeros(()) if finite is None else (~finite).sum().to(boxes))
        return losses

    # ------------------------------------------------------------------------------------------ inference
    def predict(self, x: Sequence[Tensor], batch_data_samples: list, rescale: bool = False,
                dense_x2d: Optional[Tensor] = None, dense_mask: Optional[Tensor] = None) -> List[InstanceData]:
        """Detections per image (mmdet's ``predict``: ``forward`` then :meth:`predict_by_feat`)."""
        (cls, centers, ctrness, embs), dense_feats = self(x)
        return self.predict_by_feat(cls, centers, ctrness, embs, dense_feats,
                                    [ds.metainfo for ds in batch_data_samples], rescale, dense_x2d, dense_mask)

    def predict_by_feat(self, cls_scores: List[Tensor], centers: List[Tensor], centernesses: List[Tensor],
                        embs: List[Tensor], dense_feats: Sequence[Tensor], batch_img_metas: List[dict],
                        rescale: bool = False, dense_x2d: Optional[Tensor] = None,
                        dense_mask: Optional[Tensor] = None) -> List[InstanceData]:
        """Candidates → sub-heads → poses → post-processed detections (boxes in the original camera frame, so
        ``rescale`` is irrelevant). With ``test_cfg.pred_depth`` and the depth branch, each result's metainfo gets
        ``depth_map`` (h, w), metres at the value-map cells."""
        cfg = self.test_cfg
        cams = self.cameras(batch_img_metas, cls_scores[0], dense_x2d, dense_mask)
        cand = self.fcos_head.get_candidates(cls_scores, centers, centernesses, embs, cfg['score_thr'],
                                             cfg['max_per_img'])
        key_map, value_map = self.dense_branch(dense_feats, cams.img_wh, cams.pad_hw)
        out = self.forward_subheads(cand.emb, cand.centers, cand.strides, cand.img_inds, cand.labels, key_map,
                                    value_map, cams)
        results = self.decode_objects(out, cand, cams, len(batch_img_metas))
        if cfg.get('pred_depth') and self.depth_branch is not None:  # v2 'depth' view
            maps = self.depth_branch.predict_depth_maps(value_map, cams.cam2img, self.output_stride)
            for r, depth in zip(results, maps):
                r.set_metainfo(dict(depth_map=depth))  # (h, w) metres at the value-map cells (augmented image)
        return results

    def decode_objects(self, out: dict, cand, cams: CameraBatch, num_imgs: int) -> List[InstanceData]:
        """Poses of the candidates (pose stage) and post-processing (docs/method.md §6.2–6.3) → one
        ``InstanceData`` per image (:func:`~epropnp_det.models.utils.detections.assemble_detections`)."""
        cfg = self.test_cfg
        corr = self.correspondences(out, cand.img_inds)
        camera = cams.pnp_camera(cand.img_inds)
        ratio = float(cfg.get('mc_scoring_ratio', 0.0))
        est = self.pose_stage.decode(corr, camera, num_iter=cfg['pnp_num_iter'], fast_mode=cfg['pnp_fast_mode'],
                                     mc_scoring_ratio=ratio, mc_scoring_samples=cfg.get('mc_scoring_samples'),
                                     mc_seed=cfg.get('mc_seed'))
        score3d = self.pose_stage.blend_score(out['score_logit'].sigmoid(), est, ratio)

        def sample(sel):  # K weighted pose samples of the kept detections (test_cfg.mc_samples)
            return self.pose_stage.sample(corr, camera, est, sel, cfg['mc_samples'], cfg['pnp_num_iter'],
                                          cfg['pnp_fast_mode'])
        return assemble_detections(out, cand, est.pose, est.pose_cov, score3d, cams, num_imgs, self.num_classes,
                                   cfg, sample if cfg['mc_samples'] else None)
