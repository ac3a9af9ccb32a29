"""CUDA-graph replay of the PnP layer's no-grad stages (RSLM + LM/GN solve, AMIS sampling) on the GPU.

Why: the solvers are written as many small element-wise ops on ``(*, N, n)`` planes, which is what makes them fast
on the CPU (no large intermediates, cache-sized chunks), but on a GPU each op is a kernel launch costing a few µs
of host time, and one solve launches thousands of them (``tools/benchmarks/pnp_layer.py --count-ops``). The
no-grad stages have static shapes and no host synchronisation, so they are captured once per shape into a CUDA
graph and replayed: one launch instead of thousands, same kernels, same arithmetic.

Mechanics (:func:`run`):

* A graph is keyed by the stage name, the static arguments and the shapes/dtypes of the tensor arguments, with
  the object count ``N`` padded up to a bucket (:func:`bucket`) so that a detector whose ``N`` changes every step
  reuses a few graphs. Padded objects are copies of object 0 (valid problems; every stage is independent per
  object) and are cut off from the outputs.
* First call for a key: two eager warm-up runs on a side stream (as torch requires), then the capture; inputs
  are copied into static buffers before each replay and the outputs are cloned after it, so callers own them.
* All graphs of a device share one memory pool (their temporaries are dead once a replay has returned, and the
  static outputs they keep are never freed, so sharing is safe for sequential replays).
* Randomness: the generator (the default CUDA generator when ``None``) is registered with the graph, so every
  replay draws fresh numbers from it and advances it like an eager call (not the same numbers as eager). A
  custom generator is part of the key: keep one generator alive across calls (re-seeding it with
  ``manual_seed`` is fine) rather than creating one per call, which would capture a new graph each time.
* If capture fails (an op that cannot be captured, an old torch), a warning is issued once and the stage runs
  eagerly for the rest of the process. ``EPROPNP_DISABLE_CUDA_GRAPHS=1`` turns graphs off.

Used only for CUDA tensors with ``backend='default'`` or ``'auto'`` (:func:`enabled`); the CPU never takes this path.
"""
import os
import threading
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.utils import _pytree as pytree

__all__ = ['enabled', 'bucket', 'run', 'clear']

_CACHE: Dict[tuple, '_Graph'] = {}
_POOLS: Dict[int, object] = {}
_STATE = {'failed': False}
_LOCK = threading.Lock()
MAX_GRAPHS = 64  # oldest graphs are dropped beyond this (their pool memory is reused by later captures)


def enabled(backend: str, device: torch.device) -> bool:
    """Whether a stage on ``device`` with ``backend`` runs through CUDA graphs (``'default'`` or ``'auto'``, on
    CUDA only)."""
    return (backend in ('default', 'auto') and device.type == 'cuda' and not _STATE['failed']
            and os.environ.get('EPROPNP_DISABLE_CUDA_GRAPHS', '0') != '1'
            and not torch.cuda.is_current_stream_capturing())


def bucket(n: int) -> int:
    """Padded object count: the next power of two up to 64, then the next multiple of 64 (≤ 1.5x work for
    N ≥ 64, and at most ~N/64 + 7 distinct graphs per stage)."""
    if n <= 64:
        return 1 << max(0, (n - 1).bit_length())
    return -(-n // 64) * 64


class _Graph:
    # ``generator`` is kept referenced so that its id (part of the key) cannot be reused by another generator
    __slots__ = ('graph', 'static_in', 'static_out', 'out_spec', 'generator')


def clear() -> None:
    """Drop every captured graph (frees their memory once no output references it)."""
    with _LOCK:
        _CACHE.clear()
        _POOLS.clear()


def _pad(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if t.shape[dim] == size:
        return t
    idx = torch.zeros(size - t.shape[dim], dtype=torch.long, device=t.device)
    return torch.cat([t, t.index_select(dim, idx)], dim=dim)


def run(name: str, fn: Callable, tensors: Tuple[Optional[torch.Tensor], ...],
               obj_dims: Tuple[Optional[int], ...], out_obj_dims, static: tuple,
               generator: Optional[torch.Generator], num_objects: int):
    """Pad the object axis of ``tensors`` to :func:`bucket` (``num_objects``), replay the graph of
    ``fn(*padded, generator)`` and cut the outputs back to ``num_objects``.

    Args:
        name, static: cache key parts (``static`` hashable: every non-tensor argument ``fn`` closes over).
        fn: pure function ``fn(*tensors, generator) -> pytree`` of tensors / ``None``.
        tensors: CUDA tensors or ``None``; ``obj_dims[i]`` is the object axis of ``tensors[i]`` (``None``: none).
        out_obj_dims: pytree of the same structure as ``fn``'s output with the object axis of each leaf (int) or
            ``None`` (leaf not cut).
        generator: CUDA generator or ``None`` (the default CUDA generator).
        num_objects: N.
    Returns:
        fn's output pytree, cut to N objects; tensors owned by the caller. ``None`` if graphs failed (the caller
        then runs eagerly).
    """
    Np = bucket(num_objects)
    padded = tuple(None if t is None or d is None else _pad(t, d, Np) for t, d in zip(tensors, obj_dims))
    padded = tuple(t if d is None else p for t, d, p in zip(tensors, obj_dims, padded))
    key = (name, static, Np, str(generator.device) if generator is not None else None,
           id(generator) if generator is not None else None,
           tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in padded))
    try:
        with _LOCK:
            g = _CACHE.get(key)
        if g is None:
            g = _capture(fn, padded, generator)
            with _LOCK:
                if len(_CACHE) >= MAX_GRAPHS:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = g
        for dst, src in zip(g.static_in, padded):
            if dst is not None:
                dst.copy_(src)
        g.graph.replay()
        outs = [None if t is None else t.clone() for t in g.static_out]
    except Exception as err:  # capture unsupported here: eager from now on (same maths)
        _STATE['failed'] = True
        warnings.warn(f'CUDA-graph capture of the PnP stage {name!r} failed ({type(err).__name__}: {err}); '
                      'running it eagerly from now on')
        return None
    tree = pytree.tree_unflatten(outs, g.out_spec)
    return pytree.tree_map(lambda t, d: t if t is None or d is None or Np == num_objects
                           else t.narrow(d, 0, num_objects), tree, out_obj_dims,
                           is_leaf=lambda x: x is None)


def _capture(fn: Callable, padded, generator) -> _Graph:
    device = next(t.device for t in padded if t is not None)
    g = _Graph()
    g.generator = generator
    g.static_in = tuple(None if t is None else t.clone() for t in padded)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):  # warm-up: lazy initialisation (cuBLAS handles, allocator) outside the capture
            fn(*g.static_in, generator)
    torch.cuda.current_stream(device).wait_stream(side)
    with _LOCK:
        if os.environ.get('EPROPNP_CUDA_GRAPH_SHARED_POOL', '1') == '1':
            pool = _POOLS.setdefault(device.index or 0, torch.cuda.graph_pool_handle())
        else:
            pool = None
    graph = torch.cuda.CUDAGraph()
    if generator is not None:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph, pool=pool, capture_error_mode='thread_local'), torch.no_grad():
        out = fn(*g.static_in, generator)
    leaves, g.out_spec = pytree.tree_flatten(out, is_leaf=lambda x: x is None)
    g.static_out = tuple(leaves)
    g.graph = graph
    return g
