"""Dense key / value maps for the deformable sampler (docs/method.md §3.5).

::

    f_l  = convs(P_l)                        3×3 ConvModules (shared across levels, ReLU, no norm, no bias)
    f_l  = bilinear upsample to stride s     (align_corners=False; identity for the level already at stride s)
    F    = ConvModule1×1(concat_l f_l → C, GN, ReLU)                (B, C, h, w)
    mask = padding mask at stride s          cell (i, j) is padding iff (j·s ≥ w_img) or (i·s ≥ h_img),
                                             i.e. nearest-neighbour resize of the pixel mask
    key  = Conv1×1(concat(F, SinePE(mask)) → C) ;  value = Conv1×1(F → C)
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['EProPnPDenseBranch', 'padding_mask']


def padding_mask(img_wh: Tensor, feat_hw: Tuple[int, int], stride: float) -> Tensor:
    """(B, 2) unpadded image sizes ``(w, h)`` → (B, h, w) bool map, True on padding cells."""
    h, w = feat_hw
    xs = torch.arange(w, device=img_wh.device, dtype=img_wh.dtype) * stride
    ys = torch.arange(h, device=img_wh.device, dtype=img_wh.dtype) * stride
    return (xs[None, None, :] >= img_wh[:, None, None, 0]) | (ys[None, :, None] >= img_wh[:, None, None, 1])


@MODELS.register_module()
class EProPnPDenseBranch(BaseModule):
    """Key / value maps from the dense FPN levels.

    Args:
        in_channels: FPN channels.
        lvl_feat_channels: widths of the shared per-level 3×3 convs ((256, 128, 128)).
        out_channels: C of the key / value maps.
        strides: strides of the dense levels (e.g. (4, 8, 16, 32)).
        output_stride: s of the output maps.
        norm_cfg: norm of the fusion 1×1 ConvModule.
        positional_encoding: config of the sine encoding (``num_feats·2`` channels).
    """

    def __init__(self, in_channels: int = 256, lvl_feat_channels: Sequence[int] = (256, 128, 128),
                 out_channels: int = 256, strides: Sequence[int] = (4, 8, 16, 32), output_stride: int = 4,
                 norm_cfg: dict = dict(type='GN', num_groups=32, requires_grad=True),
                 positional_encoding: dict = dict(type='EProPnPSinePositionalEncoding', num_feats=128),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.strides, self.output_stride = tuple(strides), output_stride
        convs, chn = [], in_channels
        for c in lvl_feat_channels:
            convs.append(ConvModule(chn, c, 3, padding=1, bias=False, norm_cfg=None))
            chn = c
        self.lvl_convs = nn.Sequential(*convs)
        self.fuse = ConvModule(chn * len(self.strides), out_channels, 1, norm_cfg=norm_cfg)
        self.positional_encoding = MODELS.build(positional_encoding)
        pe_channels = 2 * self.positional_encoding.num_feats
        self.k_proj = nn.Conv2d(out_channels + pe_channels, out_channels, 1)
        self.v_proj = nn.Conv2d(out_channels, out_channels, 1)
        for conv in (self.k_proj, self.v_proj):
            nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='linear')
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor], img_wh: Tensor, pad_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """
        Args:
            feats: dense FPN levels, (B, in_channels, h_l, w_l) with strides ``self.strides``.
            img_wh: (B, 2) unpadded augmented image sizes ``(w, h)``.
            pad_hw: padded batch input ``(H, W)``.

        Returns:
            key_map, value_map: (B, C, ceil(H/s), ceil(W/s)).
        """
        if len(feats) != len(self.strides):
            raise ValueError(f'got {len(feats)} dense levels, expected {len(self.strides)}')
        s = self.output_stride
        out_hw = (-(-pad_hw[0] // s), -(-pad_hw[1] // s))
        ups = []
        for feat in feats:
            f = self.lvl_convs(feat)
            if tuple(f.shape[-2:]) != out_hw:
                f = F.interpolate(f, size=out_hw, mode='bilinear', align_corners=False)
            ups.append(f)
        fused = self.fuse(torch.cat(ups, 1))
        mask = padding_mask(img_wh.to(fused.dtype), out_hw, s)
        pos = self.positional_encoding(mask).to(fused.dtype)
        return self.k_proj(torch.cat((fused, pos), 1)), self.v_proj(fused)
