"""Native CPU kernels of the PnP layer: a few hundred lines of C++ (``csrc/``) compiled on first use and cached.

Why: on the CPU the eager solvers are bound by per-op dispatch (an LM iteration is ~150 small ops over planes of
10³–10⁵ elements) and ``torch.compile`` removes that but costs 30–300 s per process on 2 cores. The kernels here
do the point-wise work of one object at a time in registers and L1 (projection, robust cost, normal equations,
the whole LM/GN loop, the Monte-Carlo cost and its backward) and compile in a few seconds with the system C++
compiler — no torch headers, called through :mod:`ctypes` on the tensors' memory, so importing the layer still needs
torch alone. The shared library is cached under ``$EPROPNP_NATIVE_CACHE`` (default
``$XDG_CACHE_HOME/epropnp_det/native`` or ``~/.cache/epropnp_det/native``), keyed by the sources, the compiler,
its flags and the CPU (``-march=native``), so later processes load it in milliseconds.

Used on CPU tensors of float32 / float64 by the ``'default'`` and ``'auto'`` backends (``'eager'`` is the plain
torch reference, ``'compile'`` torch.compile). ``EPROPNP_DISABLE_NATIVE=1`` turns the kernels off; without a
working compiler a warning is issued once and the torch implementation runs (same results up to float rounding).
"""
import ctypes
import hashlib
import os
import os.path as osp
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Optional

import torch

__all__ = ['enabled', 'lib', 'ptr', 'num_threads', 'SUPPORTED_DTYPES']

SUPPORTED_DTYPES = (torch.float32, torch.float64)
CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
# -fno-math-errno: sqrt/log vectorise; no -ffast-math (NaN/Inf checks and IEEE min/max must keep their meaning)
CXXFLAGS = ['-O3', '-std=c++17', '-shared', '-fPIC', '-fno-math-errno', '-march=native', '-pthread']
# OpenMP: the kernels' threads come from the OpenMP runtime torch has loaded (csrc/common.h); without it
# (a compiler without libgomp) std::threads
OPENMP_FLAGS = (['-fopenmp'], ['-fopenmp-simd'])

_STATE = {'lib': None, 'failed': False}
_LOCK = threading.Lock()


def _sources():
    return sorted(osp.join(CSRC, f) for f in os.listdir(CSRC) if f.endswith(('.cpp', '.h')))


def _cpu_key() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            lines = [ln for ln in f if ln.startswith(('model name', 'flags'))][:2]
        return ''.join(lines)
    except OSError:
        return platform.processor()


def _cache_dir() -> str:
    base = os.environ.get('EPROPNP_NATIVE_CACHE')
    if not base:
        base = osp.join(os.environ.get('XDG_CACHE_HOME', osp.join(osp.expanduser('~'), '.cache')), 'epropnp_det',
                        'native')
    return base


def _compiler() -> str:
    cxx = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')
    if not cxx:
        raise RuntimeError('no C++ compiler found (set CXX)')
    return cxx


def build(verbose: bool = False) -> str:
    """Compile ``csrc/*.cpp`` into the cache (if not there yet) and return the library's path."""
    cxx = _compiler()
    version = subprocess.run([cxx, '--version'], capture_output=True, text=True, check=True).stdout
    h = hashlib.sha256()
    for part in [version, ' '.join(CXXFLAGS), str(OPENMP_FLAGS), _cpu_key(), platform.machine()]:
        h.update(part.encode())
    srcs = _sources()
    for src in srcs:
        with open(src, 'rb') as f:
            h.update(osp.basename(src).encode() + f.read())
    out_dir = _cache_dir()
    path = osp.join(out_dir, f'epropnp_pnp_cpu_{h.hexdigest()[:16]}.so')
    if osp.exists(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    # build into a private file and rename: concurrent processes (distributed ranks) never see a partial library
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=out_dir)
    os.close(fd)
    try:
        for omp in OPENMP_FLAGS:
            cmd = [cxx, *CXXFLAGS, *omp, '-I', CSRC, *[s for s in srcs if s.endswith('.cpp')], '-o', tmp]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode == 0:
                break
        if res.returncode != 0:
            raise RuntimeError(f'compiling the native PnP kernels failed ({" ".join(cmd)}):\n{res.stderr[-4000:]}')
        if verbose:
            print(' '.join(cmd))
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.unlink(tmp)
    return path


def lib() -> Optional[ctypes.CDLL]:
    """The loaded library, building it on first use; ``None`` if disabled or the build failed (warned once)."""
    if _STATE['lib'] is not None or _STATE['failed']:
        return _STATE['lib']
    with _LOCK:
        if _STATE['lib'] is None and not _STATE['failed']:
            try:
                _STATE['lib'] = ctypes.CDLL(build())
            except Exception as err:  # no compiler, read-only cache, ...: the torch implementation runs instead
                _STATE['failed'] = True
                warnings.warn(f'native PnP kernels unavailable ({type(err).__name__}: {err}); using the torch '
                              'implementation (set EPROPNP_DISABLE_NATIVE=1 to silence)')
    return _STATE['lib']


def enabled(*tensors: torch.Tensor, backend: str = 'default') -> bool:
    """Whether the native kernels serve a call with these tensors and backend: CPU, float32/64, backend
    ``'default'`` or ``'auto'``, not disabled, library loadable."""
    if backend not in ('default', 'auto') or os.environ.get('EPROPNP_DISABLE_NATIVE', '0') == '1':
        return False
    t0 = tensors[0]
    if t0.device.type != 'cpu' or t0.dtype not in SUPPORTED_DTYPES:
        return False
    if any(t.device.type != 'cpu' or t.dtype != t0.dtype for t in tensors[1:]):
        return False
    return lib() is not None


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    """Data pointer of a contiguous tensor (the caller keeps the tensor alive for the call)."""
    assert t.is_contiguous(), 'native PnP kernels take contiguous tensors'
    return ctypes.c_void_p(t.data_ptr())


def num_threads() -> int:
    """Threads of a native call: torch's intra-op setting (the kernels split objects over torch's OpenMP pool)."""
    return max(1, torch.get_num_threads())


def suffix(dtype: torch.dtype) -> str:
    return 'f32' if dtype == torch.float32 else 'f64'
