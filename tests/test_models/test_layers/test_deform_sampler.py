import pytest
import torch
import torch.nn.functional as F

from epropnp_det.models.layers.deform_sampler import (
    EProPnPDeformableAttentionSampler,
    analytic_border_mask,
    apply_homography,
    sample_maps_5d,
)


def ramp_maps(B, C, h, w, stride):
    """maps[b, c] = (c + 1)·x + 2·y + 100·b at cell centres (x, y in continuous pixels)."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) * stride, (torch.arange(w) + 0.5) * stride, indexing='ij')
    c = torch.arange(C, dtype=torch.float64)[None, :, None, None]
    b = torch.arange(B, dtype=torch.float64)[:, None, None, None]
    return (c + 1) * xs + 2 * ys + 100 * b, (lambda x, y, bb, cc: (cc + 1) * x + 2 * y + 100 * bb)


def test_sample_maps_5d_linear_ramp_exact_and_right_image():
    B, C, h, w, s = 3, 4, 5, 7, 8
    maps, f = ramp_maps(B, C, h, w, s)
    N, G, P = 5, 2, 6
    gen = torch.Generator().manual_seed(0)
    # interior locations (between outermost cell centres): bilinear interpolation of a linear map is exact
    loc = torch.stack((s / 2 + torch.rand(N, G, P, generator=gen, dtype=torch.float64) * (w - 1) * s,
                       s / 2 + torch.rand(N, G, P, generator=gen, dtype=torch.float64) * (h - 1) * s), -1)
    img_inds = torch.tensor([2, 0, 1, 2, 0])
    out = sample_maps_5d(maps, loc, img_inds, s, num_groups=G)
    assert out.shape == (N, G, C // G, P)
    for n in range(N):
        for g in range(G):
            for c in range(C // G):
                expect = f(loc[n, g, :, 0], loc[n, g, :, 1], img_inds[n], g * (C // G) + c)
                torch.testing.assert_close(out[n, g, c], expect, rtol=0, atol=1e-9)


def test_sample_maps_5d_equals_per_image_grid_sample_everywhere():
    B, C, h, w, s = 2, 6, 4, 9, 4
    gen = torch.Generator().manual_seed(1)
    maps = torch.randn(B, C, h, w, generator=gen, dtype=torch.float64)
    N, G, P = 4, 3, 5
    loc = torch.rand(N, G, P, 2, generator=gen, dtype=torch.float64) * torch.tensor([w * s + 20., h * s + 20.]) - 10
    img_inds = torch.tensor([1, 0, 0, 1])
    out = sample_maps_5d(maps, loc, img_inds, s, 'border', G)
    for n in range(N):
        for g in range(G):
            grid = (loc[n, g] / torch.tensor([w * s, h * s]) * 2 - 1)[None, None]  # (1, 1, P, 2)
            ref = F.grid_sample(maps[img_inds[n], None, g * 2:(g + 1) * 2], grid, padding_mode='border',
                                align_corners=False)[0, :, 0]
            torch.testing.assert_close(out[n, g], ref, rtol=0, atol=1e-9)


def make_transform(W, crop_y, scale, flip):
    """original-continuous -> augmented-continuous: flip, crop, resize (applied in that order)."""
    T = torch.eye(3, dtype=torch.float64)
    if flip:
        T = torch.tensor([[-1., 0, W], [0, 1, 0], [0, 0, 1]], dtype=torch.float64) @ T
    T = torch.tensor([[1., 0, 0], [0, 1, -crop_y], [0, 0, 1]], dtype=torch.float64) @ T
    return torch.diag(torch.tensor([scale, scale, 1.], dtype=torch.float64)) @ T


def test_homography_x2d_round_trip_and_dense_map_agreement():
    s, B = 4, 2
    W, H, crop_y, scale = 160, 90, 18, 0.5
    Ts = torch.stack([make_transform(W, crop_y, scale, False), make_transform(W, crop_y, scale, True)])
    aug_w, aug_h = int(W * scale), int((H - crop_y) * scale)  # 80 x 36
    img_wh = torch.tensor([[aug_w, aug_h]] * B, dtype=torch.float64)
    sampler = EProPnPDeformableAttentionSampler(embed_dims=16, num_heads=2, num_points=3, stride=s).double()
    gen = torch.Generator().manual_seed(2)
    loc = torch.rand(3, 2, 3, 2, generator=gen, dtype=torch.float64) * torch.tensor([aug_w - s, aug_h - s]) + s / 2
    img_inds = torch.tensor([0, 1, 1])
    x2d, mask = sampler.sample_x2d_and_mask(loc, img_inds, img_wh, img_transforms=Ts)
    assert x2d.shape == (3, 2, 2, 3) and mask.shape == (3, 2, 1, 3)
    back = apply_homography(Ts[img_inds][:, None], x2d.transpose(-1, -2))
    torch.testing.assert_close(back, loc, rtol=0, atol=1e-9)
    # flipped image: x2d_x = W - loc_x / scale
    torch.testing.assert_close(x2d[1, :, 0], W - loc[1, ..., 0] / scale, rtol=0, atol=1e-9)
    # the v1-style dense map (avg-pooled map of original continuous coordinates) agrees in the interior
    ys, xs = torch.meshgrid(torch.arange(aug_h) + 0.5, torch.arange(aug_w) + 0.5, indexing='ij')
    pix = torch.stack((xs, ys), -1).to(torch.float64)
    dense = torch.stack([apply_homography(torch.linalg.inv(T), pix) for T in Ts]).permute(0, 3, 1, 2)
    dense_small = F.avg_pool2d(dense, s)
    mask_small = torch.ones(B, 1, aug_h // s, aug_w // s, dtype=torch.float64)
    sampler.x2d_mode = 'dense_map'
    x2d_d, mask_d = sampler.sample_x2d_and_mask(loc, img_inds, img_wh, dense_x2d=dense_small, dense_mask=mask_small)
    torch.testing.assert_close(x2d_d, x2d, rtol=0, atol=1e-9)
    torch.testing.assert_close(mask_d, torch.ones_like(mask_d))


def test_v1_convention_shifts_half_pixel():
    sampler = EProPnPDeformableAttentionSampler(embed_dims=8, num_heads=1, num_points=1, pixel_convention='v1')
    loc = torch.tensor([[[[10., 20.]]]])
    x2d, _ = sampler.sample_x2d_and_mask(loc, torch.tensor([0]), torch.tensor([[100., 100.]]),
                                         img_transforms=torch.eye(3)[None])
    torch.testing.assert_close(x2d[0, 0, :, 0], torch.tensor([9.5, 19.5]))


def test_analytic_masks():
    s = 8.
    wh = torch.tensor([64., 32.])
    pts = torch.tensor([[4., 16.], [0., 16.], [-4., 16.], [-6., 16.], [68., 16.], [60., 16.], [62., 16.],
                        [12., 16.]])
    sym = analytic_border_mask(pts, wh, s, 'symmetric')
    torch.testing.assert_close(sym, torch.tensor([1., 0.5, 0., 0., 0., 1., 0.75, 1.]))
    v2 = analytic_border_mask(pts, wh, s, 'v2')
    # v2 ramp on the left starts at +s/2 and reaches 1 at 1.5 s
    torch.testing.assert_close(v2, torch.tensor([0., 0., 0., 0., 0., 1., 0.75, 1.]))
    # product over axes
    torch.testing.assert_close(analytic_border_mask(torch.tensor([0., 32.]), wh, s), torch.tensor(0.25))
    with pytest.raises(ValueError, match='mask_ramp'):
        analytic_border_mask(pts, wh, s, 'bad')


def test_forward_shapes_attention_and_gradients():
    torch.manual_seed(0)
    B, C, Hh, P, s = 2, 32, 4, 5, 4
    h, w = 8, 12
    sampler = EProPnPDeformableAttentionSampler(embed_dims=C, num_heads=Hh, num_points=P, stride=s,
                                                ffn_cfg=dict(feedforward_channels=64, ffn_drop=0.))
    N = 3
    emb = torch.randn(N, C)
    ref = torch.tensor([[20., 10.], [30., 16.], [2., 2.]], requires_grad=True)
    out = sampler(emb, torch.randn(N, C), ref, torch.tensor([8., 16., 8.]), torch.tensor([0, 1, 1]),
                  torch.randn(B, C, h, w), torch.randn(B, C, h, w), torch.tensor([[48., 32.], [40., 32.]]),
                  img_transforms=torch.eye(3).expand(B, 3, 3))
    assert out.output.shape == (N, C) and out.query.shape == (N, Hh, 1, C // Hh)
    assert out.values.shape == (N, Hh, C // Hh, P) and out.x2d.shape == (N, Hh, 2, P)
    assert out.mask.shape == (N, Hh, 1, P) and out.loc.shape == (N, Hh, P, 2)
    # identity transform: x2d = loc ; attention = softmax * mask, so sums are <= 1 and == 1 where mask == 1
    torch.testing.assert_close(out.x2d, out.loc.transpose(-1, -2))
    sums = out.attn.sum(-1)
    assert (sums <= 1 + 1e-6).all()
    full = (out.mask == 1).all(-1)
    torch.testing.assert_close(sums[full], torch.ones_like(sums[full]))
    # x2d is differentiable w.r.t. the offsets and the reference point
    (out.x2d.sum() + out.output.sum()).backward()
    assert ref.grad.abs().sum() > 0 and sampler.sampling_offsets.weight.grad.abs().sum() > 0


def test_zero_objects():
    sampler = EProPnPDeformableAttentionSampler(embed_dims=16, num_heads=2, num_points=3)
    maps = torch.randn(1, 16, 4, 4, requires_grad=True)
    out = sampler(torch.zeros(0, 16), torch.zeros(0, 16), torch.zeros(0, 2), torch.zeros(0), torch.zeros(0).long(),
                  maps, maps, torch.tensor([[16., 16.]]), img_transforms=torch.eye(3)[None])
    assert out.output.shape == (0, 16) and out.x2d.shape == (0, 2, 2, 3)
