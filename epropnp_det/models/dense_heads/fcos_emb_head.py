"""FCOS-derived object-query emitter (docs/method.md §3.4, targets and losses §5.2, candidates §6.2).

Per detection level ``x (B, C_in, h, w)`` with stride σ::

    cls_feat, reg_feat = cls_convs(x), reg_convs(x)      stacked 3×3 ConvModules (GN, ReLU), last one DCNv2
    cls_score  (B, num_classes, h, w)  = conv_cls(cls_branch(cls_feat))            focal-loss logits
    centerness (B, 1, h, w)            = conv_centerness(centerness_branch(reg_feat))
    obj_emb    (B, emb_channels, h, w) = emb_branch(reg_feat)                        3×3 then 1×1 ConvModules
    center     (B, 2 or 2·num_classes, h, w) = conv_ref_offset(offset_branch(reg_feat))·σ + point
               reference point = 2D projection of the object's volume centre, augmented continuous px,
               channels [x, y] or [cls0_x, cls0_y, cls1_x, ...] when ``offset_cls_agnostic=False``
    point      = (j·σ + σ/2, i·σ + σ/2)   (mmdet ``MlvlPointGenerator``, offset 0.5)

Flattened layout used by every batched method: ``(B, M, ·)`` with ``M = Σ_levels h·w`` (levels concatenated in
order, row-major inside a level); batch-global point index ``b·M + m``.

Targets (per point p of stride σ and gt g with volume centre c_g, 2D box box_g)::

    inside  = p strictly inside c_g ± radius·σ   (clipped to box_g unless clip_center_box=False; docs/method.md §13.9)
    in_rng  = lo_σ ≤ max(p − box_g.xy1, box_g.xy2 − p) ≤ hi_σ
    g*      = argmin ‖p − c_g‖ over inside & in_rng ; background (label = num_classes) if none
    ctr_t   = exp(−alpha·‖p − c_g*‖ / (1.414·radius·σ))

Losses (``num_pos = max(reduce_mean(#pos), 1)``, all-reduced across processes):

* ``loss_cls``: sigmoid focal loss over all points / num_pos. Fix of docs/method.md §13.5: background points inside an
  ignore box (``batch_gt_instances_ignore``) get weight 0 instead of acting as negatives (``use_ignore=True``).
* ``loss_rp``: SmoothL1 of ``(center − c_g*) / (0.2·(wh_g* + 4))`` on positives (channel pair of the assigned
  label if class-specific) weighted by ``ctr_t``, / ``2·max(reduce_mean(Σ ctr_t), 1e-6)``.
* ``loss_centerness``: BCE-with-logits against ``ctr_t`` on positives / num_pos.

Optional 2D box branch (EPro-PnP-Det v2, docs/method.md §10.13; ``bbox_branch=(256,)``, off by default), training only::

    bbox (B, 4, h, w) = ReLU(conv_bbox(bbox_branch(reg_feat))) · σ    distances (l, t, r, b) from the point, px

* ``loss_bbox2d``: GIoU between the predicted box ``[−l, −t, r, b]`` and the assigned gt box relative to the point
  (the same as decoding both at the point), on positives weighted by ``ctr_t``,
  / ``max(reduce_mean(Σ ctr_t), 1e-6)`` (weight 0.5 in v2). The box only serves as an auxiliary task: it is neither
  computed nor used at test time.
"""
import itertools
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import AnchorFreeHead
from mmdet.models.utils import multi_apply
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from mmengine.model import normal_init
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

__all__ = ['EProPnPFCOSEmbHead', 'FCOSTargets', 'FCOSCandidates']

INF = 1e8


class FCOSTargets(NamedTuple):
    labels: Tensor  # (B, M) long, num_classes = background
    centerness: Tensor  # (B, M) centerness targets (0 on background)
    gt_inds: Tensor  # (B, M) long batch-global gt index (−1 on background)
    ignore: Tensor  # (B, M) bool, background points inside an ignore box


