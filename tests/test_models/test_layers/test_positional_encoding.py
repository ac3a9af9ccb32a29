import math

import torch

from epropnp_det.models.layers import EProPnPSinePositionalEncoding


def test_dense_map_channel_values():
    pe = EProPnPSinePositionalEncoding(num_feats=8)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[:, :, 4] = True  # last column is padding
    out = pe(mask)
    assert out.shape == (1, 16, 3, 5)
    # channel 8 = sin(x_embed), x_embed = (c_x - 0.5) / (c_x_last + eps) * 2pi, c_x_last = 4 valid cells
    for j in range(4):
        expect = math.sin((j + 1 - 0.5) / (4 + 1e-6) * 2 * math.pi)
        assert abs(out[0, 8, 1, j].item() - expect) < 1e-5
    # channel 1 = cos(y_embed / 10000^(2*0/8)), channel 3 = cos(y_embed / 10000^(2/8))
    y_embed = (3 - 0.5) / (3 + 1e-6) * 2 * math.pi
    assert abs(out[0, 1, 2, 0].item() - math.cos(y_embed)) < 1e-5
    assert abs(out[0, 3, 2, 0].item() - math.cos(y_embed / 10000 ** 0.25)) < 1e-5


def test_points_to_enc_matches_dense_map_at_cell_centres():
    pe = EProPnPSinePositionalEncoding(num_feats=16)
    h, w, stride = 6, 10, 8
    dense = pe(torch.zeros(1, h, w, dtype=torch.bool))[0].permute(1, 2, 0)  # (h, w, 32)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    pts = torch.stack(((xs + 0.5) * stride, (ys + 0.5) * stride), dim=-1).float()
    enc = pe.points_to_enc(pts, (h * stride, w * stride))
    assert enc.shape == (h, w, 32)
    torch.testing.assert_close(enc, dense, atol=2e-5, rtol=0)


def test_points_to_enc_broadcasts_per_point_shapes():
    pe = EProPnPSinePositionalEncoding(num_feats=4)
    pts = torch.tensor([[10., 20.], [10., 20.]])
    enc = pe.points_to_enc(pts, torch.tensor([[40., 80.], [80., 40.]]))
    # point 0: x_embed = 10/80*2pi, point 1: x_embed = 10/40*2pi; x part starts at channel 4
    assert abs(enc[0, 4].item() - math.sin(10 / 80 * 2 * math.pi)) < 1e-6
    assert abs(enc[1, 4].item() - math.sin(10 / 40 * 2 * math.pi)) < 1e-6
    assert abs(enc[0, 0].item() - math.sin(20 / 40 * 2 * math.pi)) < 1e-6
