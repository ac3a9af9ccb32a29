"""EPro-PnP-Det head: FCOS queries → deformable sampler → point subnet → EPro-PnP (spec §3, §5, §6).

This class is glue: every idea lives in its own module (``layers/``, ``task_modules/``, ``utils/``,
``ops/pnp``). Conventions: boxes ``[l, h, w, x, y, z, yaw]`` (geometric centre, original camera frame), poses
``[x, y, z, yaw]``; 2D quantities of the network input are augmented continuous pixels; x2d handed to the PnP
layer are original-image K-projection coordinates (``pixel_convention`` 'v1': integer pixel centres, 'v2':
continuous); ``img_transform`` (metainfo, 3×3) maps original → augmented continuous pixels.

Training (``loss``): volume-centre targets (invalid objects dropped *and counted*, logged as
``num_dropped_centers``), FCOS targets + losses, importance-weighted object sampling, sub-heads on the sampled
gt labels, Monte-Carlo pose loss (gt-initialised solve; divided by the running ``norm_factor`` of the predicted
weight scales, all-reduced), dims / 3D score / derivative regularisation / velocity / attribute losses with the
spec's weights (§5.8). Inference (``predict``): candidate selection, Gauss–Newton PnP in fast mode, projected 2D
boxes, 2D NMS, rotated BEV NMS, ``pred_instances_3d`` with ``CameraInstance3DBoxes`` (box_dim 9) as mmdet3d's
metric expects; the pose covariance (and optionally Monte-Carlo pose samples) are attached per detection.
"""
import logging
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.ops import batched_nms
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS, TASK_UTILS
from mmengine.logging import MessageHub, print_log
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from epropnp_det.ops.pnp.cost import adaptive_huber_delta
from epropnp_det.ops.pnp.epropnp import EProPnP4DoF
from epropnp_det.ops.pnp.losses import MonteCarloPoseLoss
from epropnp_det.ops.pnp.regularization import derivative_regularization
from epropnp_det.ops.pnp.types import CameraParams
from epropnp_det.structures.boxes import cam_boxes_to_model, model_to_cam_boxes

from ..layers.roi_aux_branch import active_gt_assignment
from ..utils import bev_nms, project_boxes_2d
from ..utils.mc_scoring import blend_scores, mc_te_score

__all__ = ['EProPnPDeformPnPHead', 'NUSCENES_CLS_ATTRS']

# allowed attribute indices per nuScenes class (spec §4.2 CLS2ATTR); 8 = 'None'
NUSCENES_CLS_ATTRS = ((5, 6, 7),) * 5 + ((0, 1),) * 2 + ((2, 3, 4),) + ((8,),) * 2


def _as_tensor(x, ref: Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=ref.dtype, device=ref.device)


