import torch
import torch.nn.functional as F

from epropnp_det.models.layers import EProPnPDenseBranch, padding_mask


def test_padding_mask_equals_nearest_resize_of_pixel_mask():
    img_wh = torch.tensor([[37., 20.], [48., 25.]])
    H, W, s = 32, 48, 4
    pix = torch.zeros(2, 1, H, W)
    for b, (w, h) in enumerate(img_wh.long().tolist()):
        pix[b, :, h:, :] = 1
        pix[b, :, :, w:] = 1
    ref = F.interpolate(pix, size=(H // s, W // s), mode='nearest')[:, 0].bool()
    assert torch.equal(padding_mask(img_wh, (H // s, W // s), s), ref)


def test_forward_shapes_and_key_depends_on_padding():
    torch.manual_seed(0)
    br = EProPnPDenseBranch(in_channels=8, lvl_feat_channels=(8, 4), out_channels=16, strides=(4, 8, 16),
                            output_stride=4, norm_cfg=dict(type='GN', num_groups=4),
                            positional_encoding=dict(type='EProPnPSinePositionalEncoding', num_feats=8))
    feats = [torch.randn(2, 8, 16, 24), torch.randn(2, 8, 8, 12), torch.randn(2, 8, 4, 6)]
    k, v = br(feats, torch.tensor([[96., 64.], [96., 64.]]), (64, 96))
    assert k.shape == (2, 16, 16, 24) and v.shape == (2, 16, 16, 24)
    k2, v2 = br(feats, torch.tensor([[96., 64.], [60., 40.]]), (64, 96))
    torch.testing.assert_close(v2, v)  # values ignore the padding mask
    torch.testing.assert_close(k2[0], k[0])
    assert not torch.allclose(k2[1], k[1])  # keys carry the positional encoding of the valid region
