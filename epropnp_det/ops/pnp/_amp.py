"""Mixed precision boundary of the PnP layer: every public entry point runs in float32 with autocast off.

Why: under ``torch.autocast`` (fp16 on CUDA, bf16 on CUDA or the CPU) matmuls and reductions would run in half
precision inside the solver (``cholesky`` has no half kernel at all, and the Huber cost of 256 points in metres
and pixels loses most of its digits in fp16). The network around the layer keeps its half-precision
convolutions; at the boundary, :func:`fp32` disables autocast for the call and casts half-precision tensor
arguments (including the tensors of a :class:`~.types.CameraParams`) to float32. Gradients flow back through the
casts to the half-precision producers. Outside autocast the decorator only checks two flags.
"""
import contextlib
import functools

import torch

from .types import CameraParams

__all__ = ['fp32', 'autocast_active']

_HALF = (torch.float16, torch.bfloat16)


def autocast_active() -> bool:
    """Whether autocast is on for the CUDA or the CPU device type."""
    return torch.is_autocast_enabled('cuda') or torch.is_autocast_enabled('cpu')


def _cast(v):
    if isinstance(v, torch.Tensor) and v.dtype in _HALF:
        return v.float()
    if isinstance(v, CameraParams) and v.cam_mats.dtype in _HALF:
        return v.to(torch.float32)
    if isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) and x.dtype in _HALF for x in v):
        return type(v)(_cast(x) for x in v)
    return v


def fp32(fn):
    """Run ``fn`` with autocast disabled and its half-precision tensor arguments cast to float32."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not autocast_active() and not any(isinstance(a, torch.Tensor) and a.dtype in _HALF for a in args):
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for dev in ('cuda', 'cpu'):
                if torch.is_autocast_enabled(dev):
                    stack.enter_context(torch.autocast(dev, enabled=False))
            return fn(*[_cast(a) for a in args], **{k: _cast(v) for k, v in kwargs.items()})
    return wrapper
