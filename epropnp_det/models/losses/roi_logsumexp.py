"""Log-sum-exp / log-softmax of per-RoI maps across overlapping RoIs of the same image (docs/method.md Appendix C).

A RoI map ``X_i`` (c, rh, rw) holds one value per RoIAlign cell of box ``i`` (``aligned=True``: the centre of cell
``(r, k)`` is at ``x1 + (k + 0.5)·w/rw, y1 + (r + 0.5)·h/rh`` in image pixels). For every cell of RoI ``i`` and
every other RoI ``j`` of the same image whose box overlaps box ``i`` (positive-area intersection), ``X_j`` is
evaluated at the cell's image location by bilinear interpolation of its cell grid with border clamping
(``grid_sample(padding_mode='border', align_corners=False)``), or taken as −∞ where the location is not strictly
inside box ``j``; the output is the log-sum-exp over ``{X_i} ∪ {X_j resampled}`` per cell and channel.

The map from ``i``-normalised to ``j``-normalised coordinates (``[-1, 1]`` across the box) is affine per axis:
``g_j = (w_i / w_j)·g_i + 2·(cx_i − x1_j)/w_j − 1`` (``cx_i`` = centre of box ``i``), which is what
docs/method.md Appendix C's intersection-box formula reduces to.

Unlike the reference (a Python loop over images and RoIs), every overlapping ordered pair ``(i, j)`` of the batch
is resampled in ONE ``affine_grid`` + ``grid_sample`` call, and the per-``i`` reduction is a scatter
(``scatter_reduce`` amax for stabilisation, ``index_add`` of the exponentials). Pure torch; CPU and CUDA.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['overlap_matrix', 'overlapping_roi_pairs', 'logsumexp_across_rois', 'logsoftmax_across_rois']


def overlap_matrix(rois: Tensor) -> Tensor:
    """(G, G) bool: RoIs ``i ≠ j`` of the same image whose boxes intersect with positive width and height (no host
    synchronisation).

    Args:
        rois: (G, 5) ``[img_idx, x1, y1, x2, y2]``.
    """
    img = rois[:, 0].round().long()
    boxes = rois[:, 1:5]
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    pos = ((rb - lt) > 0).all(-1) & (img[:, None] == img[None, :])
    return pos.fill_diagonal_(False)


def overlapping_roi_pairs(rois: Tensor) -> Tuple[Tensor, Tensor]:
    """Ordered pairs ``(i, j)`` of :func:`overlap_matrix` (row-major order of the ``G×G`` matrix).

    Args:
        rois: (G, 5) ``[img_idx, x1, y1, x2, y2]``.

    Returns:
        i, j: (P,) long indices.
    """
    i, j = overlap_matrix(rois).nonzero(as_tuple=True)  # host sync: the number of overlapping pairs is data-dependent
    return i, j


def _resample_pairs(x: Tensor, rois: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``X_j`` resampled onto RoI ``i``'s cell grid for every pair: (P, c, rh, rw), −∞ outside box ``j``."""
    P = i.numel()
    _, c, rh, rw = x.shape
    boxes = rois[:, 1:5].to(x.dtype)
    wh_i = boxes[i, 2:] - boxes[i, :2]
    wh_j = boxes[j, 2:] - boxes[j, :2]
    ctr_i = (boxes[i, :2] + boxes[i, 2:]) / 2
    scale = wh_i / wh_j
    shift = 2 * (ctr_i - boxes[j, :2]) / wh_j - 1
    theta = x.new_zeros(P, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [P, 1, rh, rw], align_corners=False)  # (P, rh, rw, 2) in j-normalised coords
    out = F.grid_sample(x[j], grid, mode='bilinear', padding_mode='border', align_corners=False)
    inside = ((grid > -1) & (grid < 1)).all(-1)[:, None]  # open box j
    return out.masked_fill(~inside, float('-inf'))


def logsumexp_across_rois(x: Tensor, rois: Tensor, pairs: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """Per-cell log-sum-exp over each RoI and the overlapping RoIs of its image (see module docstring).

    Args:
        x: (G, c, rh, rw) per-RoI maps (finite values).
        rois: (G, 5) ``[img_idx, x1, y1, x2, y2]`` boxes in any common pixel frame (positive width and height).
        pairs: :func:`overlapping_roi_pairs` of ``rois`` if the caller has them (saves their host sync).

    Returns:
        (G, c, rh, rw); equals ``x`` for RoIs without overlapping partners. Differentiable w.r.t. ``x``.
    """
    if x.dim() != 4 or rois.shape != (x.shape[0], 5):
        raise ValueError(f'x must be (G, c, rh, rw) and rois (G, 5), got {tuple(x.shape)} and {tuple(rois.shape)}')
    if x.shape[0] < 2:
        return x
    i, j = overlapping_roi_pairs(rois) if pairs is None else pairs
    if i.numel() == 0:
        return x
    xj = _resample_pairs(x, rois, i, j)
    # stabilised scatter log-sum-exp; the max is a constant shift (its gradient cancels exactly), so detach it
    m = x.detach().clone().scatter_reduce_(0, i[:, None, None, None].expand_as(xj), xj.detach(), 'amax')
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m).index_add(0, i, torch.exp(xj - m[i]))
    return m + torch.log(s)


def logsoftmax_across_rois(x: Tensor, rois: Tensor, extra_dim: Optional[int] = None,
                           pairs: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """``x − logsumexp_across_rois(x)``, additionally normalised over ``extra_dim`` (e.g. 1 = heads) if given:
    then the softmax is over ``extra_dim`` × the overlapping RoIs jointly, per cell.

    Args:
        x: (G, c, rh, rw); rois: (G, 5); extra_dim: None or a dim of ``x`` (not 0, 2, 3 in practice);
        pairs: as in :func:`logsumexp_across_rois`.
    """
    lse = logsumexp_across_rois(x, rois, pairs)
    if extra_dim is not None:
        lse = lse.logsumexp(dim=extra_dim, keepdim=True)
    return x - lse
