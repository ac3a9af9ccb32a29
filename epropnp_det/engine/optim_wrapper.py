"""Optimizer wrapper that survives non-finite gradients (docs/method.md §8.2).

Per update: global L2 norm over all parameters with gradients; if it is NaN/Inf **all gradients are set to 0**
and the optimizer still steps (Adam moments decay and weight decay applies, as in the original
``OptimizerHookMod``); otherwise gradients are scaled by ``max_norm / (norm + 1e-6)`` when that is < 1
(``torch.nn.utils.clip_grad_norm_`` semantics). Skipped steps are counted and published to the message hub as
``train/nonfinite_grad_steps`` (cumulative), which mmengine's ``LogProcessor`` logs with the other ``train/``
scalars; ``train/grad_norm`` is logged as usual (NaN/Inf when skipped).
"""
import math
from contextlib import contextmanager
from typing import List, Optional

import torch
from mmdet3d.registry import OPTIM_WRAPPERS
from mmengine.optim import OptimWrapper
from torch.optim import Optimizer

__all__ = ['EProPnPOptimWrapper', 'EProPnPAmpOptimWrapper', 'nan_safe_clip_grad_norm_']


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
    # one host read (the norm is logged anyway); the clip factor min(1, max_norm / (norm + 1e-6)) stays on the
    # device and multiplies all gradients in one foreach launch
    if not math.isfinite(float(total)):
        for g in grads:
            g.zero_()
    elif max_norm is not None:
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
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

    def _clip_and_count(self) -> torch.Tensor:
        """NaN-safe clipping of every gradient; counts and publishes non-finite steps. Returns the norm."""
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        kw = dict(self.clip_grad_kwargs or {})
        kw.pop('type', None)
        total = nan_safe_clip_grad_norm_(params, kw.get('max_norm'), kw.get('norm_type', 2.0))
        total_f = float(total)  # for logging; the device has already been waited for by the clip
        if not math.isfinite(total_f):
            self.num_nonfinite_steps += 1
        self.message_hub.update_scalar('train/grad_norm', total_f)
        self.message_hub.update_scalar('train/nonfinite_grad_steps', self.num_nonfinite_steps)
        return total

    def step(self, **kwargs) -> None:
        self._clip_and_count()
        self.optimizer.step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class EProPnPAmpOptimWrapper(EProPnPOptimWrapper):
    """Mixed precision with the NaN-safe update of :class:`EProPnPOptimWrapper` (``tools/train.py --amp``).

    The forward runs under ``torch.autocast`` of the parameters' device type: fp16 (CUDA, with a dynamic
    ``GradScaler``) or bf16 (CUDA or CPU, no scaler needed). The geometry and the whole PnP layer opt out of
    autocast and run in float32 (:mod:`epropnp_det.ops.pnp._amp`). Each step: unscale (fp16), NaN-safe clipping
    (a non-finite norm zeroes every gradient and counts the step, as without AMP), then the scaler's step, which
    also skips the update when the scaled gradients overflowed, and its scale update.

    Why not mmengine's ``AmpOptimWrapper``: it only runs on accelerators and clips with the plain
    ``clip_grad_norm_``, which lets a non-finite norm through to the weights when the loss scaler is off (bf16).

    Args:
        optimizer: the wrapped optimizer.
        dtype: ``'float16'`` or ``'bfloat16'`` (or the torch dtype).
        loss_scale: fp16 only: ``'dynamic'``, an initial scale (float) or ``GradScaler`` kwargs (dict).
        clip_grad, **kwargs: as :class:`EProPnPOptimWrapper`.
    """

    def __init__(self, optimizer: Optimizer, dtype='float16', loss_scale='dynamic', **kwargs):
        super().__init__(optimizer, **kwargs)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"EProPnPAmpOptimWrapper.dtype must be 'float16' or 'bfloat16', got {dtype}")
        self.cast_dtype = dtype
        params = [p for g in optimizer.param_groups for p in g['params']]
        self.device_type = params[0].device.type if params else 'cpu'
        self.loss_scaler = None
        if dtype == torch.float16:
            if loss_scale == 'dynamic':
                scaler_kw = {}
            elif isinstance(loss_scale, (int, float)):
                scaler_kw = dict(init_scale=float(loss_scale), growth_interval=2 ** 31 - 1)  # fixed scale
            elif isinstance(loss_scale, dict):
                scaler_kw = dict(loss_scale)
            else:
                raise TypeError(f"loss_scale must be 'dynamic', a float or a dict, got {loss_scale!r}")
            self.loss_scaler = torch.amp.GradScaler(self.device_type, **scaler_kw)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            return super().step(**kwargs)
        self.loss_scaler.unscale_(self.optimizer)
        self._clip_and_count()
        self.loss_scaler.step(self.optimizer, **kwargs)  # skipped if the unscaled gradients held Inf/NaN
        self.loss_scaler.update()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        """Gradient-accumulation context of the base class plus autocast on the parameters' device type."""
        with super().optim_context(model), torch.autocast(self.device_type, dtype=self.cast_dtype):
            yield
