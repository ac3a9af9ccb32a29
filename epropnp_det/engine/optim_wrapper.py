"""Optimizer wrapper that survives non-finite gradients (spec §8.2).

Per update: global L2 norm over all parameters with gradients; if it is NaN/Inf **all gradients are set to 0**
and the optimizer still steps (Adam moments decay and weight decay applies, as in the original
``OptimizerHookMod``); otherwise gradients are scaled by ``max_norm / (norm + 1e-6)`` when that is < 1
(``torch.nn.utils.clip_grad_norm_`` semantics). Skipped steps are counted and published to the message hub as
``train/nonfinite_grad_steps`` (cumulative), which mmengine's ``LogProcessor`` logs with the other ``train/``
scalars; ``train/grad_norm`` is logged as usual (NaN/Inf when skipped).
"""
import math
from typing import List, Optional

import torch
from mmdet3d.registry import OPTIM_WRAPPERS
from mmengine.optim import OptimWrapper
from torch.optim import Optimizer

__all__ = ['EProPnPOptimWrapper', 'nan_safe_clip_grad_norm_']


def nan_safe_clip_grad_norm_(params: List[torch.Tensor], max_norm: Optional[float],
                             norm_type: float = 2.0) -> torch.Tensor:
    """Clip like ``clip_grad_norm_`` but zero every gradient when the total norm is not finite.

    Args:
        params: parameters whose ``.grad`` are not None.
        max_norm: clip threshold (None: only the non-finite check).
        norm_type: p of the norm.

    Returns:
        the total norm before clipping (0-d tensor, possibly NaN/Inf).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.)
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float(), norm_type) for g in grads])
    total = torch.linalg.vector_norm(norms, norm_type) if norm_type != math.inf else norms.max()
    if not torch.isfinite(total):
        for g in grads:
            g.zero_()
    elif max_norm is not None:
        coef = max_norm / (total + 1e-6)
        if coef < 1:
            for g in grads:
                g.mul_(coef.to(g.dtype))
    return total


@OPTIM_WRAPPERS.register_module()
class EProPnPOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with NaN/Inf-safe gradient clipping.

    Args:
        optimizer: the wrapped optimizer.
        clip_grad: ``dict(max_norm=5.0, norm_type=2)`` (only norm clipping is supported); None: no clipping but
            the non-finite check still runs.
        **kwargs: forwarded to ``OptimWrapper`` (e.g. ``accumulative_counts``).
    """

    def __init__(self, optimizer: Optimizer, clip_grad: Optional[dict] = dict(max_norm=5.0, norm_type=2),
                 **kwargs):
        clip_grad = dict(clip_grad) if clip_grad else None
        if clip_grad is not None and clip_grad.get('type', 'norm') != 'norm':
            raise ValueError(f"EProPnPOptimWrapper.clip_grad supports type='norm' only, got {clip_grad['type']!r}")
        super().__init__(optimizer, clip_grad=clip_grad, **kwargs)
        self.num_nonfinite_steps = 0

    def step(self, **kwargs) -> None:
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        kw = dict(self.clip_grad_kwargs or {})
        kw.pop('type', None)
        total = nan_safe_clip_grad_norm_(params, kw.get('max_norm'), kw.get('norm_type', 2.0))
        if not torch.isfinite(total):
            self.num_nonfinite_steps += 1
        self.message_hub.update_scalar('train/grad_norm', float(total))
        self.message_hub.update_scalar('train/nonfinite_grad_steps', self.num_nonfinite_steps)
        self.optimizer.step(**kwargs)
