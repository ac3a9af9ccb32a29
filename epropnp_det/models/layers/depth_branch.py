"""Dense depth branch of EPro-PnP-Det v2 (docs/method.md §10.12): an auxiliary loss that teaches the value map depth.

For every LiDAR point of every image (``cam_pts_uvz`` rows ``[u, v, z]``: K-projection in the ORIGINAL image,
camera-frame depth in metres)::

    p     = T · k_projection_to_continuous(u, v)              augmented continuous px (T = img_transform)
    keep  = p inside the unpadded augmented image [0, w) × [0, h)
    f     = bilinear sample of the value map at p             (C,)  one 5-D grid_sample for the whole batch
    out   = [Linear(C, C), ReLU] × num_layers + Linear(C, M·2) → (M modes) × (depth code, mixture logit)
    depth = coder.decode(code, (fx + fy)/2)                   metres (EProPnPCamAwareLinearCoder)
    loss  = MVD Gaussian-mixture NLL over the M modes of depth vs z (log-softmax mixture weights),
            averaged by the all-reduced number of kept points

Output layout of the last layer: mode-major, channel ``2·m`` = code of mode m, ``2·m + 1`` = its logit (the
original's layout, so its weights convert without reordering). Init: xavier-uniform weights, zero biases, and the
mixture-logit rows of the last layer zeroed (uniform mixture at the start).

Fix of docs/method.md §13.16: the original projects every LiDAR point of the original canvas into the augmented image
and samples with border padding, so points that the crop removed are supervised with features of the nearest border
cell (a wrong, clamped feature for a depth that is not visible). Here such points are **excluded** (masked out
before sampling and not counted in the average); only points inside the unpadded augmented image contribute.
"""
from typing import Dict, NamedTuple, Optional, Sequence

import torch
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from torch import Tensor, nn

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS

from .deform_sampler import apply_homography, sample_maps_5d

__all__ = ['EProPnPDepthBranch', 'DepthPoints']


class DepthPoints(NamedTuple):
    """LiDAR points kept for the depth loss (``n`` points of the whole batch)."""
    loc: Tensor  # (n, 2) augmented continuous px
    depth: Tensor  # (n,) camera-frame z, metres
    focal: Tensor  # (n,) (fx + fy)/2 of the point's image, px
    img_inds: Tensor  # (n,) long
    num_total: int  # points before the in-image test


