"""Object-level outputs from the sampler's object feature (docs/method.md §3.7).

::

    scale   = exp(Linear(C→2)(feat))                  global w2d scale [s_x, s_y]; weight & bias 0 → 1 at init
    score   = Linear(C→1)(feat)                       3D localisation-quality logit
    h       = 2 × (Linear(C→C), ReLU)(feat)           shared trunk of dims / velocity / attributes
    dim_enc = Linear(C→3·num_classes)(h)[label]       class-specific log-dim code [l, h, w] (or agnostic: 3)
    dims    = dim_coder.decode(dim_enc, label)        metres
    velo    = Linear(C→2)(h) = [v_x, v_z]             camera frame, m/s; v_x negated for flipped images
    attr    = Linear(C→num_attrs)(h)                  attribute logits

:meth:`EProPnPObjectBranches.loss` gives the dims, velocity and attribute losses (docs/method.md §5.5–5.7); the
3D-score and pose losses belong to the pose stage (:class:`~epropnp_det.models.task_modules.EProPnPPoseStage`).
"""
from typing import Mapping, NamedTuple, Optional

import torch
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['EProPnPObjectBranches', 'ObjectBranchOutput']


class ObjectBranchOutput(NamedTuple):
    scale: Tensor  # (N, 2) global w2d scale, > 0
    score_logit: Tensor  # (N,) 3D score logit
    dim_enc: Tensor  # (N, 3) log-dim code
    dims: Tensor  # (N, 3) [l, h, w] metres
    velo: Optional[Tensor]  # (N, 2) [v_x, v_z] m/s camera frame, flip-corrected; None if disabled
    attr_logits: Optional[Tensor]  # (N, num_attrs) or None


@MODELS.register_module()
class EProPnPObjectBranches(BaseModule):
    """Object-level prediction branches.

    Args:
        embed_dims: C.
        num_classes: number of classes for class-specific dims.
        num_fcs: layers of the shared trunk (2).
        dim_cls_agnostic: one dims output for all classes.
        pred_velo, pred_attr, num_attrs: optional branches.
        dim_coder: config of the dims coder (``TASK_UTILS``).
        xavier_trunk: xavier-uniform init of the trunk (v2); PyTorch default otherwise (v1).
        loss_dim, loss_velo, loss_attr: mmdet loss configs of :meth:`loss` (None disables velocity / attribute
            losses; the head passes its own arguments of the same names).
    """

    def __init__(self, embed_dims: int = 256, num_classes: int = 10, num_fcs: int = 2,
                 dim_cls_agnostic: bool = False, pred_velo: bool = True, pred_attr: bool = True,
                 num_attrs: int = 9, dim_coder: dict = dict(type='EProPnPMultiClassLogDimCoder'),
                 xavier_trunk: bool = False,
                 loss_dim: dict = dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=1.0),
                 loss_velo: Optional[dict] = dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=0.05),
                 loss_attr: Optional[dict] = dict(type='mmdet.CrossEntropyLoss', loss_weight=0.5), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes, self.dim_cls_agnostic = num_classes, dim_cls_agnostic
        self.dim_coder = TASK_UTILS.build(dim_coder)
        self.scale_branch = nn.Linear(embed_dims, 2)
        nn.init.zeros_(self.scale_branch.weight)
        nn.init.zeros_(self.scale_branch.bias)
        self.score_branch = nn.Linear(embed_dims, 1)
        layers = []
        for _ in range(num_fcs):
            fc = nn.Linear(embed_dims, embed_dims)
            if xavier_trunk:
                nn.init.xavier_uniform_(fc.weight)
                nn.init.zeros_(fc.bias)
            layers += [fc, nn.ReLU(inplace=True)]
        self.pred_fc = nn.Sequential(*layers)
        self.dim_branch = nn.Linear(embed_dims, 3 if dim_cls_agnostic else 3 * num_classes)
        self.velo_branch = nn.Linear(embed_dims, 2) if pred_velo else None
        self.attr_branch = nn.Linear(embed_dims, num_attrs) if pred_attr else None
        # loss modules hold no parameters or buffers: checkpoints are unaffected by where they live
        self.loss_dim = MODELS.build(loss_dim)
        self.loss_velo = MODELS.build(loss_velo) if loss_velo is not None else None
        self.loss_attr = MODELS.build(loss_attr) if loss_attr is not None else None

    def forward(self, feat: Tensor, labels: Tensor, flip: Tensor) -> ObjectBranchOutput:
        """
        Args:
            feat: (N, C) object features.
            labels: (N,) long class labels (gt labels in training, predicted at test).
            flip: (N,) bool, whether the object's image was horizontally flipped.
        """
        N = feat.shape[0]
        scale = self.scale_branch(feat).exp()
        score = self.score_branch(feat).squeeze(-1)
        h = self.pred_fc(feat)
        dim_enc = self.dim_branch(h)
        if not self.dim_cls_agnostic:
            dim_enc = dim_enc.reshape(N, self.num_classes, 3)[torch.arange(N, device=feat.device), labels]
        dims = self.dim_coder.decode(dim_enc, labels)
        velo = attr = None
        if self.velo_branch is not None:
            velo = self.velo_branch(h)
            # flipped images: negate the x velocity (a where, not a boolean-mask write: no host sync)
            velo = torch.cat([torch.where(flip.bool()[:, None], -velo[:, :1], velo[:, :1]), velo[:, 1:]], dim=-1)
        if self.attr_branch is not None:
            attr = self.attr_branch(h)
        return ObjectBranchOutput(scale, score, dim_enc, dims, velo, attr)

    def loss(self, out: Mapping[str, Optional[Tensor]], boxes: Tensor, labels: Tensor, weights: Tensor,
             gt_extra: dict) -> dict:
        """Dims, velocity and attribute losses of ``N`` sampled objects (docs/method.md §5.5–5.7).

        Args:
            out: the objects' outputs by field name (``dim_enc``, ``velo``, ``attr_logits`` as in
                :class:`ObjectBranchOutput`; the head's dict after its non-finite exclusion).
            boxes: (N, 7) gt boxes ``[l, h, w, x, y, z, yaw]`` (metres, camera frame); labels: (N,) gt classes.
            weights: (N,) importance weights of the object sampler (0 for objects excluded as non-finite).
            gt_extra: optional gt fields of the objects: ``velocities`` (N, 2) m/s camera ``[v_x, v_z]`` (NaN:
                unknown), ``velocities_valid`` (N,) bool, ``attr_labels`` (N,) long.

        Returns:
            ``loss_dim`` and, for the enabled branches, ``loss_velo`` / ``loss_attr`` (zero-valued but connected
            to the graph when the gt field is missing, so that DDP sees every parameter used).
        """
        avg = max(float(boxes.shape[0]), 1.0)
        w = weights.to(boxes)
        dim_tgt = self.dim_coder.encode(boxes[:, :3], labels)
        losses = dict(loss_dim=self.loss_dim(out['dim_enc'], dim_tgt, weight=w[:, None], avg_factor=3 * avg))
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
            if 'attr_labels' in gt_extra and boxes.shape[0]:
                losses['loss_attr'] = self.loss_attr(out['attr_logits'], gt_extra['attr_labels'].long(), weight=w,
                                                     avg_factor=avg)
            else:
                losses['loss_attr'] = out['attr_logits'].sum() * 0
        return losses
