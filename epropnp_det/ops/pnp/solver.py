"""Batched PnP solvers: trust-region Levenberg-Marquardt, safeguarded Gauss-Newton, RSLM initialiser
(docs/method.md §2.4-2.5) and the differentiable Gauss-Newton step of the derivative regularisation
(docs/method.md §2.12).

API summary (shapes: ``N`` objects, ``n`` points; ``D`` = 4 ``[x, y, z, yaw]`` or 7 ``[x, y, z, w, i, j, k]``;
``T`` = 4 or 6 tangent dims; poses in the camera frame, metres/radians; ``x3d`` object frame metres,
``x2d`` pixels of the original image, ``delta (N,)`` Huber threshold, e.g. :func:`.cost.adaptive_huber_delta`)::

    solve_pnp(x3d, x2d, w2d, camera, delta=None, *, pose_init=None, force_init_solve=False, with_cov=False,
              with_pose_plus=False, normalize=True, num_iter=10, fast_mode=False, dof=4, generator=None, ...)
        -> PnPSolution(pose (N, D), cost (N,), cov (N, T, T) | None, pose_plus (N, D) | None)
    lm_solve(x3d, x2d, w2d, pose, camera, delta, num_iter, fast_mode=False, ...)   # raw loop, no init/normalise
        -> (pose (*, N, D), cost (*, N), jtj (*, N, T, T))     # all evaluated at the returned pose
    rslm_init(x3d, x2d, w2d, camera, delta, *, num_points=16, num_proposals=64, num_iter=3, dof=4, ...)
        -> (pose (N, D), cost (N,))
    center_based_init(x3d, x2d, camera, dof=4) -> t (N, 3)
    gn_step(x3d, x2d, w2d, pose, camera, delta, eps=1e-5, clip_jac=True) -> step (*, N, T)   # differentiable
    compute_pose_plus(x3d, x2d, w2d, pose, camera, delta, normalize=True) -> pose_plus (*, N, D)  # differentiable
    laplace_covariance(jtj, eps=1e-5) -> inv(JᵀJ + eps I)
    sample_subsets(probs (N, n), num_subsets, num_points, generator) -> idx (P, N, m), valid (P, N, m)
    PnPSolver(**hyper_parameters)   # stateless nn.Module wrapper of solve_pnp

Everything runs batched over objects (and RSLM proposals) without host synchronisation inside loops (one sync per
``solve_pnp`` call for the input finiteness check, one in the subset sampler); work is split into chunks of about
``CHUNK_ELEMS`` point evaluations so the per-point arrays stay in the CPU caches. With ``backend='compile'`` (or
``'auto'`` on large batches, see :mod:`._compile`) the point-wise passes (normal equations, RSLM full-set scoring)
run as ``torch.compile``-fused kernels over the whole batch instead; compilation is opt-in (the default backend
``'default'`` never compiles, so a first call takes seconds, not minutes). On CPU tensors ``'default'`` and ``'auto'``
run the native C++ kernels instead (:mod:`._native`: the whole LM/GN loop per object, the RSLM subset draws and the
full-set scoring); ``'eager'`` is the torch reference they are tested against.

Differences from the reference (docs/method.md §13.11-13, all fixes):

* The trust-region radius is clamped to ``[eps, 1e16]`` **after** the failure division (docs/method.md §13.12).
* Fast mode is Gauss-Newton with a safeguard: a step is accepted only if the cost at the new pose is finite and
  not larger, otherwise the pose is kept and the next step of that object is damped (``+ μ·diag(A)``,
  μ ×10 on rejection, /10 on acceptance). Steps of well-behaved objects are the plain GN steps.
* Cost, covariance and ``J̃ᵀJ̃`` always belong to the returned pose (the reference's fast mode returned them one
  GN step stale); this costs one extra evaluation per solve.
* RSLM samples points uniformly for objects whose weights are all zero (the reference crashed, docs/method.md §13.11).
* RSLM subsets are drawn by successive sampling from ``2m`` inverse-CDF draws (:func:`sample_subsets`, 10× faster
  than ``torch.multinomial``; same distribution) instead of the exponential race of ``torch.multinomial``. When the
  weights are so concentrated that fewer than ``m`` distinct points come up, the subset is smaller (the missing
  slots get zero weight) where the reference would add low-weight points.
* Linear systems use a Jacobi-scaled, pivot-floored unrolled LDLᵀ (:mod:`.linalg`): no exceptions, no host sync,
  no NaN for singular systems. Steps that are non-finite or move the translation beyond ``MAX_TRANSLATION`` (1e6 m) are
  rejected.
* Nothing is stored between calls (docs/method.md §13.13); all randomness comes from the optional ``generator``.
"""
import ctypes
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import _compile, _graphs, _native
from ._amp import fp32
from .cost import adaptive_huber_delta
from .kernels import Prepared, cost_prepared, normal_equation_terms, normal_equations_planes, pack_matrix, prepare
from .linalg import ldl_solve_planes, spd_inverse
from .normalize import pnp_denormalize, pnp_denormalize_cov, pnp_normalize
from .robust import check_robust
from .rotation import quaternion_retract, random_quaternion
from .types import CameraParams, PnPSolution

__all__ = ['solve_pnp', 'lm_solve', 'rslm_init', 'center_based_init', 'gn_step', 'compute_pose_plus',
           'laplace_covariance', 'retract', 'sample_subsets', 'PnPSolver']

# translations beyond this (metres) are treated as divergence (step rejected)
MAX_TRANSLATION = 1e6


def retract(pose: Tensor, step: Tensor) -> Tensor:
    """Apply a local step: 4-DoF ``pose + step``; 6-DoF ``t + step[:3]``, ``q <- normalize(q + T(q) step[3:])``."""
    if pose.shape[-1] == 4:
        return pose + step
    return torch.cat([pose[..., :3] + step[..., :3], quaternion_retract(pose[..., 3:], step[..., 3:])], dim=-1)


def _add_diag(A: Tensor, diag: Tensor) -> Tensor:
    return A + torch.diag_embed(diag)


def laplace_covariance(jtj: Tensor, eps: float = 1e-5) -> Tensor:
    """Laplace covariance of ``exp(-cost)`` in the local parameterisation: ``inv(J̃ᵀJ̃ + eps I)`` (*, T, T)."""
    return spd_inverse(_add_diag(jtj, jtj.new_full(jtj.shape[:-1], eps)))


