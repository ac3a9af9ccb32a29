"""Sine positional encoding of dense maps and of arbitrary continuous points (docs/method.md §3.5).

Channel layout (both functions): ``[PE_y (num_feats), PE_x (num_feats)]``; inside each half the channels
interleave ``sin`` (even index ``k``) and ``cos`` (odd index ``k``) of ``embed / 10000^(2·floor(k/2)/num_feats)``.
"""
import math
from typing import Sequence, Union

import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet3d.registry import MODELS
from torch import Tensor

__all__ = ['EProPnPSinePositionalEncoding']


@MODELS.register_module()
class EProPnPSinePositionalEncoding(SinePositionalEncoding):
    """mmdet ``SinePositionalEncoding`` with the published model's defaults plus :meth:`points_to_enc`.

    ``forward(mask)``: ``mask (B, h, w)`` non-zero on padding → ``(B, 2·num_feats, h, w)``, with
    ``x_embed = (c_x − 0.5) / (c_x_last + 1e-6) · 2π`` (``c_x`` = cumulative count of valid cells along the row).
    """

    def __init__(self, num_feats: int = 128, temperature: int = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6, offset: float = -0.5, init_cfg=None):
        super().__init__(num_feats=num_feats, temperature=temperature, normalize=normalize, scale=scale,
                         eps=eps, offset=offset, init_cfg=init_cfg)

    def points_to_enc(self, points: Tensor, img_shape: Union[Tensor, Sequence]) -> Tensor:
        """Encode continuous points with the dense map's channel layout.

        Args:
            points: (..., 2) continuous pixel coordinates ``(x, y)`` of the augmented (network input) image.
            img_shape: (..., 2) or (2,) ``[h, w]`` of the unpadded augmented image, broadcastable to ``points``.

        Returns:
            (..., 2·num_feats) encoding, ``x_embed = x / w · scale`` (no offset, no eps), same for y.
        """
        if points.shape[-1] != 2:
            raise ValueError(f'points must be (..., 2), got {tuple(points.shape)}')
        img_shape = torch.as_tensor(img_shape, dtype=points.dtype, device=points.device)
        embed = points / img_shape.flip(-1) * self.scale  # (..., 2) as (x, y)
        dim_t = torch.arange(self.num_feats, dtype=points.dtype, device=points.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor') / self.num_feats)
        pos = embed[..., None] / dim_t  # (..., 2, num_feats)
        pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
        return torch.cat((pos[..., 1, :], pos[..., 0, :]), dim=-1)  # y first, like the dense map
