"""Auxiliary dense losses on ground-truth RoIs (docs/method.md §5.6; v2 changes §10.11, §10.14).

For the ``G`` *active* gts (the unique gts among the object samples) with augmented 2D boxes
``rois = [img, x1, y1, x2, y2]`` (continuous px of the padded network input)::

    x2d_roi   = RoIAlign(dense x2d, rois, (rh, rw), scale 1, aligned)        (G, 2, rh, rw) ORIGINAL-image px
                (without a dense map: T⁻¹ of the cell centres, the exact value the affine map would give)
    key_roi   = RoIAlign(key map, rois, scale 1/s) ; value_roi likewise       (G, C, rh, rw)
    noc, logstd = corr_reg_aux(value_roi per cell)                            (G, Hh, rh·rw, 3), (…, 2)
                  one GroupLinear 32 → 5 per head; NOC z negated for flipped images (as the point subnet)
    x3d_roi   = noc ⊙ dims_act                dims_act = (A @ dims).detach(),  A = row-normalised sample
                                              weights of the active gt's samples (G, N)
    proj_err  = (project(x3d_roi, gt pose, K) − x2d_roi) · max(z_gt, 0.1) / (mean(l,h,w) · fx · 0.2)
                                              (DistDimProjErrorCoder; projection clamped like the PnP camera)
    attn      = (A @ query) · key_roi / sqrt(d)        (G, Hh, rh, rw)   the query is NOT detached
    loss_proj = MVD-NLL(proj_err; logstd, log π = logsoftmax over heads AND overlapping RoIs, cross-RoI
                mixture) / (max(rmean(G), 1) · rh·rw)

Coordinate regression from LiDAR (``loss_regr``): per-cell targets = mean of the LiDAR object coordinates
(KITTI-local, metres) of the points falling into the cell, ``valid`` = any point. Cell assignment:

* ``'v1'``: relative position between the x2d of the first and last RoI cells (original coordinates, so it also
  works for flipped images): ``idx = round(clamp((x2d − x2d_roi[0,0]) / (x2d_roi[-1,-1] − x2d_roi[0,0]), 0, 1) ·
  (rw − 1, rh − 1))``; loss ``SmoothL1(‖x3d_roi − tgt‖ / max(l,h,w), 0)`` weighted by ``softmax_heads(attn) · valid``
  (not detached: also trains the attention), ``/ max(rmean(Σ valid), 1e-4)``.
* ``'v2'``: ``x2d' = T · x2d`` (augmented continuous px); ``idx = clamp(round((x2d' − roi_xy1) / roi_wh · (rw, rh)
  − 0.5), 0, (rw − 1, rh − 1))``; loss MVD-NLL of ``(x3d_roi − tgt) / mean(l,h,w)`` per axis with
  ``log π = log_softmax_heads(attn)`` (no cross-RoI mixing), weighted by ``valid``, ``/ max(rmean(Σ valid), 1e-4)``.
  The LiDAR x2d are converted to continuous coordinates first when the model uses the v1 pixel convention (the
  reference assumes v2 data).

The cell assignment is vectorised over all points of all RoIs (one ``index_add`` scatter-mean).
With no active gt every loss is a zero-valued graph over all parameters of this branch (DDP).
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from epropnp_det.ops.pixels import check_pixel_convention, continuous_to_k_projection, k_projection_to_continuous
from epropnp_det.ops.pnp._amp import fp32
from epropnp_det.ops.pnp.camera import project
from epropnp_det.ops.pnp.types import CameraParams

from ..losses import MVDGaussianMixtureNLLLoss, logsoftmax_across_rois
from ..losses.roi_logsumexp import overlap_matrix, overlapping_roi_pairs
from ..utils.roi_align import roi_align_aligned
from .deform_sampler import apply_homography
from .point_subnet import GroupLinear, fibonacci_sphere

__all__ = ['EProPnPRoIAuxBranch', 'RoIAuxOutput', 'roi_align_safe', 'homography_x2d_roi', 'dist_dim_proj_error',
           'active_gts_and_pairs', 'cell_indices_v1', 'cell_indices_v2', 'lidar_cell_targets']


class RoIAuxOutput(NamedTuple):
    x2d_roi: Tensor  # (G, 2, rh, rw) original-image px of the cell centres
    key_roi: Tensor  # (G, C, rh, rw)
    noc: Tensor  # (G, Hh, rh·rw, 3) flip-corrected NOC
    logstd: Tensor  # (G, Hh, rh·rw, 2) log std of the reprojection error (proj-error-coder units)


def roi_align_safe(x: Tensor, rois: Tensor, size: Tuple[int, int], spatial_scale: float) -> Tensor:
    """mmcv-equivalent ``roi_align`` (adaptive sampling ratio, average, ``aligned=True``; vectorised backward on
    CPU, see :mod:`epropnp_det.models.utils.roi_align`); zero RoIs → (0, C, rh, rw) that stays connected to ``x``'s
    graph."""
    return roi_align_aligned(x, rois, size, spatial_scale)


def homography_x2d_roi(rois: Tensor, img_transforms: Tensor, roi_shape: Tuple[int, int],
                       pixel_convention: str = 'v1') -> Tensor:
    """Original-image coordinates of the RoIAlign cell centres, ``T⁻¹ · (x1 + (k + ½)·w/rw, y1 + (r + ½)·h/rh)``
    (minus 0.5 in the v1 integer-centre convention). What RoIAlign of the dense x2d map gives inside the image.

    Args:
        rois: (G, 5); img_transforms: (G, 3, 3) original → augmented, one per RoI; roi_shape: (rh, rw).

    Returns:
        (G, 2, rh, rw).
    """
    rh, rw = roi_shape
    G = rois.shape[0]
    rois = rois.to(img_transforms.dtype)
    fx = (torch.arange(rw, dtype=rois.dtype, device=rois.device) + 0.5) / rw
    fy = (torch.arange(rh, dtype=rois.dtype, device=rois.device) + 0.5) / rh
    wh = rois[:, 3:5] - rois[:, 1:3]
    xs = rois[:, None, None, 1] + fx[None, None, :] * wh[:, None, None, 0]
    ys = rois[:, None, None, 2] + fy[None, :, None] * wh[:, None, None, 1]
    pts = torch.stack(torch.broadcast_tensors(xs, ys), -1).reshape(G, rh * rw, 2)
    x2d = apply_homography(torch.linalg.inv(img_transforms)[:, None], pts[:, :, None, :])[:, :, 0]
    x2d = continuous_to_k_projection(x2d, pixel_convention)
    return x2d.transpose(1, 2).reshape(G, 2, rh, rw)


def dist_dim_proj_error(x2d_diff: Tensor, distance: Tensor, dims: Tensor, focal: Tensor, target_std: float = 0.2,
                        distance_min: float = 0.1) -> Tensor:
    """DistDimProjErrorCoder.encode: ``Δx2d · max(z, z_min) / (mean(l, h, w) · f · target_std)`` — a pixel error
    expressed as a metric error relative to the object size (≈ 1 for a 20 % size error).

    Args:
        x2d_diff: (G, n, 2) px; distance: (G,) metres; dims: (G, 3) metres; focal: (G,) px.
    """
    denom = dims.mean(-1) * focal * target_std
    return x2d_diff * (distance.clamp(min=distance_min) / denom)[:, None, None]


def active_gts_and_pairs(gt_inds: Tensor, weights: Tensor, rois_all: Tensor
                         ) -> Tuple[Tensor, Tensor, Tensor, Tuple[Tensor, Tensor], List[int]]:
    """The active gts (the unique gts of the object samples), their row-normalised sample-weight assignment
    ``A[g, s] = w_s·[gt_s = active_g] / Σ_s' (…)`` and the overlapping pairs of their RoIs
    (:func:`~epropnp_det.models.losses.roi_logsumexp.overlapping_roi_pairs`), with one host read for all.

    The active set and the overlaps are computed as masks over all ``G_all`` gts of the batch; the read fetches the
    mask and the pair count together, and the index lists are then taken with a stable ``argsort`` of the masks cut
    to the known counts (same order as ``unique`` / ``nonzero``: ascending gt index, row-major pairs).

    Args:
        gt_inds: (N,) batch-global gt index of every sample (< G_all); weights: (N,) sample weights.
        rois_all: (G_all, 5) ``[img, x1, y1, x2, y2]`` of every gt of the batch.

    Returns:
        active (G,) ascending gt indices, A (G, N) row-normalised assignment, rois (G, 5) of the active gts,
        pairs ``(i, j)`` (P,) indices into the active RoIs, and ``active`` as a host list.
    """
    G_all, dev = rois_all.shape[0], gt_inds.device
    present = torch.zeros(G_all, dtype=torch.bool, device=dev).index_fill_(0, gt_inds, True)
    pos = overlap_matrix(rois_all) & present[:, None] & present[None, :]
    # host sync, the RoI branch's only one: G and P (shapes of everything below) depend on the draw
    host = torch.cat((present.long(), pos.sum().reshape(1))).tolist()
    active_host, P = [g for g in range(G_all) if host[g]], host[-1]
    G = len(active_host)
    active = torch.argsort((~present).to(torch.uint8), stable=True)[:G]
    rank = present.long().cumsum(0) - 1  # position of each present gt among the active ones
    A = (torch.arange(G, device=dev)[:, None] == rank[gt_inds][None]).to(weights.dtype)
    A = F.normalize(A * weights[None], p=1, dim=-1)
    flat = torch.argsort((~pos).flatten().to(torch.uint8), stable=True)[:P]
    pairs = (rank[flat // G_all], rank[flat % G_all])
    return active, A, rois_all[active], pairs, active_host


def cell_indices_v1(x2d: Tensor, obj_inds: Tensor, x2d_roi: Tensor) -> Tensor:
    """v1 rule: cell ``(ix, iy)`` of points from their position between the first and last cell centres' x2d.

    Args:
        x2d: (P, 2) original-image px (same convention as ``x2d_roi``); obj_inds: (P,) RoI index of each point;
        x2d_roi: (G, 2, rh, rw).

    Returns:
        (P, 2) long ``(ix, iy)``.
    """
    rh, rw = x2d_roi.shape[-2:]
    start = x2d_roi[:, :, 0, 0][obj_inds]
    rng = (x2d_roi[:, :, -1, -1] - x2d_roi[:, :, 0, 0])[obj_inds]
    rel = torch.where(rng != 0, (x2d.to(start) - start) / torch.where(rng != 0, rng, torch.ones_like(rng)),
                      torch.zeros_like(rng))
    return (rel.clamp(0, 1) * rng.new_tensor([rw - 1, rh - 1])).round().long()


def cell_indices_v2(x2d_cont: Tensor, obj_inds: Tensor, img_transforms: Tensor, rois: Tensor,
                    roi_shape: Tuple[int, int]) -> Tensor:
    """v2 rule: ``clamp(round((T·x2d − roi_xy1) / roi_wh · (rw, rh) − 0.5), 0, (rw − 1, rh − 1))``.

    Args:
        x2d_cont: (P, 2) original-image CONTINUOUS px; obj_inds: (P,); img_transforms: (G, 3, 3) per RoI;
        rois: (G, 5); roi_shape: (rh, rw).

    Returns:
        (P, 2) long ``(ix, iy)``.
    """
    rh, rw = roi_shape
    T = img_transforms[obj_inds]
    aug = apply_homography(T, x2d_cont.to(T)[:, None, :])[:, 0]
    boxes = rois[obj_inds, 1:5].to(aug)
    size = aug.new_tensor([rw, rh])
    idx = ((aug - boxes[:, :2]) / (boxes[:, 2:] - boxes[:, :2]) * size - 0.5).round().long()
    return torch.minimum(idx.clamp(min=0), size.long() - 1)


def lidar_cell_targets(x3d: Tensor, obj_inds: Tensor, cells: Tensor, num_rois: int,
                       roi_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Scatter-mean of point object coordinates into RoI cells.

    Args:
        x3d: (P, 3) object coordinates; obj_inds: (P,) RoI index; cells: (P, 2) long ``(ix, iy)``;
        num_rois: G; roi_shape: (rh, rw).

    Returns:
        targets (G, rh·rw, 3) (0 where empty), valid (G, rh·rw) bool.
    """
    rh, rw = roi_shape
    flat = obj_inds * (rh * rw) + cells[:, 1] * rw + cells[:, 0]
    sums = x3d.new_zeros(num_rois * rh * rw, 4).index_add_(0, flat, F.pad(x3d, (0, 1), value=1.0))
    sums = sums.reshape(num_rois, rh * rw, 4)
    count = sums[..., 3:]
    return sums[..., :3] / count.clamp(min=1), count[..., 0] > 0


