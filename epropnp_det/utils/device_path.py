"""Where the CPU and the device (CUDA) code paths differ, and a switch that runs the device path on the CPU.

A few functions pick a CPU-only implementation because it is faster or free there, and its host reads cost
nothing on the CPU:

* :func:`~epropnp_det.models.utils.roi_align.roi_align_aligned`: a vectorised ``grid_sample`` RoIAlign with
  gradient (mmcv's CPU backward is a serial loop);
* :class:`~epropnp_det.models.task_modules.log_dim_coder.EProPnPMultiClassLogDimCoder`: a label-range check;
* the PnP solver's RSLM subset sampler (a guide table; ``searchsorted`` on a device) and its differentiable GN
  step (planes; stacked matrices on a device);
* the PnP layer's native C++ kernels (:mod:`epropnp_det.ops.pnp._native`: CPU tensors only; torch ops on a device).

:func:`emulate_device_path` makes the project's switches take the device branch on CPU tensors, so that
``tools/benchmarks/step_overhead.py --device-path`` counts the host synchronisations of the code that runs on a
GPU on a machine without one (the PnP solver's switches and ``_native.enabled`` are patched by that tool, as the
sync tests do: the torch-only PnP library imports nothing from here). Both branches give the same results (their tests).
"""
import contextlib
from typing import Iterator

from torch import Tensor

__all__ = ['emulate_device_path', 'on_device_path']

_EMULATE = [False]


def on_device_path(t: Tensor) -> bool:
    """True if code should take its device (GPU) branch for ``t``: ``t`` is not on the CPU, or
    :func:`emulate_device_path` is active."""
    return t.device.type != 'cpu' or _EMULATE[0]


@contextlib.contextmanager
def emulate_device_path() -> Iterator[None]:
    """Inside the block, :func:`on_device_path` is True for CPU tensors too."""
    prev, _EMULATE[0] = _EMULATE[0], True
    try:
        yield
    finally:
        _EMULATE[0] = prev
