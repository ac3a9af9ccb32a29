"""Log-sum-exp / log-softmax across overlapping RoIs (docs/method.md Appendix C) vs a brute-force per-cell
computation."""
import math

import torch

from epropnp_det.models.losses.roi_logsumexp import logsoftmax_across_rois, logsumexp_across_rois, overlapping_roi_pairs


def _random_rois(num_imgs, per_img, gen, size=60.):
    rois = []
    for b in range(num_imgs):
        xy1 = torch.rand(per_img, 2, generator=gen, dtype=torch.float64) * size
        wh = 5 + torch.rand(per_img, 2, generator=gen, dtype=torch.float64) * size * 0.6
        rois.append(torch.cat((torch.full((per_img, 1), float(b), dtype=torch.float64), xy1, xy1 + wh), 1))
    return torch.cat(rois)


def _bilinear_border(grid_vals, u, v):
    """Bilinear value of a (c, rh, rw) cell grid at continuous cell coordinates (u, v) (cell centres at integers),
    clamped to the outermost centres (border padding)."""
    c, rh, rw = grid_vals.shape
    u = min(max(u, 0.0), rw - 1.0)
    v = min(max(v, 0.0), rh - 1.0)
    u0, v0 = int(math.floor(u)), int(math.floor(v))
    u1, v1 = min(u0 + 1, rw - 1), min(v0 + 1, rh - 1)
    du, dv = u - u0, v - v0
    return ((1 - du) * (1 - dv) * grid_vals[:, v0, u0] + du * (1 - dv) * grid_vals[:, v0, u1] +
            (1 - du) * dv * grid_vals[:, v1, u0] + du * dv * grid_vals[:, v1, u1])


def _brute_force(x, rois):
    """For every cell of every RoI: its image location; every other RoI of the same image is evaluated there
    (bilinear, border clamp) if the point is strictly inside that box, else −inf; log-sum-exp with the own value."""
    G, c, rh, rw = x.shape
    out = torch.empty_like(x)
    for i in range(G):
        bi, x1, y1, x2, y2 = rois[i].tolist()
        for r in range(rh):
            for k in range(rw):
                px = x1 + (k + 0.5) * (x2 - x1) / rw
                py = y1 + (r + 0.5) * (y2 - y1) / rh
                vals = [x[i, :, r, k]]
                for j in range(G):
                    bj, u1, v1, u2, v2 = rois[j].tolist()
                    if j == i or bj != bi:
                        continue
                    if u1 < px < u2 and v1 < py < v2:
                        u = (px - u1) / (u2 - u1) * rw - 0.5
                        v = (py - v1) / (v2 - v1) * rh - 0.5
                        vals.append(_bilinear_border(x[j], u, v))
                    else:
                        vals.append(torch.full((c,), -math.inf, dtype=x.dtype))
                out[i, :, r, k] = torch.stack(vals).logsumexp(0)
    return out


def test_logsumexp_across_rois_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    rois = _random_rois(3, 5, gen)
    x = torch.randn(len(rois), 2, 6, 5, generator=gen, dtype=torch.float64) * 3
    i, j = overlapping_roi_pairs(rois)
    assert len(i) >= 6  # the random boxes do overlap (within images only)
    assert (rois[i, 0] == rois[j, 0]).all() and (i != j).all()
    ref = _brute_force(x, rois)
    out = logsumexp_across_rois(x, rois)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # RoIs without partners are unchanged; with partners the value can only grow
    assert (out >= x - 1e-12).all()
    lone = torch.tensor([k not in i.tolist() for k in range(len(rois))])
    torch.testing.assert_close(out[lone], x[lone])


def test_logsumexp_across_rois_float32_and_no_overlap():
    gen = torch.Generator().manual_seed(1)
    rois = _random_rois(2, 4, gen).float()
    x = torch.randn(len(rois), 3, 4, 7, generator=gen)
    torch.testing.assert_close(logsumexp_across_rois(x, rois), _brute_force(x.double(), rois.double()).float(),
                               rtol=1e-5, atol=1e-5)
    far = torch.tensor([[0, 0, 0, 10, 10], [0, 20, 20, 30, 30], [1, 0, 0, 10, 10]], dtype=torch.float32)
    y = torch.randn(3, 2, 3, 3)
    assert torch.equal(logsumexp_across_rois(y, far), y)
    assert logsumexp_across_rois(y[:0], far[:0]).shape == (0, 2, 3, 3)


def test_identical_boxes_add_exactly():
    """Two identical boxes: cell grids coincide, so the result is log(exp(a) + exp(b)) cell by cell."""
    rois = torch.tensor([[0, 10., 5., 40., 25.], [0, 10., 5., 40., 25.]], dtype=torch.float64)
    x = torch.randn(2, 1, 4, 6, dtype=torch.float64)
    out = logsumexp_across_rois(x, rois)
    both = torch.logaddexp(x[0], x[1])
    torch.testing.assert_close(out[0], both)
    torch.testing.assert_close(out[1], both)


def test_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(2)
    rois = _random_rois(1, 4, gen, size=20.)
    x = torch.randn(len(rois), 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: logsumexp_across_rois(t, rois), (x,))
    assert torch.autograd.gradcheck(lambda t: logsoftmax_across_rois(t, rois, extra_dim=1), (x,))


def test_logsoftmax_across_rois_definition():
    gen = torch.Generator().manual_seed(3)
    rois = _random_rois(2, 4, gen)
    x = torch.randn(len(rois), 8, 5, 5, generator=gen, dtype=torch.float64)
    ref = _brute_force(x, rois)
    torch.testing.assert_close(logsoftmax_across_rois(x, rois), x - ref)
    out = logsoftmax_across_rois(x, rois, extra_dim=1)
    torch.testing.assert_close(out, x - ref.logsumexp(1, keepdim=True))
    # a lone RoI is a plain log-softmax over the extra dim
    lone = torch.tensor([[0, 0, 0, 10, 10.]], dtype=torch.float64)
    torch.testing.assert_close(logsoftmax_across_rois(x[:1], lone, extra_dim=1), x[:1].log_softmax(1))
