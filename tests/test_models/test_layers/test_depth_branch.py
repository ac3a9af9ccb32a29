"""v2 dense depth branch (docs/method.md §10.12): coder round trip, sampling vs a direct grid_sample at known points,
exclusion of points outside the crop (fix of docs/method.md §13.16), init, and the loss wiring."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from epropnp_det.models.layers.depth_branch import EProPnPDepthBranch
from epropnp_det.models.task_modules.depth_coder import EProPnPCamAwareLinearCoder


def test_cam_aware_linear_coder_round_trip_and_formula():
    coder = EProPnPCamAwareLinearCoder(depth_mean=15., depth_std=15., focal_ref=1260.)
    gen = torch.Generator().manual_seed(0)
    depth = torch.rand(50, dtype=torch.float64, generator=gen) * 80 + 0.1
    focal = torch.rand(50, dtype=torch.float64, generator=gen) * 1500 + 300
    code = coder.encode(depth, focal)
    torch.testing.assert_close(coder.decode(code, focal), depth, rtol=1e-12, atol=1e-12)
    # depth = (code·15 + 15)·f/1260: code 0 at f = 1260 is 15 m; at f = 630 it is 7.5 m
    torch.testing.assert_close(coder.decode(torch.zeros(2, dtype=torch.float64),
                                            torch.tensor([1260., 630.], dtype=torch.float64)),
                               torch.tensor([15., 7.5], dtype=torch.float64))
    torch.testing.assert_close(coder.encode(torch.tensor(45.), 1260.), torch.tensor(2.))
    with pytest.raises(ValueError):
        EProPnPCamAwareLinearCoder(depth_std=0.)


def _branch(**kw):
    torch.manual_seed(0)
    br = EProPnPDepthBranch(embed_dims=8, num_layers=2, num_modes=4, loss_depth=None, **kw)
    br.init_weights()
    return br


def test_init_zero_mixture_logits_and_layout():
    br = _branch()
    last = br.mlp[-1]
    assert last.weight.shape == (8, 8)
    # rows 1, 3, 5, 7 (mode-major: [code_m, logit_m]) are zero → uniform mixture at init
    assert torch.all(last.weight[1::2] == 0) and torch.any(last.weight[0::2] != 0)
    codes, logits = br(torch.randn(1, 8, 4, 4), torch.tensor([[5., 6.]]), torch.tensor([0]), 8)
    torch.testing.assert_close(logits, torch.zeros(1, 4))
    assert codes.shape == (1, 4)


def test_point_selection_and_sampling_match_direct_grid_sample():
    """Points given in original K-projections (v1 / v2 conventions), mapped through flip+crop img_transforms,
    sampled from the value map; compare with F.grid_sample of each image at the hand-computed locations."""
    B, C, h, w, s = 2, 8, 4, 6, 8              # padded image 48 x 32 px
    img_wh = torch.tensor([[48., 30.], [40., 32.]])
    W0 = 60.
    T0 = torch.tensor([[1., 0, -5], [0, 1, -10], [0, 0, 1]], dtype=torch.float64)           # crop (5, 10)
    T1 = torch.tensor([[-1., 0, W0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)            # flip of width 60
    T1 = torch.tensor([[1., 0, -12], [0, 1, 0], [0, 0, 1]], dtype=torch.float64) @ T1      # then crop (12, 0)
    K = torch.tensor([[[500., 0, 30], [0, 520, 20], [0, 0, 1]]] * 2, dtype=torch.float64)
    pts0 = torch.tensor([[10., 15., 5.], [54., 40., 8.], [4.9, 12., 3.], [20.25, 39.9, 12.]], dtype=torch.float64)
    pts1 = torch.tensor([[30., 5., 7.], [7.9, 31.9, 9.], [50.5, 2., 2.]], dtype=torch.float64)
    vmap = torch.randn(B, C, h, w, dtype=torch.float64)
    for conv, off in (('v2', 0.0), ('v1', 0.5)):
        br = _branch(pixel_convention=conv).double()
        sel = br.select_points([pts0, pts1], K, torch.stack((T0, T1)), img_wh)
        assert sel.num_total == 7
        expect_loc, expect_z, expect_b = [], [], []
        for b, (pts, T) in enumerate(((pts0, T0), (pts1, T1))):
            for u, v, z in pts.tolist():
                p = T @ torch.tensor([u + off, v + off, 1.], dtype=torch.float64)
                x, y = (p[:2] / p[2]).tolist()
                # outside the crop: excluded (docs/method.md §13.16)
                if 0 <= x < img_wh[b, 0] and 0 <= y < img_wh[b, 1]:
                    expect_loc.append([x, y])
                    expect_z.append(z)
                    expect_b.append(b)
        assert len(expect_loc) < 7  # the example has points outside the crop
        torch.testing.assert_close(sel.loc, torch.tensor(expect_loc, dtype=torch.float64))
        torch.testing.assert_close(sel.depth, torch.tensor(expect_z, dtype=torch.float64))
        assert sel.img_inds.tolist() == expect_b
        torch.testing.assert_close(sel.focal, torch.full((len(expect_b),), 510., dtype=torch.float64))
        feat = torch.stack([F.grid_sample(vmap[b:b + 1], (torch.tensor([[x, y]], dtype=torch.float64)
                                                           * 2 / torch.tensor([w * s, h * s]) - 1)[None, None],
                                          align_corners=False, padding_mode='border')[0, :, 0, 0]
                            for (x, y), b in zip(expect_loc, expect_b)])
        codes, logits = br(vmap, sel.loc, sel.img_inds, s)
        out = br.mlp(feat).reshape(-1, 4, 2)
        torch.testing.assert_close(codes, out[..., 0])
        torch.testing.assert_close(logits, out[..., 1])


class _RecordingLoss(torch.nn.Module):
    """Stands in for the MVD loss: records its inputs, returns Σ|pred − target|·softmax(mix) / avg."""

    def forward(self, pred, target, log_mix=None, avg_factor=None):
        self.args = (pred, target, log_mix, avg_factor)
        return ((pred - target).abs()[..., 0] * log_mix.exp()).sum() / avg_factor


def test_loss_decodes_depth_and_averages_by_points(monkeypatch):
    br = _branch()
    br.loss_depth = _RecordingLoss()
    K = torch.tensor([[[800., 0, 20], [0, 700, 10], [0, 0, 1]]])
    pts = torch.tensor([[3., 4., 10.], [30., 4., 20.], [-1., 2., 5.]])  # last two outside the 24 x 16 image
    vmap = torch.randn(1, 8, 2, 3, requires_grad=True)
    out = br.loss(vmap, [pts], K, torch.eye(3)[None], torch.tensor([[24., 16.]]), 8)
    pred, target, logmix, avg = br.loss_depth.args
    assert pred.shape == (1, 4, 1) and target.shape == (1, 1, 1) and float(avg) == 1.0
    codes, logits = br(vmap, torch.tensor([[3., 4.]]), torch.tensor([0]), 8)
    torch.testing.assert_close(pred[..., 0], (codes * 15 + 15) * (750 / 1260))
    torch.testing.assert_close(logmix, logits.log_softmax(-1))
    assert float(target) == 10. and float(out['num_depth_pts']) == 1
    out['loss_depth'].backward()
    assert vmap.grad.abs().sum() > 0
    # no point inside the image: zero loss that still reaches every parameter
    br.zero_grad()
    out = br.loss(vmap, [pts[1:]], K, torch.eye(3)[None], torch.tensor([[24., 16.]]), 8)
    assert float(out['loss_depth'].detach()) == 0 and float(out['num_depth_pts']) == 0
    out['loss_depth'].backward()
    assert all(p.grad is not None for p in br.parameters())


def test_predict_depth_best_mode():
    br = _branch()
    with torch.no_grad():
        br.mlp[-1].bias.copy_(torch.tensor([0., -5., 1., 5., -1., 0., 2., -5.]))  # best mode = 1 (code 1)
        br.mlp[-1].weight.zero_()
    K = torch.tensor([[[1260., 0, 20], [0, 1260, 10], [0, 0, 1]]])
    d = br.predict_depth(torch.randn(1, 8, 2, 3), torch.tensor([[3., 4.]]), torch.tensor([0]), K, 8)
    np.testing.assert_allclose(d.numpy(), [30.])


def test_depth_maps_at_cell_centres_use_the_cell_features():
    br = _branch()
    vmap = torch.randn(2, 8, 3, 5)
    K = torch.tensor([[[800., 0, 20], [0, 700, 10], [0, 0, 1]], [[1260., 0, 20], [0, 1260, 10], [0, 0, 1]]])
    maps = br.predict_depth_maps(vmap, K, 8)
    assert maps.shape == (2, 3, 5)
    out = br.mlp(vmap.permute(0, 2, 3, 1)).reshape(2, 3, 5, 4, 2)
    best = out[..., 0].gather(-1, out[..., 1].argmax(-1, keepdim=True))[..., 0]
    focal = torch.tensor([750., 1260.])[:, None, None]
    torch.testing.assert_close(maps, (best * 15 + 15) * focal / 1260)