def _accept(pose_new: Tensor, cost_new: Tensor) -> Tensor:
    return torch.isfinite(cost_new) & torch.isfinite(pose_new).all(dim=-1) & \
        (pose_new[..., :3].abs() <= MAX_TRANSLATION).all(dim=-1)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.reshape(*mask.shape, *([1] * (a.dim() - mask.dim()))), a, b)


def lm_solve(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
             num_iter: int = 10, fast_mode: bool = False, **kwargs) -> Tuple[Tensor, Tensor, Tensor]:
    """Run ``num_iter`` iterations (no early exit) from ``pose``; no grad is needed (call under ``no_grad``).

    Trust-region LM (``fast_mode=False``, Jacobian clipped) per docs/method.md §2.4 with the radius fix, or safeguarded
    Gauss-Newton (``fast_mode=True``, Jacobian not clipped), see the module docstring.

    Args:
        x3d: (*, N, n, 3); x2d, w2d: (*, N, n, 2); pose: (*, N, D) start; camera (N, ...); delta: (N,) or (*, N).
        **kwargs: ``eps=1e-5, min_lm_diagonal=1e-6, max_lm_diagonal=1e32, min_relative_decrease=1e-3,
            initial_trust_region_radius=30.0, max_trust_region_radius=1e16`` (the original's defaults,
            docs/method.md §2.4).

    Returns:
        pose (*, N, D), cost (*, N) and ``J̃ᵀJ̃`` (*, N, T, T), the last two evaluated at the returned pose.
    """
    return _lm_loop(prepare(x3d, x2d, w2d), pose, camera, delta, num_iter, fast_mode, **kwargs)


# elements (points × poses) per chunk: small enough that the ~20 live per-point arrays stay in the CPU caches,
# large enough that per-op dispatch overhead stays small (measured on a 2-core EPYC, float32)
CHUNK_ELEMS = 1 << 18
# on a GPU the caches do not matter, every chunk costs its launches: chunks only bound the memory (~20 float32
# arrays of this many elements, 320 MB)
CHUNK_ELEMS_DEVICE = 1 << 22


def default_chunk_elems(device: torch.device) -> int:
    """Points × poses per chunk of the eager kernels on ``device`` (:data:`CHUNK_ELEMS` on the CPU)."""
    return CHUNK_ELEMS if device.type == 'cpu' else CHUNK_ELEMS_DEVICE


