"""Object sampler: which FCOS foreground locations become object queries in training (docs/method.md §5.3).

Over the ``M`` points of a batch (all detection levels of all images), with ``N = num_per_img·B`` draws, of which
``n_u = min(round(r·N), #fg)`` are uniform over the foreground without replacement and ``n_r = N − n_u`` follow
the centerness targets with replacement::

    prob     = ctr·fg / Σ ctr·fg            prob_u = fg / #fg            prob_mix = r'·prob_u + (1 − r')·prob
    r'       = n_u / N (the realised mix)
    w_imp    = prob / prob_mix  at the drawn points     importance weights: E[Σ_k w_imp f(x_k)] = N·E_prob[f]
    weights  = w_imp / Σ_{draws of the same gt} w_imp,  then / mean     → every sampled gt carries the same total
    uniform_weights = 1 / count(draws of the same gt), then / mean

The uniform half guarantees coverage of small / low-centerness objects; the importance weights keep the loss an
estimate under the centerness distribution; the per-gt normalisation then weights every sampled gt equally.
"""
from typing import List, NamedTuple, Optional

import torch
from mmdet3d.registry import TASK_UTILS
from torch import Tensor

__all__ = ['EProPnPObjectSampler', 'ObjectSamples', 'gather_gt_fields']


class ObjectSamples(NamedTuple):
    point_inds: Tensor  # (N,) long index into the flattened batch points
    gt_inds: Tensor  # (N,) long batch-global gt index of each draw
    weights: Tensor  # (N,) per-gt-normalised importance weights, mean 1
    uniform_weights: Tensor  # (N,) 1/count per gt, mean 1
    importance: Tensor  # (N,) raw w_imp = prob / prob_mix


def _group_sum(values: Tensor, groups: Tensor, num_groups: Optional[int] = None) -> Tensor:
    """Σ of ``values`` over equal ``groups`` entries, gathered back to every entry: (N,) → (N,). With
    ``num_groups`` (groups in ``[0, num_groups)``) no host synchronisation; without, ``unique`` relabels them."""
    if values.numel() == 0:
        return values
    if num_groups is not None:
        return values.new_zeros(num_groups).index_add_(0, groups, values)[groups]
    _, inverse = torch.unique(groups, return_inverse=True)
    sums = values.new_zeros(int(inverse.max()) + 1).index_add_(0, inverse, values)
    return sums[inverse]


@TASK_UTILS.register_module()
class EProPnPObjectSampler:
    """Draws ``num_per_img·B`` foreground locations with importance weights.

    Args:
        num_per_img: draws per image (48).
        uniform_mix_ratio: target share of uniform draws (0.5).
        eps: floor of normalisers (1e-5).
    """

    def __init__(self, num_per_img: int = 48, uniform_mix_ratio: float = 0.5, eps: float = 1e-5):
        if not 0 <= uniform_mix_ratio <= 1:
            raise ValueError(f'uniform_mix_ratio must be in [0, 1], got {uniform_mix_ratio}')
        self.num_per_img, self.uniform_mix_ratio, self.eps = num_per_img, uniform_mix_ratio, eps

    def __call__(self, fg_mask: Tensor, centerness_targets: Tensor, gt_inds: Tensor, num_imgs: int,
                 generator: Optional[torch.Generator] = None, num_gts: Optional[int] = None) -> ObjectSamples:
        """
        Args:
            fg_mask: (M,) bool, foreground points (label < num_classes).
            centerness_targets: (M,) centerness targets (0 on background).
            gt_inds: (M,) long batch-global index of the assigned gt (ignored on background).
            num_imgs: B.
            generator: optional torch generator for reproducible draws.
            num_gts: number of gts in the batch (``gt_inds < num_gts``); lets the per-gt sums run without a host
                synchronisation.
        """
        device = centerness_targets.device
        fg = fg_mask.to(centerness_targets.dtype)
        num_fg = int(fg_mask.sum())  # one host read: the number of draws without replacement depends on it
        if num_fg == 0:
            empty_l = torch.zeros(0, dtype=torch.long, device=device)
            empty_f = centerness_targets.new_zeros(0)
            return ObjectSamples(empty_l, empty_l, empty_f, empty_f, empty_f)
        N = self.num_per_img * num_imgs
        n_u = min(int(round(self.uniform_mix_ratio * N)), num_fg)
        n_r = N - n_u
        r = n_u / N
        prob = centerness_targets * fg
        prob = prob / prob.sum().clamp(min=self.eps)
        prob_u = fg / max(num_fg, 1)
        prob_mix = r * prob_u + (1 - r) * prob
        parts = []
        if n_u > 0:
            parts.append(torch.multinomial(prob_u, n_u, replacement=False, generator=generator))
        if n_r > 0:
            # all-zero centerness on the foreground would make `prob` invalid: fall back to uniform
            p = torch.where(prob.sum() > 0, prob, prob_u)
            parts.append(torch.multinomial(p, n_r, replacement=True, generator=generator))
        idx = torch.cat(parts)
        w_imp = prob[idx] / prob_mix[idx]
        sample_gt = gt_inds[idx]
        weights = w_imp / _group_sum(w_imp, sample_gt, num_gts).clamp(min=self.eps)
        weights = weights / weights.mean().clamp(min=self.eps)
        uniform = 1 / _group_sum(torch.ones_like(w_imp), sample_gt, num_gts)
        uniform = uniform / uniform.mean().clamp(min=self.eps)
        return ObjectSamples(idx, sample_gt, weights, uniform, w_imp)


def gather_gt_fields(gt3d: list, keep_idx: List[Tensor], gt_inds: Tensor, device,
                     names=('attr_labels', 'velocities', 'velocities_valid')) -> dict:
    """Per-sample targets of optional gt fields: for each name present in every image's ``gt_instances_3d``, the
    kept gts' values (``keep_idx`` per image) concatenated over the batch and indexed by the samples' batch-global
    gt indices ``gt_inds`` (N,)."""
    out = {}
    for name in names:
        if all(name in g for g in gt3d):
            vals = torch.cat([g[name].to(device)[k] for g, k in zip(gt3d, keep_idx)])
            out[name] = vals[gt_inds]
    return out
