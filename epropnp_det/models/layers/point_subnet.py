"""Point-wise correspondence subnet: value samples → NOC coordinates and 2D weights (docs/method.md §3.8, init §3.9).

For ``N`` objects with ``Hh`` heads of ``P`` points (``n = Hh·P`` correspondences, flattened head-major, i.e.
index ``= head·P + point``)::

    X2f  = x2d with x negated for flipped images                      (N, n, 2)  original image px
    pos  = Linear(2→d)((X2f − mean(X2f)) / max(std(X2f), 1))          per object and coordinate, unbiased std
    V    = values + Scale(0.1)·query (each head's query on its P points)
    V    = post-norm transformer layer over the n points (self-attention, FFN)
    R    = GroupLinear(V regrouped point-major (N, P, Hh·d)) → (N, Hh, P, 5)   each head its own d→5 linear
    noc  = R[..., :3], z negated for flipped images ("flip correction") (N, n, 3)  object frame / dims
    w2d  = softmax over all n points per x / y channel of R[..., 3:5], times the sample mask  (N, n, 2)

Flip correction: mirroring the image about the camera's vertical plane maps an object with local coordinates
``(x, y, z)`` to one with ``(x, y, −z)`` (and yaw θ to π − θ). The network sees the mirrored image, so its raw NOC
are those of the mirrored object; x2d are always original-image coordinates, so negating NOC z expresses the
prediction in the original object's geometry. Negating x of the positional-encoding input makes the subnet see
the same (centred) point layout as it would in the mirrored image.
"""
import math
from typing import NamedTuple

import torch
from mmcv.cnn.bricks import Scale
from mmcv.cnn.bricks.transformer import BaseTransformerLayer
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ['GroupLinear', 'EProPnPPointSubnet', 'PointSubnetOutput', 'fibonacci_sphere']


def fibonacci_sphere(num: int) -> Tensor:
    """``num`` unit vectors spread over the sphere (docs/method.md §3.9 ``gen_unit_noc``): (num, 3).

    ``k = i + 0.5``, ``φ = arccos(1 − 2k/num)``, ``θ = π(1 + √5)k``, ``p = (cos θ sin φ, sin θ sin φ, cos φ)``.
    """
    k = torch.arange(num, dtype=torch.float64) + 0.5
    phi = torch.arccos(1 - 2 * k / num)
    theta = math.pi * (1 + math.sqrt(5)) * k
    return torch.stack((theta.cos() * phi.sin(), theta.sin() * phi.sin(), phi.cos()), dim=-1).float()


