"""Multi-head deformable attention sampler of object queries (docs/method.md §3.6).

Per object ``i`` (image ``b_i``, reference point ``ctr_i``, detection-level stride ``σ_i``)::

    query = Linear_q(Scale(0.1)·emb + query_pos)                    (N, Hh, 1, d)
    off   = Linear_off(emb)                                         (N, Hh, P, 2)   offsets from emb, not query
    loc   = ctr + off·σ                                             (N, Hh, P, 2)   augmented continuous px
    k, v  = bilinear samples of the key / value maps at loc         (N, Hh, d, P)   ONE 5-D grid_sample
    a     = softmax_P(q·k / sqrt(d)) · mask                         (N, Hh, 1, P)   not renormalised
    out   = LN(Linear_out(concat_h Σ_P a·v) + emb) ; out = LN(FFN(out))             (N, C)

x2d of the samples (coordinates in the **original** image, the frame of ``K``):

* ``x2d_mode='homography'`` (default, EPro-PnP-Det v2): ``x2d = T⁻¹·[loc, 1]`` (dehomogenised) with the per-image
  ``img_transform`` T (original-continuous → augmented-continuous), exact for any ``loc``; for
  ``pixel_convention='v1'`` (K projects pixel centres to integers) 0.5 is subtracted.
* ``x2d_mode='dense_map'`` (v1): bilinear sample of the stride-pooled dense x2d map with border padding, mask
  sampled from the pooled dense mask with zero padding. docs/method.md §13.8: outside the outermost pooled-cell centres
  the coordinates are clamped (wrong) while the mask only ramps down over one cell, so partially weighted border
  points carry wrong x2d. Kept for reproduction only.

Masks for ``homography`` mode (per axis, ``s`` = output stride, ``L`` = unpadded augmented image size):

* ``mask_ramp='symmetric'`` (default; our fix of the asymmetric v2 ramp, docs/method.md §13.8): ``clamp(min(loc + s/2,
  L + s/2 − loc) / s, 0, 1)``: 1 inside ``[s/2, L − s/2]``, linear to 0 half a cell outside the image, the same
  on both sides (this is what the v1 dense mask gives for a rectangular valid region).
* ``mask_ramp='v2'``: ``min(clamp((loc − s/2)/s, 0, 1), clamp((L + s/2 − loc)/s, 0, 1))`` as published.

The product over x and y is taken. Everything is differentiable w.r.t. ``loc`` (offsets and reference points).
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import Scale
from mmcv.cnn.bricks.transformer import FFN
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from epropnp_det.ops.pixels import check_pixel_convention, continuous_to_k_projection

__all__ = ['EProPnPDeformableAttentionSampler', 'SamplerOutput', 'sample_maps_5d', 'analytic_border_mask',
           'apply_homography']


class SamplerOutput(NamedTuple):
    """Outputs of :class:`EProPnPDeformableAttentionSampler` (``N`` objects, ``Hh`` heads, ``P`` points)."""
    output: Tensor  # (N, C) object feature
    query: Tensor  # (N, Hh, 1, d) per-head query
    values: Tensor  # (N, Hh, d, P) sampled value features
    mask: Tensor  # (N, Hh, 1, P) validity of each sample in [0, 1]
    x2d: Tensor  # (N, Hh, 2, P) original-image pixel coordinates of the samples
    loc: Tensor  # (N, Hh, P, 2) augmented-image continuous sampling locations
    attn: Tensor  # (N, Hh, 1, P) masked attention weights


def sample_maps_5d(maps: Tensor, loc: Tensor, img_inds: Tensor, stride: float, padding_mode: str = 'border',
                   num_groups: int = 1) -> Tensor:
    """Bilinearly sample per-image feature maps at continuous pixel locations, all images in one call.

    The maps are viewed as a 5-D volume ``(G, C/G, B, h, w)`` and sampled trilinearly with the depth coordinate
    ``z = (b + 0.5)·2/B − 1``, which lands exactly on image ``b`` (``align_corners=False``), so the depth
    interpolation weight is exactly 1 on that image.

    Args:
        maps: (B, C, h, w) maps of a padded image of size ``(h·stride, w·stride)``.
        loc: (N, G, P, 2) continuous pixel coordinates ``(x, y)`` of the padded augmented image.
        img_inds: (N,) long image index of each object.
        stride: pixels per map cell.
        padding_mode: ``grid_sample`` padding for x / y.
        num_groups: ``G`` channel groups (heads); group ``g`` of the channels is sampled at ``loc[:, g]``.

    Returns:
        (N, G, C/G, P) sampled features.
    """
    B, C, h, w = maps.shape
    N, G, P, _ = loc.shape
    if G != num_groups or C % G:
        raise ValueError(f'loc has {G} groups, expected {num_groups} dividing C={C}')
    if N == 0:
        return maps.new_zeros((0, G, C // G, P)) + 0 * maps.sum()
    size = loc.new_tensor([w * stride, h * stride])
    grid_xy = loc * (2 / size) - 1  # (N, G, P, 2)
    grid_z = ((img_inds.to(loc.dtype) + 0.5) * (2 / B) - 1)[:, None, None, None].expand(N, G, P, 1)
    grid = torch.cat((grid_xy, grid_z), dim=-1).transpose(0, 1)[:, :, :, None]  # (G, N, P, 1, 3)
    vol = maps.reshape(B, G, C // G, h, w).permute(1, 2, 0, 3, 4)  # (G, C/G, B, h, w)
    out = F.grid_sample(vol, grid, mode='bilinear', padding_mode=padding_mode, align_corners=False)
    return out[..., 0].permute(2, 0, 1, 3)  # (G, C/G, N, P) -> (N, G, C/G, P)


def apply_homography(mats: Tensor, points: Tensor) -> Tensor:
    """Apply 3x3 homographies to 2-D points: (..., 3, 3) with (..., P, 2) → (..., P, 2) (dehomogenised)."""
    homo = torch.cat((points, torch.ones_like(points[..., :1])), dim=-1)
    out = homo @ mats.transpose(-1, -2)
    return out[..., :2] / out[..., 2:3]


def analytic_border_mask(loc: Tensor, img_wh: Tensor, stride: float, ramp: str = 'symmetric') -> Tensor:
    """Validity of sampling locations near the image border (see the module docstring).

    Args:
        loc: (..., 2) augmented continuous pixel coordinates.
        img_wh: (..., 2) unpadded augmented image ``(w, h)``, broadcastable to ``loc``.
        stride: ``s``, the key/value map stride in pixels.
        ramp: ``'symmetric'`` or ``'v2'``.

    Returns:
        (...,) mask in [0, 1].
    """
    half = stride / 2
    if ramp == 'symmetric':
        low = (loc + half) / stride
    elif ramp == 'v2':
        low = (loc - half) / stride
    else:
        raise ValueError(f"mask_ramp must be 'symmetric' or 'v2', got {ramp!r}")
    high = (img_wh + half - loc) / stride
    return torch.minimum(low.clamp(0, 1), high.clamp(0, 1)).prod(dim=-1)


@MODELS.register_module()
class EProPnPDeformableAttentionSampler(BaseModule):
    """Deformable attention sampler producing the object feature and the point-wise samples.

    Args:
        embed_dims: C.
        num_heads: Hh (head dim ``d = C / Hh``).
        num_points: P points per head.
        stride: s, stride of the key / value maps (``output_stride``).
        x2d_mode: ``'homography'`` (default) or ``'dense_map'`` (see module docstring).
        pixel_convention: ``'v2'`` (K maps to continuous coordinates) or ``'v1'`` (K maps pixel centres to
            integers: homography x2d get −0.5; the dense map must then already be in that convention).
        mask_ramp: ``'symmetric'`` (default) or ``'v2'``.
        offset_init_gain: xavier-uniform gain of ``sampling_offsets`` (2.5, docs/method.md §3.9).
        ffn_cfg: mmcv FFN config (``embed_dims`` is set to C).
        norm_cfg: norm after the output projection and after the FFN.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_points: int = 32, stride: float = 4,
                 x2d_mode: str = 'homography', pixel_convention: str = 'v2', mask_ramp: str = 'symmetric',
                 offset_init_gain: float = 2.5,
                 ffn_cfg: dict = dict(feedforward_channels=1024, num_fcs=2, ffn_drop=0.1,
                                      act_cfg=dict(type='ReLU', inplace=True)),
                 norm_cfg: dict = dict(type='LN'), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} must be divisible by num_heads={num_heads}')
        if x2d_mode not in ('homography', 'dense_map'):
            raise ValueError(f"x2d_mode must be 'homography' or 'dense_map', got {x2d_mode!r}")
        check_pixel_convention(pixel_convention)
        analytic_border_mask(torch.zeros(2), torch.ones(2), 1., mask_ramp)  # validates ``mask_ramp``
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        self.head_dims = embed_dims // num_heads
        self.stride = stride
        self.x2d_mode, self.pixel_convention, self.mask_ramp = x2d_mode, pixel_convention, mask_ramp
        self.emb_scale = Scale(0.1)
        self.query_proj = nn.Linear(embed_dims, embed_dims)
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_points * 2)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.norm_out = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(embed_dims=embed_dims, **ffn_cfg)
        self.norm_ffn = build_norm_layer(norm_cfg, embed_dims)[1]
        nn.init.xavier_uniform_(self.query_proj.weight)
        nn.init.zeros_(self.query_proj.bias)
        nn.init.xavier_uniform_(self.sampling_offsets.weight, gain=offset_init_gain)
        nn.init.zeros_(self.sampling_offsets.bias)

    def sample_x2d_and_mask(self, loc: Tensor, img_inds: Tensor, img_wh: Tensor,
                            img_transforms: Optional[Tensor] = None, dense_x2d: Optional[Tensor] = None,
                            dense_mask: Optional[Tensor] = None):
        """Original-image coordinates and validity of sampling locations.

        Args:
            loc: (N, Hh, P, 2) augmented continuous coordinates.
            img_inds: (N,) image index per object.
            img_wh: (B, 2) unpadded augmented image ``(w, h)``.
            img_transforms: (B, 3, 3) original→augmented homographies (``homography`` mode).
            dense_x2d: (B, 2, h, w) stride-pooled dense x2d map (``dense_map`` mode).
            dense_mask: (B, 1, h, w) stride-pooled dense mask (``dense_map`` mode).

        Returns:
            x2d (N, Hh, 2, P) original pixel coordinates, mask (N, Hh, 1, P).
        """
        if self.x2d_mode == 'homography':
            if img_transforms is None:
                raise ValueError("x2d_mode='homography' needs img_transforms (B, 3, 3)")
            # geometry in float32 under mixed precision (no half-precision inverse; pixel coordinates of 1600 px
            # images keep 0.1 px only in float32)
            with torch.autocast(loc.device.type, enabled=False):
                if loc.dtype in (torch.float16, torch.bfloat16):
                    loc = loc.float()
                inv = torch.linalg.inv(img_transforms.to(loc.dtype))[img_inds]  # (N, 3, 3)
                x2d = apply_homography(inv[:, None], loc)  # (N, Hh, P, 2)
            x2d = continuous_to_k_projection(x2d, self.pixel_convention)
            mask = analytic_border_mask(loc, img_wh.to(loc.dtype)[img_inds][:, None, None], self.stride,
                                        self.mask_ramp)
            return x2d.transpose(-1, -2), mask[:, :, None]
        if dense_x2d is None or dense_mask is None:
            raise ValueError("x2d_mode='dense_map' needs dense_x2d (B, 2, h, w) and dense_mask (B, 1, h, w)")
        N, Hh, P, _ = loc.shape
        flat = loc.reshape(N, 1, Hh * P, 2)
        x2d = sample_maps_5d(dense_x2d, flat, img_inds, self.stride, 'border')  # (N, 1, 2, Hh·P)
        mask = sample_maps_5d(dense_mask, flat, img_inds, self.stride, 'zeros')  # (N, 1, 1, Hh·P)
        return (x2d.reshape(N, 2, Hh, P).permute(0, 2, 1, 3), mask.reshape(N, 1, Hh, P).transpose(1, 2))

    def forward(self, emb: Tensor, query_pos: Tensor, ref_points: Tensor, strides: Tensor, img_inds: Tensor,
                key_map: Tensor, value_map: Tensor, img_wh: Tensor, img_transforms: Optional[Tensor] = None,
                dense_x2d: Optional[Tensor] = None, dense_mask: Optional[Tensor] = None) -> SamplerOutput:
        """Sample and attend for ``N`` objects of a batch of ``B`` images.

        Args:
            emb: (N, C) object embeddings.
            query_pos: (N, C) positional encoding of the reference points.
            ref_points: (N, 2) reference points, augmented continuous pixel coordinates.
            strides: (N,) stride (pixels) of the detection level each query comes from.
            img_inds: (N,) long image index.
            key_map: (B, C, h, w) keys at stride ``s`` of the padded batch input.
            value_map: (B, C, h, w) values.
            img_wh: (B, 2) unpadded augmented image sizes ``(w, h)``.
            img_transforms, dense_x2d, dense_mask: see :meth:`sample_x2d_and_mask`.
        """
        N, C = emb.shape
        Hh, P, d = self.num_heads, self.num_points, self.head_dims
        query = self.query_proj(self.emb_scale(emb) + query_pos).reshape(N, Hh, 1, d)
        offsets = self.sampling_offsets(emb).reshape(N, Hh, P, 2)
        loc = ref_points[:, None, None, :] + offsets * strides.to(emb.dtype)[:, None, None, None]
        keys = sample_maps_5d(key_map, loc, img_inds, self.stride, 'border', Hh)  # (N, Hh, d, P)
        values = sample_maps_5d(value_map, loc, img_inds, self.stride, 'border', Hh)
        x2d, mask = self.sample_x2d_and_mask(loc, img_inds, img_wh, img_transforms, dense_x2d, dense_mask)
        attn = torch.softmax(query @ keys / d ** 0.5, dim=-1) * mask  # (N, Hh, 1, P)
        out = (attn @ values.transpose(-1, -2)).reshape(N, C)  # heads concatenated
        out = self.norm_out(self.out_proj(out) + emb)
        out = self.norm_ffn(self.ffn(out))
        return SamplerOutput(out, query, values, mask, x2d, loc, attn)