class FCOSCandidates(NamedTuple):
    img_inds: Tensor  # (K,) long
    point_inds: Tensor  # (K,) long index into M (per image)
    labels: Tensor  # (K,) long predicted class
    scores: Tensor  # (K,) sigmoid(cls) of that class (no centerness)
    emb: Tensor  # (K, emb_channels)
    centers: Tensor  # (K, 2) reference point of that class
    strides: Tensor  # (K,) level stride


@MODELS.register_module()
class EProPnPFCOSEmbHead(AnchorFreeHead):
    """Query emitter: classification, centerness, 2D reference point and object embedding per location.

    It inherits mmdet's ``AnchorFreeHead`` for its layers (``cls_convs``, ``reg_convs``, the point generator,
    ``loss_cls``) and its ``forward`` / ``loss_by_feat`` keep mmdet's roles, but it is a sub-module of
    :class:`EProPnPDeformPnPHead`, which calls :meth:`get_points`, :meth:`get_targets`, :meth:`loss_by_feat` and
    :meth:`get_candidates` with volume-centre targets. mmdet's data-sample entry points (``loss``, ``predict``,
    ``loss_and_predict``) and its box decoding (``predict_by_feat``) cannot work with these signatures, so they
    raise instead of failing somewhere inside mmdet.

    Args (beyond mmdet ``AnchorFreeHead``):
        emb_channels: object embedding width (256).
        regress_ranges: per-level ``(lo, hi)`` of ``max(l, t, r, b)``.
        cls_branch, centerness_branch, offset_branch, emb_branch: widths of the 3×3 ConvModules of each branch.
        centerness_alpha: α of the centerness target (2.5).
        center_sampling / center_sample_radius: positives only within ``radius·σ`` of the volume centre (1.5).
        clip_center_box: clip that centre box to the gt 2D box (True; the original does not, docs/method.md §13.9).
        center_error_scale, min_ref_length: reference-point error normaliser ``0.2·(wh + 4)``.
        offset_cls_agnostic: one reference point for all classes (True) or one per class.
        use_ignore: exclude background points inside ignore boxes from the focal loss (True; docs/method.md §13.5 fix).
        loss_cls, loss_rp, loss_centerness: loss configs.
        bbox_branch: widths of the 3×3 ConvModules of the optional 2D box branch (v2: ``(256,)``); None: no branch.
        loss_bbox2d: loss of the 2D box branch (v2: ``mmdet.GIoULoss``, weight 0.5); used only with ``bbox_branch``.
        ref_offset_init_std: normal-init std of ``conv_ref_offset`` (v2: 0.01, bias 0); None: PyTorch default (v1).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 2, emb_channels: int = 256, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 regress_ranges: Sequence[Tuple[float, float]] = ((-1, 48), (48, 96), (96, 192), (192, 384),
                                                                  (384, INF)),
                 cls_branch: Sequence[int] = (256,), centerness_branch: Sequence[int] = (64,),
                 offset_branch: Sequence[int] = (256,), emb_branch: Sequence[int] = (256,),
                 centerness_alpha: float = 2.5, center_sampling: bool = True, center_sample_radius: float = 1.5,
                 clip_center_box: bool = True, center_error_scale: float = 0.2, min_ref_length: float = 4.0,
                 offset_cls_agnostic: bool = True, dcn_on_last_conv: bool = True, use_ignore: bool = True,
                 norm_cfg: dict = dict(type='GN', num_groups=32, requires_grad=True),
                 loss_cls: dict = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                       loss_weight=1.0),
                 loss_rp: dict = dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=1.0),
                 loss_centerness: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 bbox_branch: Optional[Sequence[int]] = None,
                 loss_bbox2d: dict = dict(type='mmdet.GIoULoss', loss_weight=0.5),
                 ref_offset_init_std: Optional[float] = None, init_cfg=None, **kwargs):
        if len(regress_ranges) != len(strides):
            raise ValueError(f'regress_ranges has {len(regress_ranges)} levels but strides has {len(strides)}')
        self.emb_channels = emb_channels
        self.branch_cfgs = dict(cls=tuple(cls_branch), centerness=tuple(centerness_branch),
                                offset=tuple(offset_branch), emb=tuple(emb_branch),
                                bbox=None if bbox_branch is None else tuple(bbox_branch))
        self.ref_offset_init_std = ref_offset_init_std
        self.offset_cls_agnostic = offset_cls_agnostic
        super().__init__(num_classes=num_classes, in_channels=in_channels, feat_channels=feat_channels,
                         stacked_convs=stacked_convs, strides=strides, dcn_on_last_conv=dcn_on_last_conv,
                         norm_cfg=norm_cfg, loss_cls=loss_cls, loss_bbox=loss_rp,
                         bbox_coder=dict(type='mmdet.DistancePointBBoxCoder'), init_cfg=init_cfg, **kwargs)
        del self.bbox_coder  # AnchorFreeHead always builds a box coder; the emitter decodes no boxes
        self.loss_rp = self.loss_bbox
        self.loss_centerness = MODELS.build(loss_centerness)
        self.regress_ranges = tuple(tuple(r) for r in regress_ranges)
        self.centerness_alpha, self.center_sampling = centerness_alpha, center_sampling
        self.center_sample_radius, self.clip_center_box = center_sample_radius, clip_center_box
        self.center_error_scale, self.min_ref_length = center_error_scale, min_ref_length
        self.use_ignore = use_ignore
        self.loss_bbox2d = MODELS.build(loss_bbox2d) if self.with_bbox2d else None

    def _not_standalone(self, *args, **kwargs):
        raise NotImplementedError(
            'EProPnPFCOSEmbHead is the query emitter of EProPnPDeformPnPHead and has no stand-alone mmdet '
            'loss / predict: use its forward, get_targets, loss_by_feat and get_candidates (see the class docstring)')

    loss = predict = loss_and_predict = predict_by_feat = _not_standalone

    # ------------------------------------------------------------------------------------------------ layers
    def _branch(self, widths: Sequence[int], kernel_sizes: Optional[Sequence[int]] = None) -> nn.Sequential:
        layers, chn = [], self.feat_channels
        for i, w in enumerate(widths):
            k = kernel_sizes[i] if kernel_sizes else 3
            layers.append(ConvModule(chn, w, k, padding=k // 2, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                                     bias=self.conv_bias))
            chn = w
        return nn.Sequential(*layers)

    def _init_predictor(self) -> None:
        cfg = self.branch_cfgs
        self.cls_branch = self._branch(cfg['cls'])
        self.conv_cls = nn.Conv2d(cfg['cls'][-1] if cfg['cls'] else self.feat_channels, self.num_classes, 1)
        self.centerness_branch = self._branch(cfg['centerness'])
        self.conv_centerness = nn.Conv2d(cfg['centerness'][-1] if cfg['centerness'] else self.feat_channels, 1, 1)
        self.offset_branch = self._branch(cfg['offset'])
        # not named ``conv_offset``: mmdet's BaseDenseHead.init_weights zeroes every attribute of that name
        self.conv_ref_offset = nn.Conv2d(cfg['offset'][-1] if cfg['offset'] else self.feat_channels,
                                         2 if self.offset_cls_agnostic else 2 * self.num_classes, 1)
        # embedding: 3×3 ConvModules of emb_branch, then a 1×1 ConvModule to emb_channels (GN, ReLU)
        self.emb_branch = self._branch(cfg['emb'])
        self.conv_emb = ConvModule(cfg['emb'][-1] if cfg['emb'] else self.feat_channels, self.emb_channels, 1,
                                   norm_cfg=self.norm_cfg, bias=self.conv_bias)
        if cfg['bbox'] is not None:  # v2 2D box branch (training-only auxiliary task)
            self.bbox_branch = self._branch(cfg['bbox'])
            self.conv_bbox = nn.Conv2d(cfg['bbox'][-1] if cfg['bbox'] else self.feat_channels, 4, 1)

    @property
    def with_bbox2d(self) -> bool:
        """Whether the optional 2D box branch exists."""
        return self.branch_cfgs['bbox'] is not None

    def init_weights(self) -> None:
        super().init_weights()
        normal_init(self.conv_cls, std=0.01, bias=-math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        if self.ref_offset_init_std is not None:
            normal_init(self.conv_ref_offset, std=self.ref_offset_init_std, bias=0.)
        if self.with_bbox2d:
            normal_init(self.conv_bbox, std=0.01, bias=1.0)  # initial distances ≈ 1 stride

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, feats: Sequence[Tensor], with_bbox: bool = False) -> tuple:
        """Per-level ``cls_scores, centers, centernesses, embs`` (shapes in the module docstring), followed by the
        per-level ``bbox_preds`` (B, 4, h, w) when ``with_bbox`` and the head has the 2D box branch."""
        if len(feats) != len(self.strides):
            raise ValueError(f'got {len(feats)} feature levels, expected {len(self.strides)} (strides {self.strides})')
        return multi_apply(self.forward_single, feats, list(range(len(feats))),
                           with_bbox=with_bbox and self.with_bbox2d)

    def forward_single(self, x: Tensor, level: int, with_bbox: bool = False) -> tuple:
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        cls_score = self.conv_cls(self.cls_branch(cls_feat))
        centerness = self.conv_centerness(self.centerness_branch(reg_feat))
        emb = self.conv_emb(self.emb_branch(reg_feat))
        stride = self.strides[level]
        stride = stride[0] if isinstance(stride, (tuple, list)) else stride
        offset = self.conv_ref_offset(self.offset_branch(reg_feat)) * stride
        h, w = x.shape[-2:]
        points = self.prior_generator.single_level_grid_priors((h, w), level, offset.dtype, offset.device)
        points = points.T.reshape(1, 2, h, w).repeat(1, offset.shape[1] // 2, 1, 1)
        if with_bbox:
            bbox = torch.relu(self.conv_bbox(self.bbox_branch(reg_feat))) * stride
            return cls_score, offset + points, centerness, emb, bbox
        return cls_score, offset + points, centerness, emb

    # ---------------------------------------------------------------------------------------------- layout
    @staticmethod
    def flatten(per_level: Sequence[Tensor]) -> Tensor:
        """Per-level (B, c, h, w) → (B, M, c), levels concatenated."""
        return torch.cat([x.flatten(2).transpose(1, 2) for x in per_level], dim=1)

    def get_points(self, featmap_sizes: Sequence[Tuple[int, int]], dtype, device) -> Tuple[Tensor, Tensor, Tensor]:
        """Points (M, 2), strides (M,) and regress ranges (M, 2) of all levels, concatenated.

        Cached per (sizes, dtype, device): constants of the input size, rebuilt every step they would cost ~60
        launches and a host-to-device copy per level on a GPU. Callers must not modify them in place."""
        key = (tuple(tuple(int(v) for v in hw) for hw in featmap_sizes), dtype, torch.device(device))
        cache = self.__dict__.setdefault('_points_cache', {})  # plain attribute: not in the state dict
        if key not in cache:
            points = self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device)
            strides = torch.cat([p.new_full((len(p),), float(s if not isinstance(s, (tuple, list)) else s[0]))
                                 for p, s in zip(points, self.strides)])
            ranges = torch.cat([p.new_tensor(r).expand(len(p), 2) for p, r in zip(points, self.regress_ranges)])
            if len(cache) >= 16:  # a few input sizes per run; bound it for multi-scale inputs
                cache.clear()
            cache[key] = (torch.cat(points), strides, ranges)
        return cache[key]

    # --------------------------------------------------------------------------------------------- targets
    def get_targets(self, points: Tensor, strides: Tensor, ranges: Tensor, gt_bboxes: List[Tensor],
                    gt_labels: List[Tensor], gt_centers: List[Tensor],
                    ignore_bboxes: Optional[List[Tensor]] = None) -> FCOSTargets:
        """Assign every point of every image (module docstring).

        Args:
            points, strides, ranges: from :meth:`get_points`.
            gt_bboxes: per image (n_i, 4) augmented 2D boxes ``x1, y1, x2, y2``.
            gt_labels: per image (n_i,) long.
            gt_centers: per image (n_i, 2) volume centres (augmented continuous px).
            ignore_bboxes: per image (k_i, 4) augmented ignore boxes or None (no ignore box), or None for all.
        """
        num_imgs = len(gt_bboxes)
        if num_imgs == 0:
            raise ValueError('get_targets needs at least one image')
        # all images at once: gts padded with NaN boxes / centres, which fail every comparison below and so are
        # never assigned (same result as image by image, a fraction of the launches)
        dtype = points.dtype
        pad = lambda xs, w: pad_sequence([x.to(dtype).reshape(-1, w) for x in xs], batch_first=True,  # noqa: E731
                                         padding_value=float('nan'))
        ignore = [b.new_zeros(0, 4) if i is None else i for b, i in zip(gt_bboxes, ignore_bboxes or [None] * num_imgs)]
        p = points[None, :, None, :]  # (1, M, 1, 2)
        if any(len(i) for i in ignore):
            ign_boxes = pad(ignore, 4)[:, None]  # (B, 1, k, 4)
            ign = ((p >= ign_boxes[..., :2]) & (p <= ign_boxes[..., 2:])).all(-1).any(-1)
        else:
            ign = torch.zeros(num_imgs, len(points), dtype=torch.bool, device=points.device)
        M = len(points)
        sizes = [len(b) for b in gt_bboxes]
        if max(sizes) == 0:
            labels = torch.full((num_imgs, M), self.num_classes, dtype=torch.long, device=points.device)
            return FCOSTargets(labels, points.new_zeros(num_imgs, M), torch.full_like(labels, -1), ign)
        boxes, centres = pad(gt_bboxes, 4)[:, None], pad(gt_centers, 2)[:, None]  # (B, 1, n, 4), (B, 1, n, 2)
        ltrb = torch.cat((p - boxes[..., :2], boxes[..., 2:] - p), dim=-1)  # (B, M, n, 4)
        max_ltrb = ltrb.amax(-1)
        in_range = (max_ltrb >= ranges[:, None, 0]) & (max_ltrb <= ranges[:, None, 1])
        radius = self.center_sample_radius * strides[:, None, None]  # (M, 1, 1)
        if self.center_sampling:
            lo, hi = centres - radius, centres + radius
            if self.clip_center_box:
                lo, hi = torch.maximum(lo, boxes[..., :2]), torch.minimum(hi, boxes[..., 2:])
            inside = ((p > lo) & (p < hi)).all(-1)
        else:
            inside = (ltrb > 0).all(-1)
        dist = (p - centres).norm(dim=-1)  # (B, M, n)
        dist = torch.where(inside & in_range, dist, torch.full_like(dist, INF))
        min_dist, argmin = dist.min(dim=-1)  # first minimum: padded gts come last and never beat a real one
        fg = min_dist < INF
        labels_pad = pad_sequence([lb.reshape(-1) for lb in gt_labels], batch_first=True, padding_value=0)
        labels = torch.where(fg, labels_pad.gather(1, argmin), torch.full_like(argmin, self.num_classes))
        ctr_t = torch.exp(-self.centerness_alpha * min_dist / (1.414 * radius[None, :, 0, 0])) * fg
        offsets = argmin.new_tensor(list(itertools.accumulate([0] + sizes[:-1])))  # host list: no sync
        gt_inds = torch.where(fg, argmin + offsets[:, None], torch.full_like(argmin, -1))
        return FCOSTargets(labels, ctr_t, gt_inds, ign & ~fg)

    # ----------------------------------------------------------------------------------------------- losses
    def select_centers(self, centers: Tensor, labels: Tensor) -> Tensor:
        """(K, 2 or 2·num_classes) reference points, (K,) labels → (K, 2) of each label's channel pair."""
        if centers.shape[-1] == 2:
            return centers
        idx = labels.clamp(max=self.num_classes - 1)
        return centers.reshape(-1, self.num_classes, 2)[torch.arange(len(idx), device=idx.device), idx]

    def loss_by_feat(self, cls_scores: List[Tensor], centers: List[Tensor], centernesses: List[Tensor],
                     targets: FCOSTargets, gt_bboxes: List[Tensor], gt_centers: List[Tensor],
                     bbox_preds: Optional[List[Tensor]] = None) -> dict:
        """FCOS losses from per-level outputs and the targets of :meth:`get_targets`.

        Args:
            cls_scores, centers, centernesses: per-level outputs of :meth:`forward`.
            targets: :class:`FCOSTargets`.
            gt_bboxes, gt_centers: per-image 2D boxes (n_i, 4) and volume centres (n_i, 2).
            bbox_preds: per-level (B, 4, h, w) ``l, t, r, b`` of the 2D box branch (``forward(with_bbox=True)``);
                adds ``loss_bbox2d``.
        """
        cls = self.flatten(cls_scores).reshape(-1, self.num_classes)
        ctr_pred = self.flatten(centers)
        ctr_pred = ctr_pred.reshape(-1, ctr_pred.shape[-1])
        ctrness = self.flatten(centernesses).reshape(-1)
        labels = targets.labels.reshape(-1)
        ctr_t = targets.centerness.reshape(-1)
        # dense over all B·M points, positives selected by weight (0 elsewhere) instead of by index: the same sums
        # without the host synchronisation that gathering the positives (nonzero) would make
        fg = labels < self.num_classes
        num_pos = reduce_mean(fg.sum().to(cls.dtype)).clamp(min=1.0)
        # one-hot targets built on the device (mmdet's FocalLoss then takes its plain-torch path on every device,
        # without the label-range checks of ``F.one_hot``)
        onehot = (labels[:, None] == torch.arange(self.num_classes, device=labels.device)).to(cls.dtype)
        cls_weight = (~targets.ignore.reshape(-1)).to(cls.dtype) if self.use_ignore else None
        loss_cls = self.loss_cls(cls, onehot, weight=cls_weight, avg_factor=num_pos)
        w = ctr_t * fg  # centerness targets of the positives (0 on background)
        num_gts = sum(len(b) for b in gt_bboxes)  # host-side list lengths
        if num_gts == 0:
            zero = ctr_pred.sum() * 0 + ctrness.sum() * 0
            # the other branch's all-reduce (``ctr_sum``), so every rank makes the same collective calls in order
            reduce_mean(cls.new_tensor(0.))
            out = dict(loss_cls=loss_cls, loss_rp=zero, loss_centerness=zero)
            if bbox_preds is not None:
                out['loss_bbox2d'] = self.flatten(bbox_preds).sum() * 0
            return out
        all_boxes = torch.cat(gt_bboxes).to(cls.dtype)
        all_centers = torch.cat(gt_centers).to(cls.dtype)
        g = targets.gt_inds.reshape(-1).clamp(min=0)  # background: any valid gt, weight 0
        ref_ctr = self.select_centers(ctr_pred, labels)
        wh = all_boxes[g, 2:] - all_boxes[g, :2]
        err = (ref_ctr - all_centers[g]) / (self.center_error_scale * (wh + self.min_ref_length))
        ctr_sum = reduce_mean(w.sum().detach()).clamp(min=1e-6)
        loss_rp = self.loss_rp(err, torch.zeros_like(err), weight=w[:, None].expand_as(err), avg_factor=2 * ctr_sum)
        loss_ctr = self.loss_centerness(ctrness, ctr_t, weight=fg.to(ctrness.dtype), avg_factor=num_pos)
        out = dict(loss_cls=loss_cls, loss_rp=loss_rp, loss_centerness=loss_ctr)
        if bbox_preds is not None:
            out['loss_bbox2d'] = self.loss_bbox2d_by_feat(bbox_preds, all_boxes[g], w, ctr_sum)
        return out

    def bbox2d_targets(self, bbox_preds: List[Tensor], boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """Predicted and target boxes of every point, relative to the point (``[−l, −t, r, b]``).

        Args:
            bbox_preds: per-level (B, 4, h, w) distances.
            boxes: (B·M, 4) gt box ``x1, y1, x2, y2`` (augmented px) assigned to each flattened point (any box
                on background points).
        Returns:
            pred (B·M, 4), target (B·M, 4).
        """
        points, _, _ = self.get_points([b.shape[-2:] for b in bbox_preds], boxes.dtype, boxes.device)
        p = points.repeat(boxes.shape[0] // len(points), 1)
        ltrb = self.flatten(bbox_preds).reshape(-1, 4)
        pred = torch.cat((-ltrb[:, :2], ltrb[:, 2:]), dim=-1)
        target = torch.cat((boxes[:, :2] - p, boxes[:, 2:] - p), dim=-1)
        return pred, target

    def loss_bbox2d_by_feat(self, bbox_preds: List[Tensor], boxes: Tensor, ctr_targets: Tensor,
                            ctr_sum: Tensor) -> Tensor:
        """GIoU of the positives' boxes weighted by their centerness targets / ``max(reduce_mean(Σ ctr_t), 1e-6)``.

        Args:
            bbox_preds: per-level outputs; boxes: (B·M, 4) assigned gt boxes (:meth:`bbox2d_targets`).
            ctr_targets: (B·M,) centerness targets, 0 on background; ctr_sum: their all-reduced sum, ≥ 1e-6.
        """
        pred, target = self.bbox2d_targets(bbox_preds, boxes)
        # the background's target is its own prediction (a finite GIoU of 0 weight); per-element losses, weighted
        # here: mmdet's weighted reduction would read ``any(weight > 0)`` on the host
        target = torch.where((ctr_targets > 0)[:, None], target, pred.detach())
        loss = self.loss_bbox2d(pred, target, reduction_override='none')
        return (loss * ctr_targets).sum() / ctr_sum

    # ------------------------------------------------------------------------------------------- inference
    def get_candidates(self, cls_scores: List[Tensor], centers: List[Tensor], centernesses: List[Tensor],
                       embs: List[Tensor], score_thr: float = 0.04, max_per_img: int = 256) -> FCOSCandidates:
        """Test-time object queries: every (image, point, class) with ``sigmoid(cls)·sigmoid(ctr) ≥ score_thr``,
        at most ``max_per_img`` per image (highest scores; fix of the batch-wide cap, docs/method.md §13.9)."""
        cls = self.flatten(cls_scores).sigmoid()  # (B, M, C)
        ctr = self.flatten(centernesses).sigmoid()  # (B, M, 1)
        emb = self.flatten(embs)
        cen = self.flatten(centers)
        featmap_sizes = [c.shape[-2:] for c in cls_scores]
        _, strides, _ = self.get_points(featmap_sizes, cls.dtype, cls.device)
        score = cls * ctr
        out = []
        for b in range(cls.shape[0]):
            idx = torch.nonzero(score[b] >= score_thr)  # (K, 2) point, class
            if len(idx) > max_per_img:
                idx = idx[score[b][idx[:, 0], idx[:, 1]].topk(max_per_img).indices]
            p, c = idx[:, 0], idx[:, 1]
            out.append((torch.full_like(p, b), p, c, cls[b, p, c], emb[b, p], self.select_centers(cen[b, p], c),
                        strides[p]))
        return FCOSCandidates(*[torch.cat(x) for x in zip(*out)])