class GroupLinear(nn.Module):
    """Per-group linear layer: ``out[..., g, :] = W[g] @ in[..., g, :] + b[g]``.

    Input ``(..., G·C_in)`` (group-major), output ``(..., G·C_out)``. Weight ``(G, C_out, C_in)``, bias ``(G, C_out)``.
    Init: per-group kaiming-uniform with linear gain (fan_in = C_in) times ``weight_scale``; bias 0.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, weight_scale: float = 1.0):
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f'in_features={in_features} and out_features={out_features} must be divisible by '
                             f'groups={groups}')
        self.groups = groups
        self.in_per_group, self.out_per_group = in_features // groups, out_features // groups
        self.weight = nn.Parameter(torch.empty(groups, self.out_per_group, self.in_per_group))
        self.bias = nn.Parameter(torch.zeros(groups, self.out_per_group))
        bound = math.sqrt(3.0 / self.in_per_group)  # kaiming uniform, gain 1 (linear)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound).mul_(weight_scale)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(*lead, self.groups, self.in_per_group)
        out = torch.einsum('...gi,goi->...go', x, self.weight) + self.bias
        return out.reshape(*lead, self.groups * self.out_per_group)


class PointSubnetOutput(NamedTuple):
    noc: Tensor  # (N, n, 3) normalised object coordinates (multiply by dims [l, h, w] for metres)
    w2d: Tensor  # (N, n, 2) softmax-normalised 2D weights times the sample mask (before the global scale)
    x2d: Tensor  # (N, n, 2) original-image pixel coordinates of the correspondences
    w2d_logits: Tensor  # (N, n, 2) raw weight logits


@MODELS.register_module()
class EProPnPPointSubnet(BaseModule):
    """Correspondence subnet over the ``n = num_heads·num_points`` sampled points of each object.

    Args:
        num_heads: Hh (heads of the sampler).
        head_dims: d = embed_dims / Hh (the transformer works at this width).
        feedforward_channels: FFN hidden width of the point transformer layer.
        ffn_drop: FFN dropout.
        detach_pos_x2d: detach the x2d fed to the positional encoding (v1 True, v2 False).
        noc_bias_radius: radius of the Fibonacci-sphere NOC bias init (0.5).
        weight_scale: scale of the GroupLinear kaiming init (0.01).
    """

    def __init__(self, num_heads: int = 8, head_dims: int = 32, feedforward_channels: int = 256,
                 ffn_drop: float = 0.1, detach_pos_x2d: bool = True, noc_bias_radius: float = 0.5,
                 weight_scale: float = 0.01, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_heads, self.head_dims, self.detach_pos_x2d = num_heads, head_dims, detach_pos_x2d
        self.pos_proj = nn.Linear(2, head_dims)
        self.query_scale = Scale(0.1)
        self.layer = BaseTransformerLayer(
            attn_cfgs=dict(type='MultiheadAttention', embed_dims=head_dims, num_heads=1, attn_drop=0.,
                           proj_drop=0., batch_first=True),
            ffn_cfgs=dict(type='FFN', embed_dims=head_dims, feedforward_channels=feedforward_channels, num_fcs=2,
                          ffn_drop=ffn_drop, act_cfg=dict(type='ReLU', inplace=True)),
            operation_order=('self_attn', 'norm', 'ffn', 'norm'), batch_first=True)
        self.corr_reg = GroupLinear(num_heads * head_dims, num_heads * 5, num_heads, weight_scale=weight_scale)
        with torch.no_grad():
            self.corr_reg.bias[:, :3] = fibonacci_sphere(num_heads) * noc_bias_radius

    @staticmethod
    def normalise_x2d(x2d: Tensor) -> Tensor:
        """(N, n, 2) → per-object centred coordinates divided by ``max(unbiased std, 1)`` per axis."""
        mean = x2d.mean(dim=1, keepdim=True)
        if x2d.shape[0] == 0 or x2d.shape[1] < 2:
            return x2d - mean
        std = x2d.std(dim=1, keepdim=True)
        return (x2d - mean) / std.clamp(min=1)

    def forward(self, values: Tensor, x2d: Tensor, query: Tensor, mask: Tensor, flip: Tensor) -> PointSubnetOutput:
        """
        Args:
            values: (N, Hh, d, P) value samples of the sampler.
            x2d: (N, Hh, 2, P) original-image coordinates of the samples.
            query: (N, Hh, 1, d) per-head queries.
            mask: (N, Hh, 1, P) sample validity.
            flip: (N,) bool, whether the object's image was horizontally flipped.
        """
        num_obj = values.shape[0]
        if num_obj == 0:  # keep every parameter in the graph (DDP) with one dummy object, sliced away below
            values, x2d, query, mask = (t.new_zeros((1,) + tuple(t.shape[1:])) for t in (values, x2d, query, mask))
            flip = flip.new_zeros(1)
        N, Hh, d, P = values.shape
        n = Hh * P
        x2d_pts = x2d.transpose(-1, -2).reshape(N, n, 2)
        # flipped images: x mirrored (a where, not a boolean-mask write: no host sync)
        sign = torch.ones(N, 1, 2, dtype=values.dtype, device=values.device)
        sign = torch.where(flip.bool()[:, None, None] & (torch.arange(2, device=sign.device) == 0), -sign, sign)
        pos_in = x2d_pts.detach() if self.detach_pos_x2d else x2d_pts
        pos = self.pos_proj(self.normalise_x2d(pos_in * sign))  # (N, n, d)
        feats = (values.transpose(-1, -2) + self.query_scale(query)).reshape(N, n, d)
        feats = self.layer(feats, query_pos=pos, key_pos=pos)
        # regroup point-major so that each head's GroupLinear sees its own channels
        feats = feats.reshape(-1, Hh, P, d).transpose(1, 2).reshape(-1, P, Hh * d)
        out = self.corr_reg(feats).reshape(-1, P, Hh, 5).transpose(1, 2).reshape(-1, n, 5)
        noc_sign = torch.ones(N, 1, 3, dtype=out.dtype, device=out.device)
        noc_sign = torch.where(flip.bool()[:, None, None] & (torch.arange(3, device=out.device) == 2), -noc_sign,
                               noc_sign)
        noc = out[..., :3] * noc_sign
        logits = out[..., 3:]
        w2d = logits.softmax(dim=1) * mask.reshape(N, n, 1)
        return PointSubnetOutput(noc[:num_obj], w2d[:num_obj], x2d_pts[:num_obj], logits[:num_obj])