@MODELS.register_module()
class EProPnPDepthBranch(BaseModule):
    """v2 dense depth branch and its loss (module docstring).

    Args:
        embed_dims: value-map channels C.
        num_layers: hidden ``Linear + ReLU`` layers (2).
        num_modes: mixture modes M (4).
        pixel_convention: meaning of the ``cam_pts_uvz`` K-projections ('v1' integer centres, 'v2' continuous).
        depth_coder: ``TASK_UTILS`` config (default ``EProPnPCamAwareLinearCoder(15, 15, 1260)``).
        loss_depth: config of the MVD Gaussian-mixture NLL loss (registered by ``epropnp_det.models.losses``),
            called as ``loss(pred (n, M, 1), target (n, 1, 1), log_mix=(n, M), avg_factor=...)``.
    """

    def __init__(self, embed_dims: int = 256, num_layers: int = 2, num_modes: int = 4, pixel_convention: str = 'v2',
                 depth_coder: dict = dict(type='EProPnPCamAwareLinearCoder', depth_mean=15.0, depth_std=15.0,
                                          focal_ref=1260.0),
                 loss_depth: Optional[dict] = dict(type='MVDGaussianMixtureNLLLoss', sigma=0.3,
                                                   freeze_sigma=False, delta=0.3, adaptive_weight=True,
                                                   loss_weight=1.5),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if pixel_convention not in PIXEL_CONVENTIONS:
            raise ValueError(f"pixel_convention must be 'v1' or 'v2', got {pixel_convention!r}")
        self.embed_dims, self.num_modes, self.pixel_convention = embed_dims, num_modes, pixel_convention
        layers = []
        for _ in range(num_layers):
            layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(embed_dims, num_modes * 2))
        self.mlp = nn.Sequential(*layers)
        self.depth_coder = TASK_UTILS.build(depth_coder)
        self.loss_depth = MODELS.build(loss_depth) if loss_depth is not None else None
        self._reset()

    def _reset(self) -> None:
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # mixture-logit rows of the last layer: uniform mixture at init
            self.mlp[-1].weight.view(self.num_modes, 2, -1)[:, 1] = 0

    def init_weights(self) -> None:
        super().init_weights()
        self._reset()

    # ----------------------------------------------------------------------------------------------- points
    def select_points(self, cam_pts_uvz: Sequence[Tensor], K: Tensor, T: Tensor, img_wh: Tensor) -> DepthPoints:
        """Map each image's LiDAR points into the augmented image and keep those inside it (docs/method.md §13.16 fix).

        Args:
            cam_pts_uvz: per image (m_b, 3) ``[u, v, z]``, original-image K-projections (``pixel_convention``).
            K: (B, 3, 3) original intrinsics. T: (B, 3, 3) ``img_transform``. img_wh: (B, 2) unpadded size.
        """
        sizes = [int(p.numel()) // 3 for p in cam_pts_uvz]  # host-side shapes
        total = sum(sizes)
        if total == 0:
            return DepthPoints(K.new_zeros(0, 2), K.new_zeros(0), K.new_zeros(0),
                               torch.zeros(0, dtype=torch.long, device=K.device), 0)
        pts = torch.cat([p.to(K).reshape(-1, 3) for p in cam_pts_uvz])  # (P, 3), images in order
        img = torch.repeat_interleave(torch.arange(len(sizes), device=K.device),
                                      torch.tensor(sizes, device=K.device), output_size=total)
        uv = pts[:, :2] + PIXEL_CONVENTIONS[self.pixel_convention]
        loc = apply_homography(T[img], uv[:, None])[:, 0]
        w, h = img_wh[img, 0], img_wh[img, 1]
        keep = (loc[:, 0] >= 0) & (loc[:, 0] < w) & (loc[:, 1] >= 0) & (loc[:, 1] < h)
        n = int(keep.sum())  # host read (the depth branch's one): the number of kept points shapes the loss
        sel = torch.argsort((~keep).to(torch.uint8), stable=True)[:n]  # kept points, in their original order
        img = img[sel]
        return DepthPoints(loc[sel], pts[sel, 2], (K[img, 0, 0] + K[img, 1, 1]) / 2, img, total)

    def forward(self, value_map: Tensor, loc: Tensor, img_inds: Tensor, stride: float):
        """Value-map features at ``loc`` → per-point mode codes and logits.

        Args:
            value_map: (B, C, h, w) at ``stride`` px per cell (padded image).
            loc: (n, 2) augmented continuous px. img_inds: (n,) long.
        Returns:
            codes (n, M), logits (n, M).
        """
        feat = sample_maps_5d(value_map, loc[:, None, None], img_inds, stride)[:, 0, :, 0]  # (n, C)
        out = self.mlp(feat).reshape(-1, self.num_modes, 2)
        return out[..., 0], out[..., 1]

    def loss(self, value_map: Tensor, cam_pts_uvz: Sequence[Tensor], K: Tensor, T: Tensor, img_wh: Tensor,
             stride: float) -> Dict[str, Tensor]:
        """``dict(loss_depth, num_depth_pts)``; zero-valued graph (every parameter reached) when no point is kept."""
        if self.loss_depth is None:
            return {}
        pts = self.select_points(cam_pts_uvz, K, T, img_wh)
        codes, logits = self(value_map, pts.loc, pts.img_inds, stride)
        depth = self.depth_coder.decode(codes, pts.focal[:, None])  # (n, M) metres
        avg = reduce_mean(depth.new_tensor(float(len(depth)))).clamp(min=1e-4)
        # called on every rank even without points: the loss all-reduces its adaptive-weight statistics
        loss = self.loss_depth(depth[..., None], pts.depth[:, None, None], log_mix=logits.log_softmax(-1),
                               avg_factor=avg)
        if len(depth) == 0:  # keep every parameter in the graph (DDP) with a zero value
            loss = loss * 0 + sum(p.sum() for p in self.parameters()) * 0 + value_map.sum() * 0
        return dict(loss_depth=loss, num_depth_pts=depth.new_tensor(float(len(depth))))

    @torch.no_grad()
    def predict_depth(self, value_map: Tensor, loc: Tensor, img_inds: Tensor, K: Tensor, stride: float) -> Tensor:
        """Depth (metres) of the most probable mode at ``loc`` (n, 2) of images ``img_inds`` (debug view)."""
        codes, logits = self(value_map, loc, img_inds, stride)
        best = codes.gather(1, logits.argmax(1, keepdim=True))[:, 0]
        return self.depth_coder.decode(best, (K[img_inds, 0, 0] + K[img_inds, 1, 1]) / 2)

    @torch.no_grad()
    def predict_depth_maps(self, value_map: Tensor, K: Tensor, stride: float) -> Tensor:
        """Dense depth (metres, most probable mode) at every value-map cell centre ``((j + ½)·s, (i + ½)·s)`` of the
        augmented image: (B, h, w) (the v2 ``depth`` view, docs/method.md §6.3). At cell centres the bilinear sample is
        the cell's own feature."""
        B, _, h, w = value_map.shape
        ys, xs = torch.meshgrid((torch.arange(h, device=K.device, dtype=value_map.dtype) + 0.5) * stride,
                                (torch.arange(w, device=K.device, dtype=value_map.dtype) + 0.5) * stride, indexing='ij')
        loc = torch.stack((xs, ys), -1).reshape(1, h * w, 2).expand(B, -1, -1).reshape(-1, 2)
        inds = torch.arange(B, device=K.device).repeat_interleave(h * w)
        return self.predict_depth(value_map, loc, inds, K.to(value_map), stride).reshape(B, h, w)

    def extra_repr(self) -> str:
        return f'num_modes={self.num_modes}, pixel_convention={self.pixel_convention!r}'