@MODELS.register_module()
class EProPnPDeformPnPHead(BaseModule):
    """Monocular 3D detection head of EPro-PnP-Det.

    Args:
        num_classes, in_channels, strides: classes, FPN channels and strides of *all* FPN outputs.
        output_stride: stride ``s`` of the key / value maps.
        dense_lvl_range / det_lvl_range: ``[start, end)`` FPN level ranges of the dense branch / the FCOS head.
        embed_dims, num_heads, num_points: sampler sizes (C, Hh, P).
        pixel_convention: 'v1' or 'v2' meaning of K-projections (see module docstring).
        use_cls_emb: add a learned per-class embedding (zero init) to the query embedding.
        fcos_head, dense_branch, sampler, point_subnet, object_branches: sub-module configs (the shared sizes
            above are filled in).
        center_target, object_sampler: ``TASK_UTILS`` configs.
        pnp: kwargs of :class:`~epropnp_det.ops.pnp.epropnp.EProPnP4DoF` (``mc_samples``, ``num_iter``,
            ``solver_cfg``...).
        loss_pose: ``dict(loss_weight, momentum)`` of :class:`~epropnp_det.ops.pnp.losses.MonteCarloPoseLoss` (KL
            estimate incl. the −log K constant, non-finite objects excluded and logged as ``num_nonfinite_pose``).
        loss_dim, loss_score, loss_velo, loss_attr: mmdet loss configs; loss_reg_pos / loss_reg_orient:
            ``dict(loss_weight, beta)`` of the derivative regularisation (None disables it).
        loss_proj: auxiliary reprojection loss on gt RoIs (spec §5.6), e.g.
            ``dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5)``; None disables it.
        loss_regr: coordinate regression from LiDAR on gt RoIs (§5.6): a SmoothL1 config (v1 form) or an MVD config
            (v2 form, §10.11); None disables it. Needs ``gt_instances_3d.x3d / .x2d``.
        roi_shape: (rh, rw) of the RoI branch (default ``train_cfg['roi_shape']``, else (28, 28)).
        roi_aux_branch: extra kwargs of :class:`~epropnp_det.models.layers.EProPnPRoIAuxBranch` (built only when
            ``loss_proj`` or ``loss_regr`` is set).
        depth_branch: config of :class:`~epropnp_det.models.layers.EProPnPDepthBranch` (v2 dense depth loss on the
            LiDAR points ``data_sample.cam_pts_uvz``, spec §10.12); None disables it.
        detach_pose_x2d: detach x2d (and hence the Huber δ) in the Monte-Carlo pose loss (v1 True; v2 False, §10.8).
        detach_reg_inputs: detach dims, weight scale and δ in the derivative regularisation (v1 True; v2 False,
            §10.8).
        learnable_rel_delta: make the relative Huber δ of the PnP cost (``δ = relative_delta · mean(w2d) ·
            spread(x2d)``, :func:`~epropnp_det.ops.pnp.cost.adaptive_huber_delta`) a learnable log-parameter
            ``log_rel_delta`` initialised at ``log(pnp.relative_delta)`` (spec §10.15; off in every published
            config, so checkpoints without the key load unchanged). It is used by the pose loss, the derivative
            regularisation (gradient only when ``detach_reg_inputs=False``) and inference.
        train_cfg: ``dict(num_obj_samples_per_img, roi_shape, share_reg_solve)`` overrides. ``share_reg_solve``
            (default True): the derivative regularisation's independent solve (no gt init, spec §2.12) is taken
            from the Monte-Carlo pose loss's solve call, which then iterates from its RSLM result alone as well
            (same RSLM draws; both LM runs one batch of 2N problems), instead of a second RSLM + LM call. Used
            only when the two solves have the same settings (``pnp.solver_cfg == dict(num_iter=10)``).
        test_cfg: ``score_thr, max_per_img,
            nms_iou2d, nms_ioubev_thr, pnp_num_iter, min_bbox_size, mc_samples (0: no MC samples), cls_attrs,
            mc_scoring_ratio`` (r > 0: Monte-Carlo scoring ``score3d^(1−r)·score_mc^r``, spec §6.2, with
            ``mc_scoring_samples`` samples, default ``pnp.mc_samples``), ``pnp_fast_mode`` (GN instead of LM),
            ``pred_depth`` (with the depth branch: ``pred_instances_3d.metainfo['depth_map']`` (h, w) metres),
            ``mc_seed`` (None: global RNG; an int seeds a ``torch.Generator`` for the RSLM initialisation and every
            Monte-Carlo draw of the batch). With ``mc_samples = K > 0`` each kept detection gets ``pose_samples``
            (M, K, 4) AMIS samples ``[x, y, z, yaw]`` of the box centre pose (camera frame, metres / radians) and
            ``pose_sample_weights`` (M, K) (self-normalised importance weights, rows sum to 1), e.g. for the BEV
            orientation histograms of :func:`epropnp_det.visualization.draw_bev` (spec §9 'mc', §10.17).

    EPro-PnP-Det v2 (spec §10) as options of this head and its parts (all off / v1 by default):

    ======  ===========================================================================================
    §10.1   ``pixel_convention='v2'`` (camera clip bounds, volume centres, projected boxes, K-projections);
            data: ``EProPnPLoadLidarObjectCoords(convention='v2')``, ``EProPnPDataPreprocessor(dense_x2d_convention)``
    §10.2   ``img_transform`` metainfo: always produced by the transforms (flip / crop / resize)
    §10.3   ``EProPnPDataPreprocessor(with_dense_x2d=False)`` (dense maps only for the v1 sampler mode)
    §10.4   ``EProPnPLoadLidarObjectCoords(with_cam_pts=True)`` → ``data_sample.cam_pts_uvz``
    §10.5   ``sampler=dict(x2d_mode='homography')`` (default), ``mask_ramp='v2'`` (published) / 'symmetric' (fix)
    §10.6   one point-transformer layer (always); checkpoint names: ``docs/checkpoint_mapping.md``
    §10.7   ``point_subnet=dict(detach_pos_x2d=False)``
    §10.8   ``detach_pose_x2d=False``, ``detach_reg_inputs=False``
    §10.9   ``loss_reg_pos=None`` / ``loss_reg_orient=None`` (each independently); single ``loss_pose``
    §10.10  ``object_branches=dict(xavier_trunk=True)``
    §10.11  ``loss_regr`` = MVD config (v2 form, ``EProPnPRoIAuxBranch``)
    §10.12  ``depth_branch=dict(...)`` (``EProPnPDepthBranch`` + ``EProPnPCamAwareLinearCoder``)
    §10.13  ``fcos_head=dict(bbox_branch=(256,), loss_bbox2d=GIoU 0.5, ref_offset_init_std=0.01)``
    §10.14  ``MVDGaussianMixtureNLLLoss(delta, sigma, freeze_sigma)``
    §10.15  ``learnable_rel_delta=True`` (the cost module form itself needs no option: the ops are stateless)
    §10.16  ``test_cfg=dict(pnp_fast_mode, mc_scoring_samples=512, pred_depth)`` (``pred_depth``: the depth view)
    §10.17  ``test_cfg=dict(mc_samples=K, mc_seed)`` → ``pose_samples`` / ``pose_sample_weights`` for the BEV yaw
            histograms; drawing: :mod:`epropnp_det.visualization`, ``tools/draw_predictions.py --orient-hist K
            --depth``
    ======  ===========================================================================================
    §10.19 (miscellaneous) is not a model option.
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
                 learnable_rel_delta: bool = False,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if pixel_convention not in ('v1', 'v2'):
            raise ValueError(f"pixel_convention must be 'v1' or 'v2', got {pixel_convention!r}")
        self.num_classes, self.output_stride, self.pixel_convention = num_classes, output_stride, pixel_convention
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
                                                      num_classes=num_classes), **object_branches))
        self.cls_emb = nn.Parameter(torch.zeros(num_classes, embed_dims)) if use_cls_emb else None
        self.center_target = TASK_UTILS.build(dict(dict(type='EProPnPVolumeCenter', output_stride=output_stride,
                                                        pixel_convention=pixel_convention), **center_target))
        train_cfg = dict(train_cfg or {})
        self.object_sampler = TASK_UTILS.build(dict(dict(
            type='EProPnPObjectSampler', num_per_img=train_cfg.get('num_obj_samples_per_img', 48)),
            **object_sampler))
        # 'exclude': a NaN/Inf object is left out of the pose loss and counted instead of raising (which would end
        # the run), and the layer makes no host synchronisation for the check
        self.pnp = EProPnP4DoF(**dict(dict(nonfinite='exclude'), **pnp))
        # §10.15: optional learnable log relative Huber δ; the ops stay stateless and receive its value
        self.log_rel_delta = nn.Parameter(torch.tensor(math.log(self.pnp.relative_delta))) \
            if learnable_rel_delta else None
        self.loss_pose = MonteCarloPoseLoss(**dict(dict(loss_weight=0.15, momentum=0.01), **loss_pose),
                                            reduce_fn=reduce_mean)  # norm-factor EMA all-reduced across ranks
        self.loss_dim, self.loss_score = MODELS.build(loss_dim), MODELS.build(loss_score)
        self.loss_velo = MODELS.build(loss_velo) if loss_velo is not None else None
        self.loss_attr = MODELS.build(loss_attr) if loss_attr is not None else None
        self.loss_reg_pos_cfg, self.loss_reg_orient_cfg = loss_reg_pos, loss_reg_orient
        self.train_cfg = train_cfg
        # the regularisation's solve = RSLM + 10 trust-region LM iterations (§2.12): shareable iff the MC solve is too
        self.share_reg_solve = bool(train_cfg.get('share_reg_solve', True)) and \
            self.pnp.solver_cfg == dict(num_iter=10)
        # v2 dense depth branch with its MVD loss (spec §10.12)
        self.depth_branch = None if depth_branch is None else MODELS.build(dict(dict(
            type='EProPnPDepthBranch', embed_dims=embed_dims, pixel_convention=pixel_convention), **depth_branch))
        self.detach_pose_x2d, self.detach_reg_inputs = detach_pose_x2d, detach_reg_inputs
        self.roi_aux = None  # auxiliary dense losses on gt RoIs (spec §5.6)
        if loss_proj is not None or loss_regr is not None:
            self.roi_aux = MODELS.build(dict(dict(
                type='EProPnPRoIAuxBranch', embed_dims=embed_dims, num_heads=num_heads,
                roi_shape=roi_shape or train_cfg.get('roi_shape', (28, 28)), output_stride=output_stride,
                pixel_convention=pixel_convention, loss_proj=loss_proj, loss_regr=loss_regr), **roi_aux_branch))
        self.test_cfg = dict(dict(score_thr=0.04, max_per_img=256, nms_iou2d=0.8, nms_ioubev_thr=0.25,
                                  pnp_num_iter=5, min_bbox_size=4.0, mc_samples=0, cls_attrs=NUSCENES_CLS_ATTRS,
                                  mc_scoring_ratio=0.0, mc_scoring_samples=None, pnp_fast_mode=True, pred_depth=False,
                                  mc_seed=None),
                             **(test_cfg or {}))

    # --------------------------------------------------------------------------------------------- common
    def forward(self, x: Sequence[Tensor], with_bbox: bool = False):
        """FPN levels → (FCOS per-level outputs ``cls, centers, centerness, emb`` (+ ``bbox`` with ``with_bbox`` and
        the v2 box branch), dense feats)."""
        if len(x) < max(self.det_lvl_range[1], self.dense_lvl_range[1]):
            raise ValueError(f'got {len(x)} FPN levels; det_lvl_range={self.det_lvl_range}, '
                             f'dense_lvl_range={self.dense_lvl_range}')
        return self.fcos_head(x[slice(*self.det_lvl_range)], with_bbox=with_bbox), x[slice(*self.dense_lvl_range)]

    def _metas(self, metas: List[dict], ref: Tensor, dense_x2d: Optional[Tensor] = None,
               dense_mask: Optional[Tensor] = None) -> dict:
        """Per-image tensors from metainfo: K (B,3,3), T (B,3,3), img_wh (B,2), ori_hw (B,2), flip (B,); with
        the sampler in ``dense_map`` mode also the stride-pooled dense maps (B,2,h,w) / (B,1,h,w) (spec §3.6 v1)."""
        def get(m, key):
            if key not in m:
                raise KeyError(f"EProPnPDeformPnPHead: data sample metainfo lacks '{key}' (see docs/data_contract.md)")
            return m[key]
        K = torch.stack([_as_tensor(get(m, 'cam2img'), ref)[:3, :3] for m in metas])
        T = torch.stack([_as_tensor(m.get('img_transform', np.eye(3)), ref) for m in metas])
        img_wh = torch.stack([_as_tensor(get(m, 'img_shape')[:2], ref).flip(0) for m in metas])
        ori_hw = torch.stack([_as_tensor(get(m, 'ori_shape')[:2], ref) for m in metas])
        flip = torch.tensor([bool(m.get('flip', False)) for m in metas], device=ref.device)
        pad = metas[0].get('batch_input_shape', metas[0].get('pad_shape', get(metas[0], 'img_shape')))
        out = dict(K=K, T=T, img_wh=img_wh, ori_hw=ori_hw, flip=flip, pad_hw=(int(pad[0]), int(pad[1])))
        if self.sampler.x2d_mode == 'dense_map':
            if dense_x2d is None or dense_mask is None:
                raise ValueError("sampler x2d_mode='dense_map' needs inputs['img_dense_x2d'] and "
                                 "inputs['img_dense_x2d_mask'] (EProPnPDataPreprocessor(with_dense_x2d=True))")
            s = self.output_stride
            out['dense_x2d'] = F.avg_pool2d(dense_x2d.to(ref), s, ceil_mode=True)
            out['dense_mask'] = F.avg_pool2d(dense_mask.to(ref), s, ceil_mode=True)
        return out

    def forward_subheads(self, emb: Tensor, centers: Tensor, strides: Tensor, img_inds: Tensor, labels: Tensor,
                         key_map: Tensor, value_map: Tensor, meta: dict) -> dict:
        """Object queries → object outputs and correspondences (spec §3.6–3.8).

        Args:
            emb (N, C), centers (N, 2) augmented px, strides (N,), img_inds (N,), labels (N,).
        Returns:
            dict of the ``ObjectBranchOutput`` / ``PointSubnetOutput`` fields plus ``query``; x3d-ready ``noc``
            (N, n, 3), ``x2d`` (N, n, 2) original px, ``w2d`` (N, n, 2) (scale not applied).
        """
        if self.cls_emb is not None:
            emb = emb + self.cls_emb[labels]
        pe = self.dense_branch.positional_encoding.points_to_enc(centers, meta['img_wh'][img_inds].flip(-1))
        samp = self.sampler(emb, pe, centers, strides, img_inds, key_map, value_map, meta['img_wh'],
                            img_transforms=meta['T'], dense_x2d=meta.get('dense_x2d'),
                            dense_mask=meta.get('dense_mask'))
        flip = meta['flip'][img_inds]
        obj = self.object_branches(samp.output, labels, flip)
        pts = self.point_subnet(samp.values, samp.x2d, samp.query, samp.mask, flip)
        return dict(obj._asdict(), **pts._asdict(), query=samp.query)

    def relative_delta(self):
        """Relative Huber δ of the PnP cost: ``exp(log_rel_delta)`` (0-dim tensor, learnable, §10.15) or the fixed
        ``pnp.relative_delta`` (float)."""
        return self.pnp.relative_delta if self.log_rel_delta is None else self.log_rel_delta.exp()

    def _camera(self, meta: dict, img_inds: Tensor) -> CameraParams:
        return CameraParams.from_image_shape(meta['K'][img_inds], meta['ori_hw'][img_inds],
                                             convention=self.pixel_convention)

    # ------------------------------------------------------------------------------------------- training
    def loss(self, x: Sequence[Tensor], batch_data_samples: list, dense_x2d: Optional[Tensor] = None,
             dense_mask: Optional[Tensor] = None) -> dict:
        """Training losses; ``dense_x2d`` (B,2,H,W) / ``dense_mask`` (B,1,H,W) only for ``dense_map`` mode."""
        fcos_out, dense_feats = self(x, with_bbox=True)
        cls, centers, ctrness, embs = fcos_out[:4]
        bbox_preds = fcos_out[4] if len(fcos_out) > 4 else None  # v2 2D box branch (training only)
        metas = [ds.metainfo for ds in batch_data_samples]
        ref = cls[0]
        meta = self._metas(metas, ref, dense_x2d, dense_mask)
        B = len(metas)
        # ---- gt, filtered by volume-centre validity
        gt3d = [ds.gt_instances_3d for ds in batch_data_samples]
        gt2d = [ds.gt_instances for ds in batch_data_samples]
        for b in range(B):
            if len(gt3d[b]) != len(gt2d[b]):
                raise ValueError(f'image {b}: {len(gt3d[b])} gt_instances_3d but {len(gt2d[b])} gt_instances')
        boxes3d = [g.bboxes_3d.to(ref) if isinstance(g.bboxes_3d, Tensor) else  # model convention (contract)
                   cam_boxes_to_model(g.bboxes_3d)[0].to(ref) for g in gt3d]  # mmdet3d box class: convert
        feat_hw = (-(-meta['pad_hw'][0] // self.output_stride), -(-meta['pad_hw'][1] // self.output_stride))
        centres, valid, num_dropped = self.center_target.get_targets(
            boxes3d, [g.bboxes.to(ref) for g in gt2d], list(meta['K']), list(meta['T']), list(meta['img_wh']),
            feat_hw)
        # the one host read of the ground-truth filtering: which objects each image keeps (the per-image list
        # shapes below depend on it; the RoI branch filters Python lists with it); on the device the kept indices
        # come from a stable sort, without another sync
        flat_valid = torch.cat(valid).tolist() if valid else []
        sizes = [int(v.shape[0]) for v in valid]
        valid_host = [flat_valid[sum(sizes[:b]):sum(sizes[:b + 1])] for b in range(B)]
        keep_idx = [torch.sort((~v).to(torch.uint8), stable=True).indices[:sum(vh)]
                    for v, vh in zip(valid, valid_host)]
        keep = lambda t, b: t[keep_idx[b]]  # noqa: E731
        boxes3d = [keep(t, b) for b, t in enumerate(boxes3d)]
        boxes2d = [keep(g.bboxes.to(ref), b) for b, g in enumerate(gt2d)]
        labels = [keep(g.labels_3d.to(ref.device).long(), b) for b, g in enumerate(gt3d)]
        centres = [keep(c, b) for b, c in enumerate(centres)]
        ignore = [ds.ignored_instances.bboxes.to(ref) if 'ignored_instances' in ds and
                  'bboxes' in ds.ignored_instances else None for ds in batch_data_samples]
        ignore = None if all(i is None for i in ignore) else [i if i is not None else ref.new_zeros(0, 4)
                                                               for i in ignore]
        # ---- FCOS
        points, strides, ranges = self.fcos_head.get_points([c.shape[-2:] for c in cls], ref.dtype, ref.device)
        targets = self.fcos_head.get_targets(points, strides, ranges, boxes2d, labels, centres, ignore)
        losses = self.fcos_head.loss_by_feat(cls, centers, ctrness, targets, boxes2d, centres, bbox_preds=bbox_preds)
        # ---- object sampling
        M = points.shape[0]
        fg = targets.labels.reshape(-1) < self.num_classes
        smp = self.object_sampler(fg, targets.centerness.reshape(-1), targets.gt_inds.reshape(-1), B,
                                  num_gts=sum(len(b) for b in boxes3d))
        img_inds, pt = smp.point_inds // M, smp.point_inds % M
        all_boxes, all_labels = torch.cat(boxes3d), torch.cat(labels)
        obj_labels = all_labels[smp.gt_inds]
        emb = self.fcos_head.flatten(embs).reshape(B * M, -1)[smp.point_inds]
        cen = self.fcos_head.flatten(centers).reshape(B * M, -1)[smp.point_inds]
        cen = self.fcos_head.select_centers(cen, obj_labels)
        key_map, value_map = self.dense_branch(dense_feats, meta['img_wh'], meta['pad_hw'])
        out = self.forward_subheads(emb, cen, strides[pt], img_inds, obj_labels, key_map, value_map, meta)
        out, finite = self.exclude_nonfinite_objects(out)
        losses.update(self.loss_objects(out, all_boxes[smp.gt_inds], obj_labels, img_inds, smp, meta,
                                        self._gather_gt(gt3d, keep_idx, smp.gt_inds, ref), finite))
        if self.depth_branch is not None:
            losses.update(self.depth_branch.loss(value_map, self._cam_pts(batch_data_samples, ref), meta['K'],
                                                 meta['T'], meta['img_wh'], self.output_stride))
        if self.roi_aux is not None:
            losses.update(self.loss_roi_aux(out, smp, all_boxes, boxes2d, gt3d, valid_host, meta, key_map,
                                            value_map, dense_x2d))
        losses['num_dropped_centers'] = num_dropped.to(ref)
        return losses

    @staticmethod
    def _cam_pts(batch_data_samples: list, ref: Tensor) -> List[Tensor]:
        """Per-image LiDAR points ``[u, v, z]`` (original image) for the depth branch."""
        if not all('cam_pts_uvz' in ds for ds in batch_data_samples):
            raise KeyError("depth_branch needs data_sample.cam_pts_uvz: use EProPnPLoadLidarObjectCoords("
                           "with_cam_pts=True) in the training pipeline (see docs/data_contract.md)")
        return [ds.cam_pts_uvz.to(ref) for ds in batch_data_samples]

    @staticmethod
    def _gather_gt(gt3d, keep_idx, gt_inds, ref) -> dict:
        """Per-sample attribute / velocity targets (fields optional); ``keep_idx`` the kept gts per image."""
        out = {}
        for name in ('attr_labels', 'velocities', 'velocities_valid'):
            if all(name in g for g in gt3d):
                vals = torch.cat([g[name].to(ref.device)[k] for g, k in zip(gt3d, keep_idx)])
                out[name] = vals[gt_inds]
        return out

    def loss_roi_aux(self, out: dict, smp, all_boxes: Tensor, boxes2d: List[Tensor], gt3d: list,
                     valid_host: List[List[bool]], meta: dict, key_map: Tensor, value_map: Tensor,
                     dense_x2d: Optional[Tensor]) -> dict:
        """Auxiliary losses on the RoIs of the active gts (unique sampled gts; spec §5.6). The samples' queries and
        dims are averaged per gt with the row-normalised sample weights ``A`` (G, N). ``valid_host``: per image,
        which gts passed the volume-centre filter (host lists)."""
        active, A = active_gt_assignment(smp.gt_inds, smp.weights.to(all_boxes))
        img_of_gt = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=all_boxes.device)
                               for i, b in enumerate(boxes2d)])[active]
        rois = torch.cat((img_of_gt[:, None].to(all_boxes), torch.cat(boxes2d)[active]), 1)
        G = active.numel()
        query = (A @ out['query'].flatten(1)).reshape((G,) + tuple(out['query'].shape[1:]))
        lidar_x3d = lidar_x2d = None
        if self.roi_aux.loss_regr is not None and all('x3d' in g and 'x2d' in g for g in gt3d):
            # per-gt LiDAR lists, filtered by the volume-centre validity like every other gt field
            flat3d = [p for b, g in enumerate(gt3d) for p, v in zip(g.x3d, valid_host[b]) if v]
            flat2d = [p for b, g in enumerate(gt3d) for p, v in zip(g.x2d, valid_host[b]) if v]
            lidar_x3d = [flat3d[i] for i in active.tolist()]
            lidar_x2d = [flat2d[i] for i in active.tolist()]
        return self.roi_aux.loss(rois, all_boxes[active], meta['K'][img_of_gt], meta['ori_hw'][img_of_gt],
                                 meta['flip'][img_of_gt], meta['T'][img_of_gt], query, A @ out['dims'], key_map,
                                 value_map, dense_x2d=dense_x2d, lidar_x3d=lidar_x3d, lidar_x2d=lidar_x2d)

    # object outputs checked by :meth:`exclude_nonfinite_objects`, with the value that replaces a non-finite object's
    _OBJECT_OUTPUTS = dict(noc=0., x2d=0., w2d=0., dims=1., dim_enc=0., scale=1., score_logit=0., velo=0.,
                           attr_logits=0.)

    @classmethod
    def exclude_nonfinite_objects(cls, out: dict) -> Tuple[dict, Tensor]:
        """Objects whose outputs (``noc, x2d, w2d, dims, dim_enc, scale, score_logit, velo, attr_logits``) are all
        finite: (N,) bool, and a copy of ``out`` in which the other objects' values are replaced by harmless ones.

        ``torch.where`` sends exactly zero gradient to the replaced values, so one NaN/Inf object cannot turn a
        training step's gradients into NaN (which would make the NaN-safe optimiser skip the whole step); the
        losses give these objects zero weight and ``num_nonfinite_objects`` counts them. No host synchronisation.
        """
        N = out['noc'].shape[0]
        finite = torch.ones(N, dtype=torch.bool, device=out['noc'].device)
        for k in cls._OBJECT_OUTPUTS:
            if out.get(k) is not None:
                finite = finite & torch.isfinite(out[k]).flatten(1).all(1) if out[k].dim() > 1 else \
                    finite & torch.isfinite(out[k])
        clean = dict(out)
        for k, fill in cls._OBJECT_OUTPUTS.items():
            v = out.get(k)
            if v is not None:
                clean[k] = torch.where(finite.reshape(N, *([1] * (v.dim() - 1))), v, fill)
        return clean, finite

    def loss_objects(self, out: dict, boxes: Tensor, labels: Tensor, img_inds: Tensor, smp, meta: dict,
                     gt_extra: dict, finite: Optional[Tensor] = None) -> dict:
        """Object-level losses of the ``N`` samples (spec §5.4–5.7). ``boxes`` (N, 7) are their gt boxes;
        ``finite`` (N,) bool (:meth:`exclude_nonfinite_objects`): objects with weight zero in every loss."""
        N = boxes.shape[0]
        w, w_u = smp.weights.to(boxes), smp.uniform_weights.to(boxes)
        if finite is not None:
            w, w_u = w * finite, w_u * finite
        avg = max(float(N), 1.0)
        noc, x2d, w2d, dims, scale = out['noc'], out['x2d'], out['w2d'], out['dims'], out['scale']
        dim_tgt = self.object_branches.dim_coder.encode(boxes[:, :3], labels)
        losses = dict(loss_dim=self.loss_dim(out['dim_enc'], dim_tgt, weight=w[:, None], avg_factor=3 * avg))
        # ---- Monte-Carlo pose loss with the running norm factor of the weight scales (spec §2.11); with no sample
        # this rank still enters its batch statistic (0) into the all-reduced EMA, as the original does
        batch_norm = ((scale * w[:, None]).sum() / max(2 * N, 1)).detach()
        empty_graph = noc.sum() * 0 + x2d.sum() * 0 + w2d.sum() * 0 + scale.sum() * 0 + dims.sum() * 0
        pose_gt = boxes[:, 3:7]
        if N == 0:
            zero = empty_graph + out['score_logit'].sum() * 0
            if self.log_rel_delta is not None:  # keep the learnable δ in the graph (DDP without unused params)
                zero = zero + self.log_rel_delta * 0
            self.loss_pose(boxes.new_zeros(0), boxes.new_zeros(1, 0), batch_norm_factor=batch_norm)
            losses.update(loss_pose=zero, loss_score=zero, ate=zero.detach(), num_nonfinite_pose=zero.detach())
            if self.loss_reg_pos_cfg is not None:
                losses['loss_reg_pos'] = zero
            if self.loss_reg_orient_cfg is not None:
                losses['loss_reg_orient'] = zero
        else:
            camera = self._camera(meta, img_inds)
            x3d, w2d_s = noc * dims[:, None], w2d * scale[:, None]
            # v1: x2d detached in the pose loss (δ from x2d.detach() and w2d_s); v2 (§10.8): x2d and δ undetached
            x2d_pose = x2d.detach() if self.detach_pose_x2d else x2d
            rel_delta = self.relative_delta()  # AdaptiveHuberPnPCost relative_delta (0.5, or learnable §10.15)
            mc = self.pnp.monte_carlo_forward(x3d, x2d_pose, w2d_s, camera, pose_init=pose_gt,
                                              delta=adaptive_huber_delta(x2d_pose, w2d_s, rel_delta),
                                              force_init_solve=True,
                                              with_free_solution=self.share_reg_solve)
            pose_loss = self.loss_pose(mc.cost_init, mc.logw, batch_norm_factor=batch_norm, weight=w, avg_factor=avg)
            losses['loss_pose'] = pose_loss.loss
            losses['num_nonfinite_pose'] = pose_loss.num_nonfinite.to(boxes)  # objects excluded (NaN/Inf)
            if self.detach_reg_inputs:  # v1: dims, weight scale and δ detached
                x3d_reg, w2d_reg = noc * dims.detach()[:, None], w2d * scale.detach()[:, None]
                delta = adaptive_huber_delta(x2d.detach(), w2d_s, rel_delta).detach()
            else:  # v2 (§10.8): gradients of the regularisation also reach dims, scale and δ
                x3d_reg, w2d_reg, delta = x3d, w2d_s, adaptive_huber_delta(x2d, w2d_s, rel_delta)
            # same values as the pose loss's inputs: its independent solve can be shared (pose_free); y* also gives the
            # score target
            reg = derivative_regularization(x3d_reg, x2d, w2d_reg, camera, delta, pose_gt,
                                            beta=(self.loss_reg_pos_cfg or {}).get('beta', 1.0),
                                            pose_opt=mc.pose_free, backend=self.pnp.cost_backend)
            te = (reg['pose_opt'][:, [0, 2]] - pose_gt[:, [0, 2]]).norm(dim=-1)
            score_tgt = ((2.5 - torch.log2(te.clamp(min=1e-6))) / 4).clamp(0, 1)
            losses['loss_score'] = self.loss_score(out['score_logit'], score_tgt.detach(), weight=w_u,
                                                   avg_factor=avg)
            if self.loss_reg_pos_cfg is not None:
                losses['loss_reg_pos'] = (reg['loss_pos'] * w).sum() / avg * self.loss_reg_pos_cfg['loss_weight']
            if self.loss_reg_orient_cfg is not None:
                losses['loss_reg_orient'] = ((reg['loss_orient'] * w).sum() / avg *
                                             self.loss_reg_orient_cfg['loss_weight'])
            losses['ate'] = ((te * w).sum() / avg).detach()
        losses['norm_factor'] = self.loss_pose.norm_factor.detach().clone()
        # objects left out of every loss for NaN/Inf outputs (0 when ``finite`` is not given)
        losses['num_nonfinite_objects'] = (boxes.new_zeros(()) if finite is None else (~finite).sum().to(boxes))
        # ---- velocity and attributes (spec §5.7)
        if self.loss_velo is not None and out['velo'] is not None:
            if 'velocities' in gt_extra:
                tgt = torch.nan_to_num(gt_extra['velocities'].to(boxes), nan=0.)
                ok = gt_extra.get('velocities_valid', torch.isfinite(gt_extra['velocities']).all(-1)).to(boxes)
                vw = (w * ok)[:, None].expand(-1, 2)
                norm = reduce_mean(vw.sum().detach().clamp(min=1))
                losses['loss_velo'] = self.loss_velo(out['velo'], tgt, weight=vw, avg_factor=norm)
            else:
                losses['loss_velo'] = out['velo'].sum() * 0
        if self.loss_attr is not None and out['attr_logits'] is not None:
            if 'attr_labels' in gt_extra and N:
                losses['loss_attr'] = self.loss_attr(out['attr_logits'], gt_extra['attr_labels'].long(), weight=w,
                                                     avg_factor=avg)
            else:
                losses['loss_attr'] = out['attr_logits'].sum() * 0
        return losses

    # ------------------------------------------------------------------------------------------ inference
    def predict(self, x: Sequence[Tensor], batch_data_samples: list, rescale: bool = False,
                dense_x2d: Optional[Tensor] = None, dense_mask: Optional[Tensor] = None) -> List[InstanceData]:
        """Detections per image (boxes are in the original camera frame; ``rescale`` is irrelevant)."""
        (cls, centers, ctrness, embs), dense_feats = self(x)
        metas = [ds.metainfo for ds in batch_data_samples]
        ref = cls[0]
        meta = self._metas(metas, ref, dense_x2d, dense_mask)
        cfg = self.test_cfg
        cand = self.fcos_head.get_candidates(cls, centers, ctrness, embs, cfg['score_thr'], cfg['max_per_img'])
        key_map, value_map = self.dense_branch(dense_feats, meta['img_wh'], meta['pad_hw'])
        out = self.forward_subheads(cand.emb, cand.centers, cand.strides, cand.img_inds, cand.labels, key_map,
                                    value_map, meta)
        results = self.predict_by_feat(out, cand, meta, len(metas))
        if cfg.get('pred_depth') and self.depth_branch is not None:  # v2 'depth' view (spec §6.3, §10.16)
            maps = self.depth_branch.predict_depth_maps(value_map, meta['K'], self.output_stride)
            for r, depth in zip(results, maps):
                r.set_metainfo(dict(depth_map=depth))  # (h, w) metres at the value-map cells (augmented image)
        return results

    def predict_flip_tta(self, x: Sequence[Tensor], x_flip: Sequence[Tensor], batch_data_samples: list,
                         batch_data_samples_flip: list, dense_maps=(None, None),
                         dense_maps_flip=(None, None)) -> List[InstanceData]:
        """Flip test-time augmentation by merging correspondences (spec §6.4).

        Class / centerness logits of both branches are averaged (flipped maps mirrored back along the width;
        exact only where ``w_feat·σ`` equals the image width, spec §13.10) and candidates are selected once; each
        branch then runs its own sub-heads (own key/value maps, ``img_transform`` and flip flag, embeddings and
        reference points gathered at the same indices); the ``2n`` correspondences are concatenated (x2d are
        original coordinates and NOC are flip-corrected, so they are compatible; each branch's w2d carries its
        own scale) and solved by one PnP. Dims are averaged in log space (fix of spec §13.22, which averages
        them arithmetically); 3D scores, velocities and attribute logits arithmetically.
        """
        (cls, centers, ctrness, embs), dense = self(x)
        (cls_f, centers_f, ctrness_f, embs_f), dense_f = self(x_flip)
        mirror = lambda maps: [t.flip(-1) for t in maps]  # noqa: E731
        cls_avg = [(a + b) / 2 for a, b in zip(cls, mirror(cls_f))]
        ctr_avg = [(a + b) / 2 for a, b in zip(ctrness, mirror(ctrness_f))]
        cfg = self.test_cfg
        ref = cls[0]
        metas = [self._metas([ds.metainfo for ds in samples], ref, *maps) for samples, maps in
                 ((batch_data_samples, dense_maps), (batch_data_samples_flip, dense_maps_flip))]
        outs, cand = [], None
        for (c, e, dense_feats), meta in zip(((centers, embs, dense), (mirror(centers_f), mirror(embs_f), dense_f)),
                                             metas):
            cand = self.fcos_head.get_candidates(cls_avg, c, ctr_avg, e, cfg['score_thr'], cfg['max_per_img'])
            key_map, value_map = self.dense_branch(dense_feats, meta['img_wh'], meta['pad_hw'])
            outs.append(self.forward_subheads(cand.emb, cand.centers, cand.strides, cand.img_inds, cand.labels,
                                              key_map, value_map, meta))
        a, b = outs
        mean_prob = (a['score_logit'].sigmoid() + b['score_logit'].sigmoid()) / 2
        merged = dict(
            noc=torch.cat((a['noc'], b['noc']), 1), x2d=torch.cat((a['x2d'], b['x2d']), 1),
            w2d=torch.cat((a['w2d'] * a['scale'][:, None], b['w2d'] * b['scale'][:, None]), 1),
            scale=torch.ones_like(a['scale']), dims=((a['dims'].log() + b['dims'].log()) / 2).exp(),
            score_logit=torch.logit(mean_prob, eps=1e-6),
            velo=None if a['velo'] is None else (a['velo'] + b['velo']) / 2,
            attr_logits=None if a['attr_logits'] is None else (a['attr_logits'] + b['attr_logits']) / 2)
        # the candidates' FCOS scores come from the averaged maps and are identical in both branches
        return self.predict_by_feat(merged, cand, metas[0], len(batch_data_samples))

    def predict_by_feat(self, out: dict, cand, meta: dict, num_imgs: int) -> List[InstanceData]:
        """PnP + post-processing of the candidates (spec §6.2–6.3)."""
        cfg = self.test_cfg
        N = cand.labels.shape[0]
        x3d = out['noc'] * out['dims'][:, None]
        w2d = out['w2d'] * out['scale'][:, None]
        camera = self._camera(meta, cand.img_inds)
        # the inference δ (v1 form: x2d detached); equal to the ops' default unless the relative δ is learnable
        delta = adaptive_huber_delta(out['x2d'].detach(), w2d, self.relative_delta())
        gen = None
        if cfg.get('mc_seed') is not None:  # reproducible Monte-Carlo draws (RSLM init and AMIS samples)
            gen = torch.Generator(device=w2d.device).manual_seed(int(cfg['mc_seed']))
        ratio = float(cfg.get('mc_scoring_ratio', 0.0))
        mc_all = None
        if ratio > 0 and N:  # Monte-Carlo forward INSTEAD of the plain solve (spec §6.2); its pose_opt is the output
            mc_all = self.pnp.monte_carlo_forward(x3d, out['x2d'], w2d, camera, delta=delta, generator=gen,
                                                  mc_samples=cfg.get('mc_scoring_samples'),
                                                  fast_mode=cfg['pnp_fast_mode'], num_iter=cfg['pnp_num_iter'])
            pose, pose_cov = mc_all.pose_opt, mc_all.pose_cov
        else:
            sol = self.pnp.solve(x3d, out['x2d'], w2d, camera, delta=delta, fast_mode=cfg['pnp_fast_mode'],
                                 num_iter=cfg['pnp_num_iter'], with_cov=True, generator=gen)
            pose, pose_cov = sol.pose, sol.cov
        boxes = torch.cat((out['dims'], pose), -1)  # (N, 7)
        score3d = out['score_logit'].sigmoid()
        if mc_all is not None:
            score3d = blend_scores(score3d, mc_te_score(mc_all.pose_samples, mc_all.logw, pose), ratio)
        scores = cand.scores * score3d
        bbox2d, in_front = project_boxes_2d(boxes, meta['K'][cand.img_inds], meta['ori_hw'][cand.img_inds].flip(-1),
                                            pixel_offset=0.5 if self.pixel_convention == 'v1' else 0.)
        wh = bbox2d[:, 2:] - bbox2d[:, :2]
        finite = torch.isfinite(boxes).all(-1) & torch.isfinite(scores)
        ok = in_front & (wh.min(-1).values >= cfg['min_bbox_size']) & finite
        idx = ok.nonzero()[:, 0]
        # read after the nonzero above has waited for the device anyway: candidates dropped for a NaN/Inf pose or
        # score (e.g. non-finite network outputs, excluded by the PnP layer) are counted and reported
        num_nonfinite = int((~finite).sum())
        if num_nonfinite:
            hub = MessageHub.get_current_instance()
            total = hub.get_info('num_nonfinite_predictions', 0) + num_nonfinite
            hub.update_info('num_nonfinite_predictions', total)
            print_log(f'EProPnPDeformPnPHead.predict: {num_nonfinite} candidate(s) with a NaN/Inf pose or score gave '
                      f'no box ({total} so far, MessageHub info "num_nonfinite_predictions")', logger='current',
                      level=logging.WARNING)
        groups = cand.img_inds * self.num_classes + cand.labels
        if len(idx):
            _, k2d = batched_nms(bbox2d[idx].float(), scores[idx].float().contiguous(), groups[idx],
                                 dict(type='nms', iou_threshold=cfg['nms_iou2d']))
            idx = idx[k2d]
            idx = idx[bev_nms(boxes[idx], scores[idx], groups[idx], cfg['nms_ioubev_thr'])]
        attr = None
        if out['attr_logits'] is not None:
            allowed = torch.zeros(self.num_classes, out['attr_logits'].shape[-1], dtype=torch.bool,
                                  device=boxes.device)
            for c, attrs in enumerate(cfg['cls_attrs'][:self.num_classes]):
                allowed[c, list(attrs)] = True
            attr = out['attr_logits'].masked_fill(~allowed[cand.labels], -math.inf).argmax(-1)
        velo = out['velo'] if out['velo'] is not None else boxes.new_zeros(N, 2)
        mc = None
        if cfg['mc_samples'] and len(idx):
            sel = idx
            mc = self.pnp.monte_carlo_forward(x3d[sel], out['x2d'][sel], w2d[sel], camera.index(sel),
                                              delta=delta[sel], generator=gen, mc_samples=cfg['mc_samples'],
                                              fast_mode=cfg['pnp_fast_mode'], num_iter=cfg['pnp_num_iter'])
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
            r.score3d = score3d[ib].detach()
            if mc is not None:
                pos = (idx[:, None] == ib[None]).float().argmax(0)  # rows of ib in the MC batch
                r.pose_samples = mc.pose_samples[:, pos].transpose(0, 1)  # (n, K, 4)
                r.pose_sample_weights = mc.weights[:, pos].T  # (n, K)
            results.append(r)
        return results