def _chunks(total: int, per_item: int, chunk_elems: Optional[int], device: torch.device):
    chunk_elems = default_chunk_elems(device) if chunk_elems is None else chunk_elems
    step = max(1, chunk_elems // max(per_item, 1))
    return [(i, min(i + step, total)) for i in range(0, total, step)]


def _slice_problem(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor, a: int, b: int):
    """Rows a:b of the leading dim of pose/prep; camera and delta too when that dim is the object dim."""
    sub = prep.slice(a, b)
    if pose.dim() == 2:
        return sub, pose[a:b], camera.index(slice(a, b)), delta[a:b]
    return sub, pose[a:b], camera, delta


def _lm_loop_chunked(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor, num_iter: int,
                     fast_mode: bool, chunk_elems: Optional[int] = None, compiled: bool = False,
                     native: bool = False, **kwargs) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_lm_loop` over independent chunks of the leading dim (objects, or RSLM proposals); one chunk when
    ``compiled`` (the fused kernels keep no large intermediates); the native CPU kernel when ``native``
    (4-DoF poses (B, 4), see :func:`_use_native`)."""
    if native:
        return _lm_native(prep, pose, camera, delta, num_iter, fast_mode, **kwargs)
    if compiled:
        return _lm_loop(prep._replace(xhT=None), pose, camera, delta, num_iter=num_iter, fast_mode=fast_mode,
                        compiled=True, **kwargs)
    total = pose.shape[0]
    per_item = prep.xs[0, :1].numel()
    parts = [_lm_loop(*_slice_problem(prep, pose, camera, delta, a, b), num_iter=num_iter, fast_mode=fast_mode,
                      **kwargs) for a, b in _chunks(total, per_item, chunk_elems, pose.device)]
    if len(parts) == 1:
        return parts[0]
    return tuple(None if t[0] is None else torch.cat(t) for t in zip(*parts))


def _cost_chunked(prep: Prepared, poses: Tensor, camera: CameraParams, delta: Tensor,
                  chunk_elems: Optional[int] = None, compiled: bool = False, robust: str = 'huber',
                  native: bool = False) -> Tensor:
    """Full-set cost (S, N) of poses (S, N, D) with prep (·, N, n), chunked over objects (eager), or in one
    fused pass (``compiled``: the projection is computed inside the loop, not by the bmm path; ``native``: the
    native CPU kernel, 4-DoF)."""
    if native:
        return _cost_native(prep, poses, camera, delta, robust)
    if compiled:
        return _compile.call('cost', cost_prepared, True, prep._replace(xhT=None), poses, camera, delta, robust)
    S, N = poses.shape[:2]
    parts = [cost_prepared(prep.slice(a, b), poses[:, a:b], camera.index(slice(a, b)), delta[a:b], robust)
             for a, b in _chunks(N, S * prep.num_points, chunk_elems, poses.device)]
    return torch.cat(parts, dim=-1)


def _use_native(x3d: Tensor, dof: int, backend: str) -> bool:
    """Whether a solve takes the native CPU kernels (:mod:`._native`): 4-DoF, CPU float32/64, backend ``'default'``
    or ``'auto'``."""
    return dof == 4 and _native.enabled(x3d, backend=backend)


def _native_problem(prep: Prepared, B: int, camera: CameraParams, delta: Tensor):
    """Contiguous arguments of the native kernels for B problems: planes (C, B, n), K (B, 3, 3), lb/ub (B, 2),
    delta (B,)."""
    n = prep.num_points
    planes = [t.reshape(t.shape[0], B, n).contiguous() for t in prep[:3]]
    dtype = planes[0].dtype
    cam = [t.to(dtype).expand(B, *t.shape[-2 if t.dim() == 3 else -1:]).contiguous()
           for t in (camera.cam_mats, camera.lb, camera.ub)]
    return planes + cam + [torch.as_tensor(delta, dtype=dtype).expand(B).contiguous()]


def _lm_native(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor, num_iter: int = 10,
               fast_mode: bool = False, eps: float = 1e-5, min_lm_diagonal: float = 1e-6,
               max_lm_diagonal: float = 1e32, min_relative_decrease: float = 1e-3,
               initial_trust_region_radius: float = 30.0, max_trust_region_radius: float = 1e16,
               final_eval: bool = True, robust: str = 'huber') -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """:func:`_lm_loop` for 4-DoF poses (B, 4) by the native CPU kernel (``csrc/solver.cpp``, same arithmetic, one
    problem at a time; threads over problems). Returns pose (B, 4), cost (B,) and ``J̃ᵀJ̃`` (B, 4, 4) (``None``,
    ``None`` in fast mode without ``final_eval``, as :func:`_lm_loop`)."""
    B = pose.shape[0]
    xs, obs, w, K, lb, ub, dlt = _native_problem(prep, B, camera, delta)
    out = pose.to(xs.dtype).contiguous().clone()
    last_only = fast_mode and not final_eval and num_iter > 0
    cost = None if last_only else out.new_empty(B)
    A = None if last_only else out.new_empty(B, 4, 4)
    fn = getattr(_native.lib(), f'epnp_lm4_{_native.suffix(out.dtype)}')
    p = _native.ptr
    fn(ctypes.c_int64(B), ctypes.c_int64(prep.num_points), p(xs), p(obs), p(w), p(out), p(K), p(lb), p(ub),
       ctypes.c_double(camera.z_min), p(dlt), ctypes.c_int(int(robust == 'cauchy')), ctypes.c_int(num_iter),
       ctypes.c_int(int(fast_mode)), ctypes.c_int(int(final_eval)), ctypes.c_double(eps),
       ctypes.c_double(min_lm_diagonal), ctypes.c_double(max_lm_diagonal), ctypes.c_double(min_relative_decrease),
       ctypes.c_double(initial_trust_region_radius), ctypes.c_double(max_trust_region_radius),
       None if cost is None else p(cost), None if A is None else p(A), ctypes.c_int(_native.num_threads()))
    return out, cost, A


def _cost_native(prep: Prepared, poses: Tensor, camera: CameraParams, delta: Tensor, robust: str = 'huber') -> Tensor:
    """Cost (S, N) of 4-DoF poses (S, N, 4) over the planes (·, N, n) by the native CPU kernel."""
    S, N = poses.shape[:2]
    xs, obs, w, K, lb, ub, dlt = _native_problem(prep, N, camera, delta)
    poses = poses.to(xs.dtype).contiguous()
    out = poses.new_empty(S, N)
    fn = getattr(_native.lib(), f'epnp_cost4_{_native.suffix(out.dtype)}')
    p = _native.ptr
    fn(ctypes.c_int64(S), ctypes.c_int64(N), ctypes.c_int64(prep.num_points), p(xs), p(obs), p(w), p(poses), p(K),
       p(lb), p(ub), ctypes.c_double(camera.z_min), p(dlt), ctypes.c_int(int(robust == 'cauchy')), p(out),
       ctypes.c_int(_native.num_threads()))
    return out


def _lm_loop(prep: Prepared, pose: Tensor, camera: CameraParams, delta: Tensor, num_iter: int = 10,
             fast_mode: bool = False, eps: float = 1e-5, min_lm_diagonal: float = 1e-6,
             max_lm_diagonal: float = 1e32, min_relative_decrease: float = 1e-3,
             initial_trust_region_radius: float = 30.0, max_trust_region_radius: float = 1e16,
             final_eval: bool = True, compiled: bool = False,
             robust: str = 'huber') -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    # small matrices are lists of (*, N) planes: element-wise ops on tiny trailing dims are slow on CPU.
    # ``compiled``: the normal-equation evaluations (the point-wise work) go through torch.compile (one fused
    # loop per evaluation); the small per-pose solves and updates stay eager (few graphs = short compile time)
    clip = not fast_mode
    A, g, cost = _compile.call('normal_equations', normal_equations_planes, compiled, prep, pose, camera, delta,
                               clip, robust)
    if fast_mode:
        ctrl = (torch.zeros_like(cost),)  # μ
    else:
        ctrl = (torch.full_like(cost, initial_trust_region_radius), torch.full_like(cost, 2.0))  # radius, decrease
    consts = dict(eps=eps, min_lm_diagonal=min_lm_diagonal, max_lm_diagonal=max_lm_diagonal,
                  min_relative_decrease=min_relative_decrease, max_trust_region_radius=max_trust_region_radius,
                  robust=robust)
    for it in range(num_iter):
        if fast_mode and not final_eval and it == num_iter - 1:
            # RSLM proposals are scored on the full set afterwards: the last GN step is taken if finite (as in
            # the reference's GN) without evaluating the subset cost there; cost/J̃ᵀJ̃ are not returned
            return _gn_last_step(pose, A, g, ctrl[0], eps), None, None
        # compiled: the whole iteration (normal equations, damped LDLᵀ solve, acceptance) is one fused graph —
        # eagerly the ~150 small per-pose ops of an iteration dominate for N·n of a few 10⁴
        pose, A, g, cost, ctrl = _compile.call(f'lm_iteration_{"gn" if fast_mode else "tr"}', _lm_iteration,
                                               compiled, prep, pose, A, g, cost, ctrl, camera, delta, fast_mode,
                                               **consts)
    return pose, cost, pack_matrix(A)


def _gn_last_step(pose: Tensor, A, g, mu: Tensor, eps: float) -> Tensor:
    """Damped (``μ``) GN step from the normal equations at ``pose``, kept where finite and in range."""
    step = ldl_solve_planes(A, g, [A[i][i] * mu + eps for i in range(len(g))])
    pose_new = retract(pose, -torch.stack(step, dim=-1))
    ok = torch.isfinite(pose_new).all(dim=-1) & (pose_new[..., :3].abs() <= MAX_TRANSLATION).all(dim=-1)
    return _where(ok, pose_new, pose)


def _lm_iteration(prep: Prepared, pose: Tensor, A, g, cost: Tensor, ctrl: Tuple[Tensor, ...],
                  camera: CameraParams, delta: Tensor, fast_mode: bool, eps: float,
                  min_lm_diagonal: float, max_lm_diagonal: float, min_relative_decrease: float,
                  max_trust_region_radius: float, robust: str = 'huber'):
    """One damped step, evaluation at the new pose and acceptance; returns the updated
    ``(pose, A, g, cost, ctrl)`` with ``ctrl = (μ,)`` (fast mode) or ``(radius, decrease)`` (trust region)."""
    T = len(g)
    if fast_mode:
        mu, = ctrl
        damp = [A[i][i] * mu + eps for i in range(T)]
    else:
        radius, decrease = ctrl
        inv_r = radius.reciprocal()
        damp = [A[i][i].clamp(min_lm_diagonal, max_lm_diagonal) * inv_r + eps for i in range(T)]
    step = [-x for x in ldl_solve_planes(A, g, damp)]
    pose_new = retract(pose, torch.stack(step, dim=-1))
    A_new, g_new, cost_new = normal_equations_planes(prep, pose_new, camera, delta, not fast_mode, robust)
    ok = _accept(pose_new, cost_new)
    if fast_mode:
        success = ok & (cost_new <= cost)
        ctrl = (torch.where(success, mu * 0.1, (mu * 10).clamp(min=1e-3)),)
    else:
        # model_change = −stepᵀ(A·step/2 + g)
        model_change = sum(-step[i] * (0.5 * sum(A[i][j] * step[j] for j in range(T)) + g[i]) for i in range(T))
        rel = (cost - cost_new) / model_change
        success = ok & (rel >= min_relative_decrease) & (model_change > 0)
        # Ceres-style update; the clamp comes after both branches (fixes docs/method.md §13.12)
        grow = (1 - (2 * rel - 1) ** 3).clamp(min=1 / 3)
        radius = torch.where(success, radius / torch.where(success, grow, 1.), radius / decrease)
        radius = radius.clamp(eps, max_trust_region_radius)
        ctrl = (radius, torch.where(success, 2.0, decrease * 2))
    pose = _where(success, pose_new, pose)
    cost = torch.where(success, cost_new, cost)
    g = [torch.where(success, g_new[i], g[i]) for i in range(T)]
    A = [[torch.where(success, A_new[i][j], A[i][j]) if j <= i else None for j in range(T)] for i in range(T)]
    for i in range(T):
        for j in range(i + 1, T):
            A[i][j] = A[j][i]
    return pose, A, g, cost, ctrl


def center_based_init(x3d: Tensor, x2d: Tensor, camera: CameraParams, dof: int = 4) -> Tensor:
    """Translation from the 2D/3D spreads (docs/method.md §2.5 step 2), using all points.

    ``x̂ = K⁻¹[u, v, 1]`` (normalised coordinates); 4-DoF: ``t = [μ_x, μ_y, 1]·σ3d_y / max(σ2d_y, 1e-6)``;
    6-DoF: ``t = [μ, 1]·sqrt(2/3)‖σ3d‖ / max(‖σ2d‖, 1e-6)`` (unbiased stds over points).

    Returns: (N, 3) translation, camera frame, metres; finite for any finite input (degenerate spreads give 0).
    """
    K = camera.cam_mats
    # normalised coordinates for K = [[a, b, c], [0, e, f], [0, 0, 1]] (last row [0, 0, 1], see camera.py)
    yn = (x2d[..., 1] - K[..., 1, 2, None]) / K[..., 1, 1, None]
    xn = (x2d[..., 0] - K[..., 0, 2, None] - K[..., 0, 1, None] * yn) / K[..., 0, 0, None]
    xy = torch.stack([xn, yn], dim=-1)
    n = x3d.shape[-2]
    corr = 1 if n > 1 else 0
    std2d, mean2d = torch.std_mean(xy, dim=-2, correction=corr)
    std3d = x3d.std(dim=-2, correction=corr)
    if dof == 4:
        depth = std3d[..., 1] / std2d[..., 1].clamp(min=1e-6)
    else:
        depth = math.sqrt(2 / 3) * std3d.norm(dim=-1) / std2d.norm(dim=-1).clamp(min=1e-6)
    t = torch.cat([mean2d, torch.ones_like(mean2d[..., :1])], dim=-1) * depth.unsqueeze(-1)
    return torch.nan_to_num(t, nan=0.0, posinf=MAX_TRANSLATION, neginf=-MAX_TRANSLATION)


def sample_subsets(probs: Tensor, num_subsets: int, num_points: int,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Weighted sampling of distinct points, ``num_subsets`` independent subsets per object.

    Successive sampling (draw ∝ probs, reject repeats) — the distribution of ``torch.multinomial(probs, m,
    replacement=False)`` — from ``2m`` draws with replacement by inverse CDF, keeping the first ``m`` distinct
    ones. This needs 2m random numbers per subset instead of n (the exponential race of ``torch.multinomial``),
    which made sampling the most expensive step of RSLM. If fewer than ``m`` distinct points come up (weights
    concentrated on a few points), the missing slots are marked invalid (the caller zeroes their weights, like the
    zero-weight filler points of the reference).

    Args:
        probs: (N, n) non-negative, each row with a positive sum.
    Returns:
        idx (P, N, m) long point indices, valid (P, N, m) bool.
    """
    N, n = probs.shape
    P, m = num_subsets, num_points
    k = 2 * m
    cdf = torch.cumsum(probs, dim=-1)
    cdf = cdf / cdf[..., -1:]
    u = torch.rand(N, P * k, dtype=cdf.dtype, device=cdf.device, generator=generator)
    if not _use_guide_table(cdf.device):  # one kernel on a GPU; the guide table needs a host read of its size
        return _first_distinct(torch.searchsorted(cdf, u, right=True).clamp(max=n - 1), P, m, n)
    start, steps = _guide_table(cdf)  # CPU only: its host read is no device synchronisation
    # objects in chunks: the per-draw temporaries (int64 indices, the (subset, point) table of _first_distinct)
    # of a 1536-object batch are 25 MB each, and every call paid their fresh pages again (~60k page faults, a
    # tenth of the GN inference row); chunks of ~1 MB stay in the allocator's reused memory. Same draws, same
    # result: every step is row-wise
    parts = []
    step = max(1, _SUBSET_CHUNK_DRAWS // (P * k))
    for a in range(0, N, step):
        b = min(a + step, N)
        if steps > _MAX_GUIDE_STEPS:  # very concentrated weights: plain binary search
            draws = torch.searchsorted(cdf[a:b], u[a:b], right=True).clamp(max=n - 1)
        else:
            draws = _guided_search(cdf[a:b], start[a:b], u[a:b], steps)
        parts.append(_first_distinct(draws, P, m, n))
    if len(parts) == 1:
        return parts[0]
    return torch.cat([t[0] for t in parts], dim=1), torch.cat([t[1] for t in parts], dim=1)


def _use_guide_table(device: torch.device) -> bool:
    """The guide-table search (several times faster than ``torch.searchsorted`` with unsorted queries on the CPU)
    is used on the CPU only: sizing it reads a number back to the host, a synchronisation on a GPU."""
    return device.type == 'cpu'


def _first_distinct(draws: Tensor, P: int, m: int, n: int) -> Tuple[Tensor, Tensor]:
    """draws (N, P·2m) point indices -> the first m distinct ones per subset: idx (P, N, m), valid (P, N, m)."""
    N, k = draws.shape[0], 2 * m
    draws = draws.reshape(N, P, k).transpose(0, 1).reshape(P * N, k)
    # first occurrence of each point among the draws (successive sampling = draw order, repeats rejected)
    order = torch.arange(k, device=draws.device)
    small = torch.uint8 if k < 255 else torch.int32
    first = torch.full((P * N, n), k, dtype=small, device=draws.device)
    first.scatter_reduce_(-1, draws, order.to(small).expand_as(draws), 'amin')
    is_first = first.gather(-1, draws) == order
    rank = torch.cumsum(is_first, dim=-1)  # 1-based rank among distinct draws
    slot = torch.where(is_first & (rank <= m), rank - 1, m)
    idx = draws.new_zeros(P * N, m + 1).scatter_(-1, slot, draws)[..., :m]
    valid = order[:m] < rank[..., -1:].clamp(max=m)
    idx = torch.where(valid, idx, draws[..., :1])
    return idx.reshape(P, N, m), valid.reshape(P, N, m)


# the guide-table search falls back to torch.searchsorted beyond this many candidates per bucket
_MAX_GUIDE_STEPS = 8
# draws (objects × subsets × 2m) per chunk of the CPU subset sampler (see sample_subsets)
_SUBSET_CHUNK_DRAWS = 1 << 17


def _guide_table(cdf: Tensor) -> Tuple[Tensor, int]:
    """Guide table of :func:`_guided_search`: (N, 2n + 1) first candidate per bucket and the max number of
    candidates per bucket (one host sync)."""
    N, n = cdf.shape
    G = 2 * n
    grid = (torch.arange(G + 1, dtype=cdf.dtype, device=cdf.device) / G).expand(N, G + 1).contiguous()
    start = torch.searchsorted(cdf, grid, right=True)
    return start, int((start[:, 1:] - start[:, :-1]).max())


def _guided_search(cdf: Tensor, start: Tensor, u: Tensor, steps: int) -> Tensor:
    """``searchsorted(cdf, u, right=True)`` per row (cdf (N, n) ending at 1, u (N, S) in [0, 1)) -> (N, S).

    Guide-table method: ``2n`` equal buckets of [0, 1) each store the first candidate index (``start``), then
    ``steps`` ≥ max candidates per bucket comparison steps finish the search (exact; extra steps are no-ops).
    ``torch.searchsorted`` with unsorted queries is several times slower here."""
    n = cdf.shape[-1]
    G = 2 * n
    idx = start.gather(-1, (u * G).long().clamp_(max=G - 1))
    cdf_pad = torch.cat([cdf, torch.full_like(cdf[:, :1], 2.0)], dim=-1)
    val, le = torch.empty_like(u), torch.empty_like(u, dtype=torch.bool)
    for _ in range(steps):  # in place: no allocation per step
        idx.add_(torch.le(torch.gather(cdf_pad, -1, idx, out=val), u, out=le))
    return idx.clamp_(max=n - 1)


def rslm_init(x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Tensor, *, num_points: int = 16,
              num_proposals: int = 64, num_iter: int = 3, dof: int = 4, fast_mode: bool = False,
              generator: Optional[torch.Generator] = None, backend: str = 'default', robust: str = 'huber',
              **lm_kwargs) -> Tuple[Tensor, Tensor]:
    """Random-sample LM initialiser (docs/method.md §2.5), no grad.

    For each object, ``num_proposals`` subsets of ``num_points`` distinct points are drawn with probability
    ∝ mean(w2d) over xy (uniform for all-zero weights; :func:`sample_subsets`); each starts from the
    centre-based translation and a random rotation (yaw ~ U[0, 2π) or uniform quaternion), runs ``num_iter``
    LM (or GN) iterations on its subset and is scored by the cost on the full point set.

    Args: x3d (N, n, 3), x2d / w2d (N, n, 2), camera (N, ...), delta (N,) (computed on the full set);
        backend: ``'default'`` / ``'eager'`` / ``'auto'`` / ``'compile'`` (see :mod:`._compile`; auto compiles when the
        full-set scoring evaluates ≥ 2¹⁸ (proposal, point) pairs).
    Returns:
        pose (N, D) of the best proposal, cost (N,) its full-set cost.
    """
    return _rslm(prepare(x3d, x2d, w2d), x3d, x2d, w2d, camera, delta, num_points, num_proposals, num_iter, dof,
                 fast_mode, generator, backend=backend, robust=check_robust(robust), **lm_kwargs)


def _rslm(prep, x3d, x2d, w2d, camera, delta, num_points, num_proposals, num_iter, dof, fast_mode, generator,
          backend='default', robust='huber', **lm_kwargs):
    N, n = x3d.shape[-3], x3d.shape[-2]
    P, m = num_proposals, min(num_points, n)
    native = _use_native(x3d, dof, backend)
    compiled = not native and _compile.use_compile(backend, P * N * n)
    probs = torch.nan_to_num(w2d.mean(dim=-1), nan=0.0, posinf=0.0).clamp(min=0)
    valid_obj = probs.sum(dim=-1, keepdim=True) > 0
    probs = torch.where(valid_obj, probs, torch.ones_like(probs))
    if native:  # the same draws and subsets, gathered straight into the flat planes
        flat = _subsets_native(prep, probs, P, m, generator)
    else:
        idx, valid = sample_subsets(probs, P, m, generator)
        sub = prep.gather(idx).mask_points(valid)  # (gathering inside the compiled kernels is slower)

    t0 = center_based_init(x3d, x2d, camera, dof).expand(P, N, 3)
    if dof == 4:
        rot0 = torch.rand(P, N, 1, dtype=x3d.dtype, device=x3d.device, generator=generator) * (2 * math.pi)
    else:
        rot0 = random_quaternion((P, N), dtype=x3d.dtype, device=x3d.device, generator=generator)
    pose0 = torch.cat([t0, rot0], dim=-1)
    # the P·N proposals as one flat batch of problems (camera and δ tiled): the fused kernels then index every
    # per-problem constant directly instead of broadcasting (N,) over (P, N) (measured 1.4-1.9x faster)
    if not native:
        flat = Prepared(*(t.reshape(t.shape[0], P * N, t.shape[-1]) for t in sub[:4]), None)
    poses, _, _ = _lm_loop_chunked(flat, pose0.reshape(P * N, -1), camera.repeat(P), delta.repeat(P),
                                   num_iter=num_iter, fast_mode=fast_mode, final_eval=False, compiled=compiled,
                                   native=native, robust=robust, **lm_kwargs)
    poses = poses.reshape(P, N, -1)
    # full-set cost of every proposal, chunked over objects (bounded memory, cache-friendly)
    costs = _cost_chunked(prep, poses, camera, delta, compiled=compiled, robust=robust, native=native)
    costs = torch.nan_to_num(costs, nan=math.inf)
    best_cost, best = costs.min(dim=0)
    pose = poses.gather(0, best[None, :, None].expand(1, N, poses.shape[-1])).squeeze(0)
    return pose, best_cost


def _subsets_native(prep: Prepared, probs: Tensor, P: int, m: int,
                    generator: Optional[torch.Generator] = None) -> Prepared:
    """:func:`sample_subsets` + ``Prepared.gather`` + ``mask_points`` + the flat reshape of :func:`_rslm` by the
    native CPU kernel (``csrc/subsets.cpp``): the same uniform draws (same generator calls), the same subsets, in
    planes (C, P·N, m), problem ``p·N + i`` (``w2`` is None: the native LM squares ``w`` itself)."""
    N, n = probs.shape
    cdf = torch.cumsum(probs, dim=-1)
    cdf = (cdf / cdf[..., -1:]).contiguous()
    u = torch.rand(N, P * 2 * m, dtype=cdf.dtype, device=cdf.device, generator=generator)
    planes = torch.cat([prep.xs, prep.obs, prep.w]).to(cdf.dtype).contiguous()  # (7, N, n)
    out = planes.new_empty(7, P * N, m)
    fn = getattr(_native.lib(), f'epnp_subsets_{_native.suffix(cdf.dtype)}')
    p = _native.ptr
    fn(ctypes.c_int64(N), ctypes.c_int64(n), ctypes.c_int64(P), ctypes.c_int64(m), p(cdf), p(u), p(planes), p(out),
       ctypes.c_int(_native.num_threads()))
    return Prepared(out[0:3], out[3:5], out[5:7], None, None)


def _use_stacked_gn(device: torch.device) -> bool:
    """The differentiable GN step in stacked-matrix form (:func:`gn_step_stacked`, ~45 % of the launches of the
    plane form forward and backward) off the CPU; on the CPU the plane form is faster (cache-sized planes)."""
    return device.type != 'cpu'


def gn_step_stacked(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                    eps: float = 1e-5, clip_jac: bool = True, robust: str = 'huber') -> Tensor:
    """:func:`gn_step` for 4-DoF poses (N, 4) with the normal equations as batched matrix products: per image axis
    the moments ``S = Σ c φφᵀ`` and ``G = Σ q φ`` of ``φ = [1, f₁, f₂]`` (the same residual, Jacobian rows, IRLS
    weights and clipping masks as the plane form), ``A = Σ_axes Mᵀ S M + eps I`` with ``M`` putting the constant
    translation columns ``K[c, :2]`` back, and a Jacobi-scaled Cholesky solve. Equal to the plane form in float64
    to 1e-9; in float32 within 2e-3 of float64, the test's bound (measured 5.5e-4, the plane form's LDLᵀ
    1.5e-4); see ``test_pnp_gn_stacked.py``.
    Returns (N, 4)."""
    K = camera.cam_mats
    (cu, qu, fu), (cv, qv, fv), _ = normal_equation_terms(prepare(x3d, x2d, w2d), pose, camera, delta, clip_jac,
                                                          check_robust(robust))
    one = torch.ones_like(cu)
    phi = torch.stack([torch.stack([one, *fu], -1), torch.stack([one, *fv], -1)], 1)  # (N, 2 axes, n, 3)
    c, q = torch.stack([cu, cv], 1)[..., None], torch.stack([qu, qv], 1)[..., None]  # (N, 2, n, 1)
    S = (phi * c).transpose(-1, -2) @ phi  # (N, 2, 3, 3)
    G = (phi * q).sum(-2)[..., None]  # (N, 2, 3, 1)
    N = K.shape[0]
    # M (N, 2, 3, 4): row 0 = [k_c0, k_c1, 0, 0] (the translation columns), rows 1, 2 = unit rows of f₁, f₂
    M = torch.cat([torch.cat([K[:, :2, None, :2], K.new_zeros(N, 2, 1, 2)], -1),
                   torch.eye(4, dtype=K.dtype, device=K.device)[2:].expand(N, 2, 2, 4)], -2)
    Mt = M.transpose(-1, -2)
    A = (Mt @ S @ M).sum(1) + eps * torch.eye(4, dtype=K.dtype, device=K.device)
    g = (Mt @ G).sum(1)  # (N, 4, 1)
    scale = A.diagonal(dim1=-2, dim2=-1).clamp(min=torch.finfo(A.dtype).tiny ** 0.5).rsqrt()  # Jacobi scaling
    L, _ = torch.linalg.cholesky_ex(A * scale[:, :, None] * scale[:, None, :])  # no host check: no sync
    return -(torch.cholesky_solve(g * scale[..., None], L) * scale[..., None])[..., 0]


def gn_step(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
            eps: float = 1e-5, clip_jac: bool = True, robust: str = 'huber') -> Tensor:
    """Differentiable Gauss-Newton step ``Δy = −(J̃ᵀJ̃ + eps I)⁻¹ J̃ᵀr̃`` at ``pose`` (*, N, D) -> (*, N, T).

    Gradients flow to x3d, x2d, w2d and delta through the Jacobian (including the clamped ``z``/``x2d``), the
    residual and the IRLS weight (docs/method.md §2.4 ``gn_step``, §2.3). 4-DoF poses (N, 4) off the CPU take
    :func:`gn_step_stacked` (same step, fewer launches).
    """
    if pose.dim() == 2 and pose.shape[-1] == 4 and _use_stacked_gn(x3d.device):
        return gn_step_stacked(x3d, x2d, w2d, pose, camera, delta, eps=eps, clip_jac=clip_jac, robust=robust)
    A, g, _ = normal_equations_planes(prepare(x3d, x2d, w2d), pose, camera, delta, clip_jac=clip_jac,
                                      robust=check_robust(robust))
    step = ldl_solve_planes(A, g, [torch.full_like(g[0], eps)] * len(g))
    return -torch.stack(step, dim=-1)


@fp32
def compute_pose_plus(x3d: Tensor, x2d: Tensor, w2d: Tensor, pose: Tensor, camera: CameraParams, delta: Tensor,
                      normalize: bool = True, eps: float = 1e-5, clip_jac: bool = True,
                      robust: str = 'huber') -> Tensor:
    """``y⁺`` = ``pose`` (detached) plus one differentiable GN step, with the normalisation order of
    docs/method.md §2.12.

    With ``normalize``: centre x3d (offset detached), map ``pose`` to the normalised frame, step there
    (``y⁺_n = y*_n + Δy``), then denormalise with ``y⁺``'s own rotation (``t⁺ = t⁺_n − R(yaw⁺)·offset``), so the
    rotation step also moves ``t⁺``.

    Args: x3d (N, n, 3), x2d/w2d (N, n, 2), pose (N, D) solution in the caller's frame, delta (N,).
    Returns: (N, D) ``y⁺`` in the caller's frame, differentiable w.r.t. x3d, x2d, w2d, delta.
    """
    pose = pose.detach()
    if normalize:
        offset, x3d, pose = pnp_normalize(x3d, pose)
    pose_plus = retract(pose, gn_step(x3d, x2d, w2d, pose, camera, delta, eps=eps, clip_jac=clip_jac,
                                      robust=robust))
    return pnp_denormalize(offset, pose_plus) if normalize else pose_plus


def _check_inputs(x3d, x2d, w2d, camera, pose_init, dof, check_finite):
    if x3d.dim() != 3 or x3d.shape[-1] != 3:
        raise ValueError(f'x3d must be (N, n, 3), got {tuple(x3d.shape)}')
    N, n = x3d.shape[:2]
    for name, v in (('x2d', x2d), ('w2d', w2d)):
        if v.shape != (N, n, 2):
            raise ValueError(f'{name} must be {(N, n, 2)} to match x3d, got {tuple(v.shape)}')
    if camera.cam_mats.shape != (N, 3, 3):
        raise ValueError(f'camera.cam_mats must be {(N, 3, 3)}, got {tuple(camera.cam_mats.shape)}')
    D = 4 if dof == 4 else 7
    if dof not in (4, 6):
        raise ValueError(f'dof must be 4 or 6, got {dof}')
    if pose_init is not None and pose_init.shape != (N, D):
        raise ValueError(f'pose_init must be {(N, D)} for dof={dof}, got {tuple(pose_init.shape)}')
    if check_finite:  # one host sync per call, outside all loops
        named = [('x3d', x3d), ('x2d', x2d), ('w2d', w2d), ('camera.cam_mats', camera.cam_mats)]
        if pose_init is not None:
            named.append(('pose_init', pose_init))
        bad = torch.stack([~torch.isfinite(v).all() for _, v in named]).tolist()
        for (name, _), b in zip(named, bad):
            if b:
                raise ValueError(f'solve_pnp: {name} contains NaN or Inf')


def _solve_nograd(x3d_d, x2d_d, w2d_d, delta_d, cam_mats, lb, ub, pose_init, generator, static, backend):
    """The no-grad part of :func:`solve_pnp` as a pure function of tensors (capturable in a CUDA graph):
    normalisation, RSLM, LM/GN, covariance. ``static`` = the hyper-parameters (see :func:`solve_pnp`).
    Returns ``(pose (N, D), cost (N,), cov (N, T, T) | None, pose_free (N, D) | None)``, caller's frame."""
    (z_min, force_init_solve, with_cov, with_free_solution, normalize, num_iter, fast_mode, dof, eps,
     init_num_points, init_num_proposals, init_num_iter, lm_items, robust) = static
    camera = CameraParams(cam_mats, lb, ub, z_min)
    kw = dict(eps=eps, robust=robust, **dict(lm_items))
    N = x3d_d.shape[0]
    offset = None
    pose_n = pose_init
    if normalize:
        offset, x3d_d, pose_n = pnp_normalize(x3d_d, pose_n)
    prep = prepare(x3d_d, x2d_d, w2d_d)
    pose_free = None
    native = _use_native(x3d_d, dof, backend)
    if pose_n is None or force_init_solve:
        pose_r, cost_r = _rslm(prep, x3d_d, x2d_d, w2d_d, camera, delta_d, init_num_points,
                               init_num_proposals, init_num_iter, dof, fast_mode, generator, backend=backend,
                               **kw)
        pose_free = pose_r
        if pose_n is not None:
            cost_i = (_cost_native(prep, pose_n[None], camera, delta_d, robust)[0] if native else
                      cost_prepared(prep, pose_n, camera, delta_d, robust))
            pose_r = _where(cost_i < cost_r, pose_n, pose_r)
        pose_n = pose_r
    # one more small graph when RSLM compiled anyway (the eager loop is dispatch-bound for small N·n)
    rslm_ran = pose_init is None or force_init_solve
    compiled = not native and _compile.use_compile(backend, N * x3d_d.shape[1] *
                                                   max(num_iter, init_num_proposals * rslm_ran))
    if with_free_solution:  # both starts as one batch of 2N problems (problems, camera and δ tiled)
        poses, costs, jtjs = _lm_loop_chunked(prep.repeat(2), torch.cat([pose_n, pose_free]), camera.repeat(2),
                                              delta_d.repeat(2), num_iter=num_iter, fast_mode=fast_mode,
                                              compiled=compiled, native=native, **kw)
        pose_n, cost, jtj = poses[:N], costs[:N], jtjs[:N]
        pose_free = pnp_denormalize(offset, poses[N:]) if normalize else poses[N:]
    else:
        pose_free = None
        pose_n, cost, jtj = _lm_loop_chunked(prep, pose_n, camera, delta_d, num_iter=num_iter,
                                             fast_mode=fast_mode, compiled=compiled, native=native, **kw)
    cov = None
    if with_cov:
        cov = laplace_covariance(jtj, eps)
        if normalize:
            cov = pnp_denormalize_cov(offset, pose_n, cov)
    pose = pnp_denormalize(offset, pose_n) if normalize else pose_n
    return pose, cost, cov, pose_free


@fp32
def solve_pnp(x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Optional[Tensor] = None, *,
              pose_init: Optional[Tensor] = None, force_init_solve: bool = False, with_cov: bool = False,
              with_pose_plus: bool = False, normalize: bool = True, num_iter: int = 10, fast_mode: bool = False,
              dof: int = 4, eps: float = 1e-5, init_num_points: int = 16, init_num_proposals: int = 64,
              init_num_iter: int = 3, generator: Optional[torch.Generator] = None, check_finite: bool = True,
              backend: str = 'default', with_free_solution: bool = False, robust: str = 'huber',
              **lm_kwargs) -> PnPSolution:
    """Solve a batch of PnP problems (docs/method.md §2.4 ``LMSolver.forward``).

    Args:
        x3d: (N, n, 3) metres, object frame. x2d: (N, n, 2) pixels. w2d: (N, n, 2) weights (≥ 0).
        camera: :class:`CameraParams` (N, ...).
        delta: (N,) Huber threshold; default ``adaptive_huber_delta(x2d, w2d)`` (detached).
        pose_init: (N, D) start pose, camera frame. Without it the RSLM initialiser is used.
        force_init_solve: with ``pose_init``, also run RSLM and start each object from whichever of the two has
            the lower cost.
        with_cov: return the Laplace covariance at the returned pose.
        with_pose_plus: also return ``compute_pose_plus`` (differentiable; everything else is detached).
        normalize: centre x3d during the solve (docs/method.md §2.6); results are returned in the caller's frame.
        num_iter: LM/GN iterations after initialisation (10 in training, 5 GN steps at test time).
        fast_mode: safeguarded Gauss-Newton without Jacobian clipping (inference) instead of trust-region LM.
        dof: 4 (``[x, y, z, yaw]``) or 6 (``[x, y, z, w, i, j, k]``).
        init_num_points / init_num_proposals / init_num_iter: RSLM settings (16 / 64 / 3).
        generator: torch RNG for RSLM.
        check_finite: raise ``ValueError`` naming the field if an input has NaN/Inf (one host sync).
        backend: ``'default'`` (never compiles; CUDA graphs on a GPU, native C++ kernels on the CPU), ``'eager'``,
            ``'auto'`` (``'default'`` on the CPU) or ``'compile'``:
            ``torch.compile``-fused solver kernels (opt-in)
            (:mod:`._compile`); auto compiles the RSLM stage when it scores ≥ 2¹⁸ (proposal, point) pairs and the
            final LM/GN loop then or when ``N·n·num_iter ≥ 2¹⁸``. Same results up to float rounding.
        with_free_solution: with ``pose_init`` and ``force_init_solve``, also iterate from the RSLM result alone
            and return that solution as ``pose_free``: the solution of an independent solve without ``pose_init``
            (as the derivative regularisation needs, docs/method.md §2.12), sharing this call's RSLM draws. Both LM runs
            are one batch of 2N problems, which costs much less than a second call when the loop is
            dispatch-bound (small N·n, eager).
        robust: ``'huber'`` (default) or ``'cauchy'`` robust cost (:mod:`.robust`).
        **lm_kwargs: trust-region constants of :func:`lm_solve`.

    Returns:
        :class:`PnPSolution` (pose and cost at the same, final pose).
    """
    _check_inputs(x3d, x2d, w2d, camera, pose_init, dof, check_finite)
    check_robust(robust)
    if with_free_solution and (pose_init is None or not force_init_solve):
        raise ValueError('with_free_solution=True needs pose_init and force_init_solve=True')
    if delta is None:
        delta = adaptive_huber_delta(x2d.detach(), w2d.detach())
    N, D = x3d.shape[0], 4 if dof == 4 else 7
    T = 4 if dof == 4 else 6
    if N == 0 or x3d.shape[1] == 0:
        pose = x3d.new_zeros(N, D) if pose_init is None else pose_init.detach().clone()
        if D == 7 and pose_init is None:
            pose[:, 3] = 1
        cov = x3d.new_zeros(N, T, T) if with_cov else None
        return PnPSolution(pose, x3d.new_zeros(N), cov, pose.clone() if with_pose_plus else None,
                           pose.clone() if with_free_solution else None)
    static = (float(camera.z_min), bool(force_init_solve), bool(with_cov), bool(with_free_solution),
              bool(normalize), int(num_iter), bool(fast_mode), int(dof), float(eps), int(init_num_points),
              int(init_num_proposals), int(init_num_iter), tuple(sorted(lm_kwargs.items())), robust)
    tensors = (x3d.detach(), x2d.detach(), w2d.detach(), delta.detach(), camera.cam_mats.detach(),
               camera.lb.detach(), camera.ub.detach(), None if pose_init is None else pose_init.detach())
    out = None
    if _graphs.enabled(backend, x3d.device):
        # one CUDA-graph replay instead of thousands of launches (see _graphs); eager kernels inside the graph
        out = _graphs.run('solve_pnp', lambda *t: _solve_nograd(*t, static, 'eager'), tensors, (0,) * 8,
                          (0, 0, 0, 0), static, generator, N)
    if out is None:
        with torch.no_grad():
            out = _solve_nograd(*tensors, generator, static, backend)
    pose, cost, cov, pose_free = out
    pose_plus = None
    if with_pose_plus:
        pose_plus = compute_pose_plus(x3d, x2d, w2d, pose, camera, delta, normalize=normalize, eps=eps,
                                      robust=robust)
    return PnPSolution(pose, cost, cov, pose_plus, pose_free)


class PnPSolver(nn.Module):
    """Stateless ``nn.Module`` holding :func:`solve_pnp` hyper-parameters (no buffers, nothing mutated by forward).

    ``forward(x3d, x2d, w2d, camera, delta=None, **overrides) -> PnPSolution``; keyword overrides (e.g.
    ``num_iter=5, fast_mode=True`` at test time) are per call, never stored.
    """

    def __init__(self, dof: int = 4, num_iter: int = 10, normalize: bool = True, eps: float = 1e-5,
                 init_num_points: int = 16, init_num_proposals: int = 64, init_num_iter: int = 3, **lm_kwargs):
        super().__init__()
        self.kwargs = dict(dof=dof, num_iter=num_iter, normalize=normalize, eps=eps, init_num_points=init_num_points,
                           init_num_proposals=init_num_proposals, init_num_iter=init_num_iter, **lm_kwargs)

    def forward(self, x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Optional[Tensor] = None,
                **overrides) -> PnPSolution:
        return solve_pnp(x3d, x2d, w2d, camera, delta, **{**self.kwargs, **overrides})

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in self.kwargs.items())
