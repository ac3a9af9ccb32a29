"""Optional ``torch.compile`` of the hot PnP kernels, with an eager fallback (shared by :mod:`.solver` and
:mod:`.epropnp`).

Why: on CPU the solvers and the Monte-Carlo cost are chains of 50–200 element-wise ops over ``(*, N, n)`` planes;
eager PyTorch reads and writes every intermediate, inductor fuses each chain into one loop (5–10× faster here).
The price is a one-off compilation per process and kernel signature (10–120 s on a 2-core CPU with a warm
inductor cache, minutes on a cold one), so compilation is **opt-in**: with the default backend the first call of
every function takes at most a few seconds in a fresh process (``tools/benchmarks/pnp_first_call.py`` measures
it).

Since the native CPU kernels (:mod:`._native`: C++ built in seconds, cached per machine) the CPU rarely needs
this module: ``'default'`` and ``'auto'`` run those kernels on CPU tensors, and compilation matters for ``'compile'``
and on a GPU.

Backends: ``'default'`` (the default everywhere) never compiles; on a GPU it replays the no-grad stages as CUDA
graphs (:mod:`._graphs`, seconds to capture), on the CPU it runs the native kernels. ``'eager'`` never compiles and
never captures. ``'auto'`` (what the detector's configs use) is ``'default'`` plus compilation of calls that
evaluate at least :data:`AUTO_COMPILE_MIN_POINTS` (pose, point) pairs where no native kernel serves them.
``'compile'`` always compiles. The environment variable ``EPROPNP_DISABLE_COMPILE=1`` forces eager everywhere; if a
compilation fails (no C++ compiler, unsupported device) a warning is issued once and the rest of the process runs
eagerly. Compiled functions must be pure (no side effects), so that falling back after a failure gives the same
result.
"""
import os
import warnings

import torch

__all__ = ['AUTO_COMPILE_MIN_POINTS', 'BACKENDS', 'use_compile', 'call']

BACKENDS = ('default', 'eager', 'auto', 'compile')
# torch.compile backend of the compiled kernels: 'inductor' (fused C++/Triton code); tests set 'aot_eager' to run the
# same traced graphs (dynamo + AOT autograd) in seconds instead of compiling them
BACKEND_ENV = 'EPROPNP_COMPILE_BACKEND'

# auto backend: compile only when one call evaluates at least this many (pose, point) pairs
AUTO_COMPILE_MIN_POINTS = 1 << 18

_COMPILED = {}
_STATE = {'failed': False}


def use_compile(backend: str, num_points: int) -> bool:
    """Whether ``backend`` asks for the compiled kernels for a call over ``num_points`` (pose, point) pairs."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if backend in ('eager', 'default') or _STATE['failed'] or os.environ.get('EPROPNP_DISABLE_COMPILE', '0') == '1':
        return False
    return backend == 'compile' or num_points >= AUTO_COMPILE_MIN_POINTS


def call(name: str, fn, compiled: bool, *args, **kwargs):
    """``fn(*args, **kwargs)``, through ``torch.compile(fn, dynamic=True)`` (cached under ``name``) if
    ``compiled``; falls back to eager for the rest of the process if compilation fails."""
    if compiled and not _STATE['failed']:
        if name not in _COMPILED:
            _COMPILED[name] = torch.compile(fn, dynamic=True, backend=os.environ.get(BACKEND_ENV, 'inductor'))
        try:
            return _COMPILED[name](*args, **kwargs)
        except Exception as err:  # no compiler / unsupported device: fall back for the rest of the process
            out = fn(*args, **kwargs)  # re-raises errors that are the caller's (then compilation stays on)
            _STATE['failed'] = True
            warnings.warn(f'torch.compile of the PnP kernel {name!r} failed ({type(err).__name__}: {err}); '
                          'using the eager implementation')
            return out
    return fn(*args, **kwargs)
