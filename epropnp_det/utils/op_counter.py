"""Count the aten ops a piece of code launches and the host synchronisations it makes (torch only).

Why: on a GPU every aten op is a kernel launch (a few µs of host time each), and every host synchronisation
stalls the CPU until the GPU has caught up, so both are the fixed per-step overhead of a train step. Both can be
counted on the CPU as well: an op is dispatched the same way on either device, and the ops that synchronise on
CUDA are known by name. This is how ``tools/benchmarks/step_overhead.py`` and the tests that keep the PnP layer
free of synchronisation measure them.

What counts as a synchronisation (:data:`SYNC_OPS`, plus the cases below):

* ``aten::_local_scalar_dense`` (``.item()``, ``int(t)``, ``float(t)``, ``bool(t)``, ``if t:``), ``aten::nonzero``,
  ``aten::masked_select``, ``aten::unique*``, ``aten::repeat_interleave`` without ``output_size`` and
  ``aten::equal``/``aten::is_nonzero`` — their output (or its shape) is only known after the GPU has run;
* indexing or ``index_put_`` with a boolean mask (``x[mask]``, ``x[mask] = v``): a ``nonzero`` in disguise;
* a copy to the host (``.cpu()``, ``.to('cpu')``, ``.tolist()``, ``.numpy()``) of a device tensor; on the CPU,
  where these are no-ops without dispatch, ``Tensor.tolist`` / ``Tensor.numpy`` are counted at the Python level
  so that CPU and GPU runs report the same sites.

Host data entering the device (``torch.tensor(list)``, ``torch.as_tensor(tuple, device=...)``: ``aten::lift_fresh``
or a copy from the CPU to a device) is listed separately in ``h2d``: not a synchronisation, but it cannot be
captured in a CUDA graph and costs a pageable copy per call.

Each synchronisation is recorded with the innermost source line outside torch (``file:line``), so a report can
name the line that has to justify itself.
"""
import os
import traceback
from collections import Counter
from typing import Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['SYNC_OPS', 'OpCounter']

SYNC_OPS = frozenset({
    'aten::_local_scalar_dense', 'aten::nonzero', 'aten::masked_select', 'aten::_unique', 'aten::_unique2',
    'aten::unique_dim', 'aten::unique_consecutive', 'aten::equal', 'aten::is_nonzero',
    'aten::_assert_async', 'aten::histc',
})
_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS = os.path.abspath(__file__)


def _op_name(func) -> str:
    return f'aten::{func._schema.name.split("::")[-1]}' if hasattr(func, '_schema') else str(func)


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else None
    return isinstance(indices, (list, tuple)) and any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _any_device_tensor(args) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type != 'cpu':
            return True
        if isinstance(a, (list, tuple)) and _any_device_tensor(a):
            return True
    return False


def _caller(skip_prefixes=(_TORCH_DIR,)) -> str:
    """Innermost frame outside torch and this file, as ``path:line`` relative to the working directory."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        fname = os.path.abspath(frame.filename)
        if fname == _THIS or fname.startswith(skip_prefixes) or '/torch/' in fname:
            continue
        try:
            rel = os.path.relpath(fname)
        except ValueError:
            rel = fname
        return f'{rel if not rel.startswith("..") else fname}:{frame.lineno}'
    return '<unknown>'


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` counts aten ops and host synchronisations of the code inside.

    Attributes (after the block):
        ops: total aten ops dispatched (each is one kernel launch on CUDA; views included).
        by_op: :class:`collections.Counter` op name -> count.
        syncs: list of ``(reason, 'file:line')`` in call order (see the module docstring).
    Args:
        record_sites: record the source line of each sync (a stack walk per sync; ops are never walked).
        host_is_device: count reads of CPU tensors (``.item()``, ``.tolist()``, ``nonzero`` ...) as syncs, as they
            would be if the run were on a GPU (default for CPU runs). False for GPU runs: only reads of device
            tensors count there (metadata kept on the CPU is no synchronisation).
    """

    def __init__(self, record_sites: bool = True, host_is_device: bool = True):
        super().__init__()
        self.record_sites = record_sites
        self.host_is_device = host_is_device
        self.ops = 0
        self.by_op: Counter = Counter()
        self.syncs: List[tuple] = []
        self.h2d: List[tuple] = []
        self._patched: Dict[str, object] = {}

    # -- dispatch --------------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        self.ops += 1
        self.by_op[name] += 1
        reason = None
        if not self.host_is_device and not _any_device_tensor(args):
            pass
        elif name in SYNC_OPS:
            reason = name
        elif name == 'aten::repeat_interleave' and kwargs.get('output_size') is None:
            reason = 'aten::repeat_interleave without output_size'
        elif name in ('aten::index', 'aten::index_put', 'aten::index_put_', 'aten::_index_put_impl_') \
                and _has_bool_index(args):
            reason = f'{name} with a boolean mask'
        elif name in ('aten::_to_copy', 'aten::copy_'):
            src = args[1] if name == 'aten::copy_' else args[0]
            dst_dev = args[0].device if name == 'aten::copy_' else kwargs.get('device')
            if isinstance(src, torch.Tensor) and src.device.type != 'cpu' and dst_dev is not None \
                    and torch.device(dst_dev).type == 'cpu':
                reason = 'copy to host'
        if reason is not None:
            self._record(reason)
        if name in ('aten::lift_fresh', 'aten::lift_fresh_copy'):
            if self.host_is_device:
                self.h2d.append((name, _caller() if self.record_sites else ''))
        elif name in ('aten::_to_copy', 'aten::copy_'):
            src = args[1] if name == 'aten::copy_' else args[0]
            dst_dev = args[0].device if name == 'aten::copy_' else kwargs.get('device')
            if isinstance(src, torch.Tensor) and src.device.type == 'cpu' and dst_dev is not None \
                    and torch.device(dst_dev).type != 'cpu':
                self.h2d.append(('copy to device', _caller() if self.record_sites else ''))
        return func(*args, **kwargs)

    def _record(self, reason: str) -> None:
        self.syncs.append((reason, _caller() if self.record_sites else ''))

    # -- Python-level host reads that do not dispatch on the CPU ---------------------------------------------
    def __enter__(self):
        counter = self
        for meth in ('tolist', 'numpy'):
            orig = getattr(torch.Tensor, meth)
            self._patched[meth] = orig

            def wrapped(t, *a, __orig=orig, __name=meth, **k):
                if counter.host_is_device and t.device.type == 'cpu':  # device tensors: copy to host, at dispatch
                    counter._record(f'Tensor.{__name}')
                return __orig(t, *a, **k)
            setattr(torch.Tensor, meth, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        for meth, orig in self._patched.items():
            setattr(torch.Tensor, meth, orig)
        self._patched.clear()
        return super().__exit__(*exc)

    # -- reports ---------------------------------------------------------------------------------------------
    @property
    def num_syncs(self) -> int:
        return len(self.syncs)

    def sync_sites(self) -> Counter:
        """``(reason, site) -> count``."""
        return Counter(self.syncs)

    def top_ops(self, k: Optional[int] = 10) -> List[tuple]:
        return self.by_op.most_common(k)