@MODELS.register_module()
class EProPnPRoIAuxBranch(BaseModule):
    """Dense auxiliary branch on gt RoIs with the reprojection (``loss_proj``) and LiDAR coordinate-regression
    (``loss_regr``) losses (module docstring).

    Args:
        embed_dims: C of the key / value maps; num_heads: Hh (head dim d = C / Hh).
        roi_shape: (rh, rw) RoIAlign output size (28×28 v1-basic / coord_regr, 14×14 v1b / v2).
        output_stride: s of the key / value maps.
        pixel_convention: 'v1' / 'v2' meaning of K-projections (of the dense x2d map and the LiDAR x2d).
        loss_proj: MVD loss config (e.g. ``dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5)``) or None.
        loss_regr: None, a SmoothL1-type config (v1 form) or an MVD config (v2 form).
        regr_version: 'v1' / 'v2' cell assignment + loss form; None: 'v2' for an MVD ``loss_regr``, else 'v1'.
        proj_error_std, distance_min: DistDimProjErrorCoder constants (0.2, 0.1 m).
        allowed_border, z_min: projection clamp of the PnP camera (200 px, 0.1 m).
        noc_bias_radius, weight_scale: ``corr_reg_aux`` init as the point subnet's (Fibonacci NOC bias, ×0.01).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, roi_shape: Sequence[int] = (28, 28),
                 output_stride: int = 4, pixel_convention: str = 'v1', loss_proj: Optional[dict] = None,
                 loss_regr: Optional[dict] = None, regr_version: Optional[str] = None, proj_error_std: float = 0.2,
                 distance_min: float = 0.1, allowed_border: float = 200., z_min: float = 0.1,
                 noc_bias_radius: float = 0.5, weight_scale: float = 0.01, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        check_pixel_convention(pixel_convention)
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.head_dims = embed_dims // num_heads
        self.roi_shape = tuple(int(s) for s in roi_shape)
        self.output_stride, self.pixel_convention = output_stride, pixel_convention
        self.proj_error_std, self.distance_min = proj_error_std, distance_min
        self.allowed_border, self.z_min = allowed_border, z_min
        self.corr_reg_aux = GroupLinear(embed_dims, num_heads * 5, num_heads, weight_scale=weight_scale)
        with torch.no_grad():
            self.corr_reg_aux.bias[:, :3] = fibonacci_sphere(num_heads) * noc_bias_radius
        self.loss_proj = MODELS.build(loss_proj) if loss_proj is not None else None
        self.loss_regr = MODELS.build(loss_regr) if loss_regr is not None else None
        if regr_version is None:
            regr_version = 'v2' if isinstance(self.loss_regr, MVDGaussianMixtureNLLLoss) else 'v1'
        if regr_version not in ('v1', 'v2'):
            raise ValueError(f"regr_version must be 'v1' or 'v2', got {regr_version!r}")
        self.regr_version = regr_version

    # ------------------------------------------------------------------------------------------ features
    def forward(self, rois: Tensor, key_map: Tensor, value_map: Tensor, flip: Tensor,
                dense_x2d: Optional[Tensor] = None, img_transforms: Optional[Tensor] = None) -> RoIAuxOutput:
        """RoI features and dense NOC / log-std predictions.

        Args:
            rois: (G, 5) ``[img, x1, y1, x2, y2]`` augmented continuous px.
            key_map, value_map: (B, C, h, w) at stride ``output_stride``.
            flip: (G,) bool, per RoI.
            dense_x2d: (B, 2, Hp, Wp) full-resolution dense original-coordinate map, or None → ``img_transforms``.
            img_transforms: (G, 3, 3) per RoI (needed without ``dense_x2d``).
        """
        rh, rw = self.roi_shape
        G, Hh = rois.shape[0], self.num_heads
        if dense_x2d is not None:
            x2d_roi = roi_align_safe(dense_x2d.to(key_map.dtype), rois, self.roi_shape, 1.0)
        elif img_transforms is not None:
            x2d_roi = homography_x2d_roi(rois, img_transforms.to(key_map.dtype), self.roi_shape,
                                         self.pixel_convention)
        else:
            raise ValueError('EProPnPRoIAuxBranch needs dense_x2d or img_transforms')
        key_roi = roi_align_safe(key_map, rois, self.roi_shape, 1.0 / self.output_stride)
        value_roi = roi_align_safe(value_map, rois, self.roi_shape, 1.0 / self.output_stride)
        res = self.corr_reg_aux(value_roi.reshape(G, self.embed_dims, rh * rw).transpose(1, 2))  # (G, rh·rw, Hh·5)
        res = res.reshape(G, rh * rw, Hh, 5).transpose(1, 2)  # (G, Hh, rh·rw, 5)
        sign = torch.ones(G, 1, 1, 3, dtype=res.dtype, device=res.device)
        sign = torch.where(flip.bool()[:, None, None, None] & (torch.arange(3, device=res.device) == 2), -sign, sign)
        return RoIAuxOutput(x2d_roi, key_roi, res[..., :3] * sign, res[..., 3:])

    def attention(self, query: Tensor, key_roi: Tensor) -> Tensor:
        """(G, Hh, 1, d) queries · (G, C, rh, rw) RoI keys / sqrt(d) → (G, Hh, rh, rw) logits."""
        G = query.shape[0]
        rh, rw = self.roi_shape
        keys = key_roi.reshape(G, self.num_heads, self.head_dims, rh * rw)
        return (query @ keys / self.head_dims ** 0.5).reshape(G, self.num_heads, rh, rw)

    # ---------------------------------------------------------------------------------------------- losses
    def _zero(self, *tensors: Tensor) -> Tensor:
        """Zero-valued scalar connected to every parameter of the branch and to ``tensors`` (DDP)."""
        z = sum(p.sum() for p in self.parameters()) * 0
        for t in tensors:
            z = z + t.sum() * 0
        return z

    @fp32  # mixed precision: the RoI losses (log-sum-exp across RoIs, scatter) in float32
    def loss_from_samples(self, query: Tensor, dims: Tensor, gt_inds: Tensor, weights: Tensor, all_boxes: Tensor,
                          boxes2d: List[Tensor], gt3d: list, valid_host: List[List[bool]], cams, key_map: Tensor,
                          value_map: Tensor, dense_x2d: Optional[Tensor] = None) -> dict:
        """:meth:`loss` on the RoIs of the active gts (the unique gts of the object samples; docs/method.md §5.6).

        The samples' queries and predicted dims are averaged per gt with the row-normalised sample weights ``A``
        (G, N) of :func:`active_gts_and_pairs`.

        Args:
            query: (N, Hh, 1, d) sample queries; dims: (N, 3) predicted dims; gt_inds: (N,) batch-global gt index
                of each sample; weights: (N,) sample weights.
            all_boxes: (G_all, 7) the batch's kept gt boxes; boxes2d: per image (n_b, 4) kept augmented 2D boxes.
            gt3d: per image ``gt_instances_3d`` (``x3d`` / ``x2d`` LiDAR lists for ``loss_regr``), unfiltered;
            valid_host: per image, which gts passed the volume-centre filter (host lists).
            cams: the batch's :class:`~epropnp_det.structures.CameraBatch`.
        """
        img_all = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=all_boxes.device)
                             for i, b in enumerate(boxes2d)])
        rois_all = torch.cat((img_all[:, None].to(all_boxes), torch.cat(boxes2d).to(all_boxes)), 1)
        active, A, rois, pairs, active_host = active_gts_and_pairs(gt_inds, weights.to(all_boxes), rois_all)
        img_of_gt = img_all[active]
        G = active.numel()
        query = (A @ query.flatten(1)).reshape((G,) + tuple(query.shape[1:]))
        lidar_x3d = lidar_x2d = None
        if self.loss_regr is not None and all('x3d' in g and 'x2d' in g for g in gt3d):
            # per-gt LiDAR lists, filtered by the volume-centre validity like every other gt field
            flat3d = [p for b, g in enumerate(gt3d) for p, v in zip(g.x3d, valid_host[b]) if v]
            flat2d = [p for b, g in enumerate(gt3d) for p, v in zip(g.x2d, valid_host[b]) if v]
            lidar_x3d = [flat3d[i] for i in active_host]
            lidar_x2d = [flat2d[i] for i in active_host]
        c = cams.index(img_of_gt)
        return self.loss(rois, all_boxes[active], c.cam2img, c.ori_hw, c.flip, c.img_transform, query, A @ dims,
                         key_map, value_map, dense_x2d=dense_x2d, lidar_x3d=lidar_x3d, lidar_x2d=lidar_x2d,
                         roi_pairs=pairs)

    def loss(self, rois: Tensor, boxes3d: Tensor, cam_mats: Tensor, ori_hw: Tensor, flip: Tensor,
             img_transforms: Tensor, query: Tensor, dims: Tensor, key_map: Tensor, value_map: Tensor,
             dense_x2d: Optional[Tensor] = None, lidar_x3d: Optional[List[Tensor]] = None,
             lidar_x2d: Optional[List[Tensor]] = None, roi_pairs: Optional[Tuple[Tensor, Tensor]] = None) -> dict:
        """Auxiliary losses of the ``G`` active gts.

        Args:
            rois: (G, 5) augmented 2D gt boxes with image index; boxes3d: (G, 7) ``[l,h,w,x,y,z,yaw]`` gt boxes;
            cam_mats: (G, 3, 3) original K; ori_hw: (G, 2); flip: (G,) bool; img_transforms: (G, 3, 3);
            query: (G, Hh, 1, d) assignment-averaged sample queries (graph kept); dims: (G, 3) averaged predicted
            dims (detached here); key_map, value_map: (B, C, h, w); dense_x2d: (B, 2, Hp, Wp) or None;
            lidar_x3d, lidar_x2d: per active gt (n_i, 3) object coordinates / (n_i, 2) original K-projections
            (needed with ``loss_regr``); roi_pairs: the overlapping pairs of ``rois`` if known
            (:func:`active_gts_and_pairs`), else computed here (one host read).

        Returns:
            dict with ``loss_proj`` and / or ``loss_regr``.
        """
        losses = {}
        G = rois.shape[0]
        rh, rw = self.roi_shape
        if G == 0:
            zero = self._zero(key_map, value_map, query, dims)
            if self.loss_proj is not None:
                losses['loss_proj'] = zero
            if self.loss_regr is not None:
                losses['loss_regr'] = zero
            return losses
        out = self(rois, key_map, value_map, flip, dense_x2d, img_transforms)
        x3d_roi = out.noc * dims.detach()[:, None, None, :]  # (G, Hh, rh·rw, 3)
        attn = self.attention(query, out.key_roi)  # (G, Hh, rh, rw)
        if self.loss_proj is not None:
            camera = CameraParams.from_image_shape(cam_mats.to(x3d_roi), ori_hw.to(x3d_roi),
                                                   convention=self.pixel_convention,
                                                   allowed_border=self.allowed_border, z_min=self.z_min)
            x2d_proj, _ = project(x3d_roi.reshape(G, -1, 3), boxes3d[:, 3:7].to(x3d_roi), camera)
            x2d_tgt = out.x2d_roi.reshape(G, 1, 2, rh * rw).transpose(-1, -2)  # (G, 1, rh·rw, 2)
            diff = x2d_proj.reshape(G, self.num_heads, rh * rw, 2) - x2d_tgt
            err = dist_dim_proj_error(diff.reshape(G, -1, 2), boxes3d[:, 5], boxes3d[:, :3], cam_mats[:, 0, 0],
                                      self.proj_error_std, self.distance_min)
            err = err.reshape(G, self.num_heads, rh, rw, 2)
            if roi_pairs is None:
                roi_pairs = overlapping_roi_pairs(rois)  # host sync: the pair count; shared by both uses below
            log_mix = logsoftmax_across_rois(attn, rois, extra_dim=1, pairs=roi_pairs)
            # G is known on the host; the all-reduced factor stays on the device (no sync)
            avg = reduce_mean(torch.full((), float(G), dtype=err.dtype, device=err.device)).clamp(min=1.0) * rh * rw
            losses['loss_proj'] = self.loss_proj(err, None, logstd=out.logstd.reshape(err.shape), log_mix=log_mix,
                                                 rois=rois, avg_factor=avg, roi_pairs=roi_pairs)
        if self.loss_regr is not None:
            if lidar_x3d is None or lidar_x2d is None:
                raise ValueError('loss_regr needs the LiDAR object coordinates (gt_instances_3d.x3d / .x2d, '
                                 'EProPnPLoadLidarObjectCoords in the train pipeline)')
            losses['loss_regr'] = self._loss_regr(out, x3d_roi, attn, rois, boxes3d, img_transforms, lidar_x3d,
                                                  lidar_x2d)
        return losses

    def regr_targets(self, rois: Tensor, x2d_roi: Tensor, img_transforms: Tensor, lidar_x3d: List[Tensor],
                     lidar_x2d: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Per-cell LiDAR targets (G, rh·rw, 3) and validity (G, rh·rw) with the ``regr_version`` rule."""
        G = rois.shape[0]
        dev, dtype = x2d_roi.device, x2d_roi.dtype
        counts = torch.tensor([len(p) for p in lidar_x3d], device=dev)
        obj = torch.repeat_interleave(torch.arange(G, device=dev), counts,
                                      output_size=sum(len(p) for p in lidar_x3d))  # size known on the host
        x3d = torch.cat([p.to(device=dev, dtype=dtype).reshape(-1, 3) for p in lidar_x3d]) if G else \
            x2d_roi.new_zeros(0, 3)
        x2d = torch.cat([p.to(device=dev, dtype=dtype).reshape(-1, 2) for p in lidar_x2d]) if G else \
            x2d_roi.new_zeros(0, 2)
        if self.regr_version == 'v1':
            cells = cell_indices_v1(x2d, obj, x2d_roi)
        else:
            x2d_cont = k_projection_to_continuous(x2d, self.pixel_convention)
            cells = cell_indices_v2(x2d_cont, obj, img_transforms.to(dtype), rois, self.roi_shape)
        return lidar_cell_targets(x3d, obj, cells, G, self.roi_shape)

    def _loss_regr(self, out: RoIAuxOutput, x3d_roi: Tensor, attn: Tensor, rois: Tensor, boxes3d: Tensor,
                   img_transforms: Tensor, lidar_x3d: List[Tensor], lidar_x2d: List[Tensor]) -> Tensor:
        G, Hh = rois.shape[0], self.num_heads
        rh, rw = self.roi_shape
        tgt, valid = self.regr_targets(rois, out.x2d_roi.detach(), img_transforms, lidar_x3d, lidar_x2d)
        valid = valid.to(x3d_roi.dtype)
        dims_gt = boxes3d[:, :3].to(x3d_roi)
        if self.regr_version == 'v1':
            err = (x3d_roi - tgt[:, None]).norm(dim=-1) / dims_gt.max(-1).values[:, None, None]  # (G, Hh, rh·rw)
            weight = attn.reshape(G, Hh, rh * rw).softmax(dim=1) * valid[:, None]
            # Σ_heads softmax = 1, so Σ weight = Σ valid: the normaliser carries no gradient
            avg = reduce_mean(valid.sum().detach()).clamp(min=1e-4)
            return self.loss_regr(err, torch.zeros_like(err), weight=weight, avg_factor=avg)
        err = (x3d_roi.reshape(G, Hh, rh, rw, 3) - tgt.reshape(G, 1, rh, rw, 3)) / \
            dims_gt.mean(-1)[:, None, None, None, None]
        avg = reduce_mean(valid.sum().detach()).clamp(min=1e-4)
        return self.loss_regr(err, None, log_mix=attn.log_softmax(dim=1), weight=valid.reshape(G, rh, rw),
                              avg_factor=avg)
