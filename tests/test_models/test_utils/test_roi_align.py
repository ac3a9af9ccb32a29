"""The vectorised CPU RoIAlign equals mmcv's ``roi_align(..., sampling_ratio=0, 'avg', aligned=True)``."""
import pytest
import torch
from mmcv.ops import roi_align as mmcv_roi_align

from epropnp_det.models.utils.roi_align import roi_align_aligned, roi_align_grid_sample


def _rois(num, img_w, img_h, gen, batch=2):
    """Boxes partly or wholly outside the image, zero-width/height ones, and sizes giving mixed sub-grids."""
    b = torch.randint(0, batch, (num, ), generator=gen).double()
    x1 = torch.rand(num, generator=gen, dtype=torch.float64) * 1.4 * img_w - 0.2 * img_w
    y1 = torch.rand(num, generator=gen, dtype=torch.float64) * 1.4 * img_h - 0.2 * img_h
    w = (torch.rand(num, generator=gen, dtype=torch.float64) * img_w - 0.05 * img_w).clamp(min=0)
    h = (torch.rand(num, generator=gen, dtype=torch.float64) * img_h - 0.05 * img_h).clamp(min=0)
    return torch.stack([b, x1, y1, x1 + w, y1 + h], 1)


@pytest.mark.parametrize('hw,size,scale', [((13, 21), (7, 6), 1 / 8), ((1, 1), (3, 2), 1 / 16),
                                           ((40, 64), (28, 28), 1 / 4), ((9, 30), (2, 5), 1.0)])
def test_grid_sample_roi_align_matches_mmcv(hw, size, scale):
    gen = torch.Generator().manual_seed(hash(hw) % 1000)
    x = torch.randn((2, 3) + hw, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _rois(24, hw[1] / scale, hw[0] / scale, gen)
    rois[0, 3] = rois[0, 1]  # an empty box
    ref = mmcv_roi_align(x, rois, size, scale, 0, 'avg', True)
    out = roi_align_grid_sample(x, rois, size, scale)
    assert out.shape == ref.shape == (24, 3) + size
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    assert ref.abs().max() > 0.1  # the comparison is not between zeros
    gy = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    g_ref, = torch.autograd.grad(ref, x, gy)
    g_out, = torch.autograd.grad(out, x, gy)
    assert torch.allclose(g_out, g_ref, rtol=0, atol=1e-12)
    assert g_ref.abs().max() > 0.1


def test_roi_align_aligned_dispatch_and_empty():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    rois = torch.tensor([[0., 4., 4., 40., 30.]])
    with torch.no_grad():  # forward-only: mmcv's kernel; same numbers
        a = roi_align_aligned(x, rois, (5, 5), 1 / 8)
    b = roi_align_aligned(x, rois, (5, 5), 1 / 8)
    assert b.requires_grad and torch.allclose(a, b, atol=1e-6)
    empty = roi_align_aligned(x, rois[:0], (5, 5), 1 / 8)
    assert empty.shape == (0, 4, 5, 5)
    empty.sum().backward()  # connected to x's graph (zero gradient)
    assert x.grad is not None and x.grad.abs().max() == 0
