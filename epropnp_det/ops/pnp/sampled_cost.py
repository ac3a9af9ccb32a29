"""Cost of many poses per object, fused and memory-bounded: the kernel behind the Monte-Carlo (AMIS) sampling.

:func:`sampled_pnp_cost` evaluates the robust reprojection cost of ``S`` poses per object (Monte-Carlo samples,
the training target) and attaches a hand-written backward (:class:`_SampledCost`) that recomputes what it needs
chunk by chunk instead of keeping ``S·N·n`` intermediates. Two implementations of the same arithmetic:

* eager (:func:`_chunk_forward`): one ``bmm`` per chunk for the projection, in-place element-wise ops, chunks
  sized for the CPU caches (:func:`.solver.default_chunk_elems`);
* planar (:func:`_planar_cost`, :func:`_planar_grads`): every quantity a separate plane, written for
  ``torch.compile`` (one fused loop per kernel, the backward reduces over the samples innermost);
* native (:func:`_native_forward`, :func:`_native_backward`): the same arithmetic point by point in C++
  (``csrc/sampled_cost.cpp``, :mod:`._native`), used on the CPU (float32/64) by the ``'default'`` and ``'auto'``
  backends; objects split over threads, samples whose upstream gradient is 0 skipped in the backward.

Shapes: ``x3d (N, n, 3)`` metres, object frame; ``x2d (N, n, 2)`` pixels; ``w2d (N, n, 2)``; ``poses (S, N, D)``
camera frame ``[x, y, z, yaw]`` or ``[x, y, z, w, i, j, k]``; ``delta (N,)`` Huber threshold (the scale of the
robust cost, ``robust='huber'`` or ``'cauchy'``, see :mod:`.robust`, which also lists the other copies of this
arithmetic and the tests that keep them equal).
"""
import ctypes
from typing import Optional

import torch
from torch import Tensor

from . import _compile, _native
from ._amp import fp32
from .robust import check_robust, drho_ddelta, irls_weight, rho
from .rotation import quaternion_to_rot_mat
from .solver import default_chunk_elems
from .types import CameraParams

__all__ = ['sampled_pnp_cost']

def _pose_affine(pose: Tensor, cam_mats: Tensor) -> Tensor:
    """``[K·R | K·t]`` (*, N, 3, 4) for poses (*, N, 4|7) and intrinsics (N, 3, 3): ``h = A · [x3d; 1]``."""
    if pose.shape[-1] == 4:
        cos, sin = torch.cos(pose[..., 3]), torch.sin(pose[..., 3])
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rot = torch.stack([cos, zero, sin, zero, one, zero, -sin, zero, cos], dim=-1).reshape(*cos.shape, 3, 3)
    elif pose.shape[-1] == 7:
        rot = quaternion_to_rot_mat(pose[..., 3:])
    else:
        raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(pose.shape)}')
    rt = torch.cat([rot, pose[..., :3, None]], dim=-1)  # (*, N, 3, 4)
    return cam_mats @ rt


# ---- planar formulation: one fused loop per kernel when compiled (torch.compile / inductor) ------------------
# Layout: A (N, s, 12) = row-major [K·R | K·t] per sample; x3dT (N, 3, n); x2dT, w2dT (N, 2, n); dlt (N,);
# lb, ub (N, 2); g (N, s) upstream gradient. Arithmetic identical to :func:`.cost.pnp_cost`.

def _projection_terms(c, X, Y, Z, xu, xv, wu, wv, lb_u, lb_v, ub_u, ub_v, dlt, z_min: float,
                      robust: str = 'huber'):
    """Projection + Huber terms from broadcastable planes: coefficients ``c`` (12 planes of ``[K·R | K·t]``,
    row-major), object points X, Y, Z, observations xu, xv, weights wu, wv, bounds, δ (the callers choose the
    layout by how they broadcast)."""
    h0 = c[0] * X + c[1] * Y + c[2] * Z + c[3]
    h1 = c[4] * X + c[5] * Y + c[6] * Z + c[7]
    h2 = c[8] * X + c[9] * Y + c[10] * Z + c[11]
    z = h2.clamp(min=z_min)
    u_raw, v_raw = h0 / z, h1 / z
    valid_u = (u_raw >= lb_u) & (u_raw <= ub_u)  # autograd of a clamp passes the gradient where min <= x <= max
    valid_v = (v_raw >= lb_v) & (v_raw <= ub_v)
    u = torch.minimum(torch.maximum(u_raw, lb_u), ub_u)
    v = torch.minimum(torch.maximum(v_raw, lb_v), ub_v)
    eu, ev = u - xu, v - xv
    ru, rv = eu * wu, ev * wv
    sn = (ru * ru + rv * rv).clamp(min=1e-30).sqrt()
    if robust == 'huber':
        m = torch.minimum(sn, dlt)
        # the Huber terms written out (m = s in the quadratic zone, δ in the linear zone)
        cost, wgt, dd = m * (sn - 0.5 * m), m / sn, sn - m
    else:
        cost, wgt, dd = rho(sn, dlt, robust), irls_weight(sn, dlt, robust), drho_ddelta(sn, dlt, robust)
    return dict(h2=h2, z=z, u=u, v=v, eu=eu, ev=ev, ru=ru, rv=rv, sn=sn, cost=cost, wgt=wgt, dd=dd,
                valid_u=valid_u, valid_v=valid_v)


def _planar_terms(A, x3dT, x2dT, w2dT, dlt, lb, ub, z_min: float, robust: str = 'huber'):
    """Projection + Huber terms as planes (N, s, n) from A (N, s, 12), x3dT (N, 3, n), x2dT/w2dT (N, 2, n)."""
    return _projection_terms([A[..., k:k + 1] for k in range(12)], x3dT[:, None, 0], x3dT[:, None, 1],
                             x3dT[:, None, 2], x2dT[:, None, 0], x2dT[:, None, 1], w2dT[:, None, 0], w2dT[:, None, 1],
                             lb[:, None, 0:1], lb[:, None, 1:2], ub[:, None, 0:1], ub[:, None, 1:2],
                             dlt.reshape(-1, 1, 1), z_min, robust)


def _planar_cost(A, x3dT, x2dT, w2dT, dlt, lb, ub, z_min: float, robust: str = 'huber'):
    return _planar_terms(A, x3dT, x2dT, w2dT, dlt, lb, ub, z_min, robust)['cost'].sum(dim=-1)  # (N, s)


def _planar_grads(A, x3dT, x2dT, w2dT, dlt, lb, ub, g, z_min: float, robust: str = 'huber'):
    """Gradients of ``Σ_s g_s·cost_s`` in one fused pass, samples reduced innermost.

    Layout: A (N, 12, s) coefficient planes with the samples LAST (so the sum over samples is an innermost-dim
    reduction that inductor vectorises), x3dT (N, 3, n), x2dT / w2dT (N, 2, n), g (N, s) upstream gradient.
    Per (sample, point): ψ = ω(s)·r·g (dρ/dr; Huber ω = min(1, δ/s)), dρ/dh_uv = ψ·w/z on the unclamped side of
    the image-border clamp, dρ/dh_z = −(dρ/dh_u·u + dρ/dh_v·v) where z is not clamped, dρ/dx3d = (K·R)ᵀ dρ/dh.

    Returns: R (N, 5, n) = Σ_s [ψ_u e_u, ψ_v e_v, ψ_u, ψ_v, ∂ρ/∂δ·g] and gx3d (N, 3, n).
    """
    c = [A[:, k, None, :] for k in range(12)]
    t = _projection_terms(c, x3dT[:, 0, :, None], x3dT[:, 1, :, None], x3dT[:, 2, :, None], x2dT[:, 0, :, None],
                          x2dT[:, 1, :, None], w2dT[:, 0, :, None], w2dT[:, 1, :, None], lb[:, 0, None, None],
                          lb[:, 1, None, None], ub[:, 0, None, None], ub[:, 1, None, None], dlt[:, None, None], z_min,
                          robust)
    h2, z, u, v, eu, ev, ru, rv = (t[k] for k in ('h2', 'z', 'u', 'v', 'eu', 'ev', 'ru', 'rv'))
    wu, wv = w2dT[:, 0, :, None], w2dT[:, 1, :, None]
    gg = g[:, None, :]
    hub = t['wgt'] * gg  # IRLS weight ω(s) (Huber: min(1, δ/s)) times the upstream gradient
    qu, qv = ru * hub, rv * hub
    au = torch.where(t['valid_u'], qu * wu / z, 0.)
    av = torch.where(t['valid_v'], qv * wv / z, 0.)
    az = torch.where(h2 >= z_min, -(au * u + av * v), 0.)
    gx3d = [(au * c[k] + av * c[4 + k] + az * c[8 + k]).sum(dim=-1) for k in range(3)]
    red = [(qu * eu).sum(dim=-1), (qv * ev).sum(dim=-1), qu.sum(dim=-1), qv.sum(dim=-1),
           (t['dd'] * gg).sum(dim=-1)]
    return torch.stack(red, dim=1), torch.stack(gx3d, dim=1)


def _run_planar(kind: str, args: tuple, z_min: float, robust: str = 'huber'):
    fn = _planar_cost if kind == 'cost' else _planar_grads
    return _compile.call(f'sampled_{kind}', fn, True, *args, z_min, robust)


# ---- eager formulation: bmm for the projection, in-place element-wise ops, cache-sized chunks --------------------
class _Chunk:
    """Per-chunk intermediates in the layout (N, s, ·, n) (s = samples of the chunk)."""
    __slots__ = ('Ab', 'z', 'uv', 'e', 'r', 'sn', 'm', 'valid', 'zok', 'cost')


def _chunk_forward(A: Tensor, feat: Tensor, x2dT: Tensor, w2dT: Tensor, dlt: Tensor, lbT: Tensor, ubT: Tensor,
                   z_min: float, for_backward: bool, robust: str = 'huber') -> _Chunk:
    """A (s, N, 3, 4); feat (N, 4, n) = [x3d; 1]; x2dT/w2dT (N, 1, 2, n); dlt (N, 1, 1); lbT/ubT (N, 1, 2, 1)."""
    s, N = A.shape[0], A.shape[1]
    n = feat.shape[-1]
    c = _Chunk()
    c.Ab = A.transpose(0, 1).reshape(N, s * 3, 4)
    h = torch.bmm(c.Ab, feat).view(N, s, 3, n)
    hz = h[:, :, 2]
    c.z = hz.clamp(min=z_min)
    uv = h[:, :, :2] / c.z.unsqueeze(2)
    if for_backward:
        c.zok = hz >= z_min
        c.valid = (uv >= lbT) & (uv <= ubT)
    uv = uv.clamp_(lbT, ubT)
    c.uv = uv
    c.e = uv - x2dT if for_backward else uv.sub_(x2dT)
    c.r = c.e * w2dT
    c.sn = c.r.square().sum(dim=2).clamp_(min=1e-30).sqrt_()
    if robust == 'huber':
        c.m = torch.minimum(c.sn, dlt)  # s in the quadratic zone, δ in the linear zone
        c.cost = (c.m * (c.sn - 0.5 * c.m)).sum(dim=-1)  # (N, s)
    else:
        c.m = None
        c.cost = rho(c.sn, dlt, robust).sum(dim=-1)
    return c


def _eager_prep(x3d, x2d, w2d, delta, lb, ub):
    feat = torch.cat([x3d, torch.ones_like(x3d[..., :1])], dim=-1).transpose(1, 2).contiguous()  # (N, 4, n)
    x2dT = x2d.transpose(1, 2).unsqueeze(1).contiguous()  # (N, 1, 2, n)
    w2dT = w2d.transpose(1, 2).unsqueeze(1).contiguous()
    return feat, x2dT, w2dT, delta.reshape(-1, 1, 1), lb[:, None, :, None], ub[:, None, :, None]


def _planar_prep(x3d, x2d, w2d):
    return x3d.transpose(1, 2).contiguous(), x2d.transpose(1, 2).contiguous(), w2d.transpose(1, 2).contiguous()


def _flush_tiny(grad: Tensor, rel: float = 1e-12) -> Tensor:
    """Zero upstream gradients (S, N) below ``rel`` × the largest of their object (column).

    The gradient of the Monte-Carlo loss w.r.t. a sample's cost is its self-normalised importance weight; far-off
    samples get weights like e⁻¹⁰⁰, which are float32 denormals, and every product with a denormal takes a slow
    microcode path on x86 CPUs (measured 2x on the whole fused backward kernel). Terms 1e-12 below the largest
    cannot change a float32 sum over fewer than 10⁵ samples beyond rounding.
    """
    limit = grad.abs().amax(dim=0, keepdim=True) * rel
    return torch.where(grad.abs() < limit, 0., grad)


# ---- native CPU kernels (csrc/sampled_cost.cpp through :mod:`._native`): the same arithmetic per point -----------
_ROBUST_CODE = {'huber': 0, 'cauchy': 1}


def _native_fn(kind: str, dtype: torch.dtype):
    fn = getattr(_native.lib(), f'epnp_sampled_{kind}_{_native.suffix(dtype)}')
    fn.restype = None
    return fn


def _native_affine(poses: Tensor, cam_mats: Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`_pose_affine` in one native call (the torch version is ~10 small ops and a batched 3x3 matmul)."""
    if poses.dim() < 2 or poses.shape[-1] not in (4, 7):
        raise ValueError(f'pose must be (*, N, 4) or (*, N, 7), got {tuple(poses.shape)}')
    N, D = poses.shape[-2], poses.shape[-1]
    S = poses[..., 0].numel() // max(N, 1)
    poses = poses.to(dtype).contiguous()
    K = cam_mats.to(dtype).expand(N, 3, 3).contiguous()
    out = poses.new_empty(*poses.shape[:-1], 3, 4)
    if out.numel():
        _native_fn('affine', dtype)(_native.ptr(poses), _native.ptr(K), ctypes.c_int64(S), ctypes.c_int64(N),
                                    ctypes.c_int(D), _native.ptr(out), ctypes.c_int(_native.num_threads()))
    return out


def _native_inputs(x3d, x2d, w2d, delta, affine, lb, ub):
    """Contiguous operands in the kernels' layout: A (S, N, 12), planes (N, 3|2, n), delta (N,), lb/ub (N, 2)."""
    dt = x3d.dtype
    planes = _planar_prep(x3d, x2d, w2d)
    return (affine.to(dt).contiguous(), *planes, delta.to(dt).contiguous(), lb.to(dt).contiguous(),
            ub.to(dt).contiguous())


def _native_forward(x3d, x2d, w2d, delta, affine, lb, ub, z_min: float, robust: str) -> Tensor:
    N, n, S = x3d.shape[0], x3d.shape[1], affine.shape[0]
    ops = _native_inputs(x3d, x2d, w2d, delta, affine, lb, ub)
    out = x3d.new_empty(S, N)
    _native_fn('forward', x3d.dtype)(*[_native.ptr(t) for t in ops], ctypes.c_int64(S), ctypes.c_int64(N),
                                     ctypes.c_int64(n), ctypes.c_double(z_min), ctypes.c_int(_ROBUST_CODE[robust]),
                                     _native.ptr(out), ctypes.c_int(_native.num_threads()))
    return out


def _native_backward(x3d, x2d, w2d, delta, affine, lb, ub, grad: Tensor, z_min: float, robust: str,
                     need_x3d: bool):
    """Returns gx3dT (N, 3, n) (uninitialised if not ``need_x3d``), Σψ (N, 2, n), gw2dT (N, 2, n), gδ (N,)."""
    N, n, S = x3d.shape[0], x3d.shape[1], affine.shape[0]
    ops = _native_inputs(x3d, x2d, w2d, delta, affine, lb, ub)
    grad = grad.to(x3d.dtype).contiguous()
    gx3d, gq, gw = x3d.new_empty(N, 3, n), x3d.new_empty(N, 2, n), x3d.new_empty(N, 2, n)
    gd = x3d.new_empty(N)
    _native_fn('backward', x3d.dtype)(*[_native.ptr(t) for t in ops], _native.ptr(grad), ctypes.c_int64(S),
                                      ctypes.c_int64(N), ctypes.c_int64(n), ctypes.c_double(z_min),
                                      ctypes.c_int(_ROBUST_CODE[robust]), ctypes.c_int(int(need_x3d)),
                                      *[_native.ptr(t) for t in (gx3d, gq, gw, gd)],
                                      ctypes.c_int(_native.num_threads()))
    return gx3d, gq, gw, gd


class _SampledCost(torch.autograd.Function):
    """cost (S, N) of poses given as affine maps (S, N, 3, 4); gradients w.r.t. x3d, x2d, w2d, delta.

    Forward keeps nothing of size S·N·n; backward recomputes chunk by chunk (cheap element-wise work, and memory
    bounded by one chunk instead of ~10 tensors of S·N·n floats for plain autograd). ``native``: the C++ kernels
    of ``csrc/sampled_cost.cpp`` (CPU, float32/64; point by point, nothing of size S·N·n at all) instead of the
    eager or compiled torch code.
    """

    @staticmethod
    def forward(ctx, x3d, x2d, w2d, delta, affine, lb, ub, z_min, chunk_elems, compiled, robust='huber',
                precomputed=None, native=False):
        N, n = x3d.shape[0], x3d.shape[1]
        S = affine.shape[0]
        ctx.save_for_backward(x3d, x2d, w2d, delta, affine, lb, ub)
        ctx.z_min, ctx.chunk_elems, ctx.compiled, ctx.robust = z_min, chunk_elems, compiled, robust
        ctx.native = native
        if precomputed is not None:  # the values are known (computed without grad): only attach the backward
            return precomputed.clone()
        if S == 0 or N == 0 or n == 0:
            return x3d.new_zeros(S, N)
        if native:
            return _native_forward(x3d, x2d, w2d, delta, affine, lb, ub, z_min, robust)
        if compiled:
            A = affine.transpose(0, 1).reshape(N, S, 12)
            return _run_planar('cost', (A, *_planar_prep(x3d, x2d, w2d), delta, lb, ub), z_min, robust).t()
        out = x3d.new_empty(S, N)
        args = _eager_prep(x3d, x2d, w2d, delta, lb, ub)
        step = max(1, chunk_elems // (N * n))
        for s0 in range(0, S, step):
            c = _chunk_forward(affine[s0:s0 + step], *args, z_min=z_min, for_backward=False, robust=robust)
            out[s0:s0 + step] = c.cost.t()
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x3d, x2d, w2d, delta, affine, lb, ub = ctx.saved_tensors
        need_x3d, need_x2d, need_w2d, need_delta = ctx.needs_input_grad[:4]
        N, n = x3d.shape[0], x3d.shape[1]
        S = affine.shape[0]
        none = (None,) * 9
        if S == 0 or N == 0 or n == 0 or not any(ctx.needs_input_grad[:4]):
            zeros = [torch.zeros_like(t) if need else None
                     for t, need in zip((x3d, x2d, w2d, delta), ctx.needs_input_grad[:4])]
            return (*zeros, *none)
        grad_out = _flush_tiny(grad_out)
        if ctx.native:
            gx3d, gq, gw, gd = _native_backward(x3d, x2d, w2d, delta, affine, lb, ub, grad_out, ctx.z_min,
                                                ctx.robust, need_x3d)
            return (gx3d.transpose(1, 2) if need_x3d else None, -(gq.transpose(1, 2) * w2d) if need_x2d else None,
                    gw.transpose(1, 2) if need_w2d else None, gd if need_delta else None, *none)
        if ctx.compiled:
            # one fused pass over all samples (nothing of size S·N·n is materialised)
            A = affine.reshape(S, N, 12).permute(1, 2, 0).contiguous()
            planes = _planar_prep(x3d, x2d, w2d)
            r1, gx3d = _run_planar('grad', (A, *planes, delta, lb, ub, grad_out.t().contiguous()), ctx.z_min,
                                   ctx.robust)
            gx2d = -(r1[:, 2:4] * planes[2])
            return gx3d.transpose(1, 2), gx2d.transpose(1, 2), r1[:, 0:2].transpose(1, 2), r1[:, 4].sum(-1), *none
        g_feat = x3d.new_zeros(N, 4, n) if need_x3d else None
        g_q = x3d.new_zeros(N, 2, n) if need_x2d else None
        g_w = x3d.new_zeros(N, 2, n) if need_w2d else None
        g_d = x3d.new_zeros(N) if need_delta else None
        feat, x2dT, w2dT, dlt, lbT, ubT = _eager_prep(x3d, x2d, w2d, delta, lb, ub)
        step = max(1, ctx.chunk_elems // (N * n))
        for s0 in range(0, S, step):
            c = _chunk_forward(affine[s0:s0 + step], feat, x2dT, w2dT, dlt, lbT, ubT, ctx.z_min, True, ctx.robust)
            gT = grad_out[s0:s0 + step].t().unsqueeze(-1)  # (N, s, 1)
            huber = ctx.robust == 'huber'
            if need_delta:  # Huber: dρ/dδ = s − δ in the linear zone, 0 in the quadratic zone
                dd = (c.sn - c.m) if huber else drho_ddelta(c.sn, dlt, ctx.robust)
                g_d += (dd * gT).sum(dim=(1, 2))
            # IRLS weight ω(s) (Huber: min(1, δ/s)) times upstream gradient
            hg = ((c.m / c.sn) if huber else irls_weight(c.sn, dlt, ctx.robust)).mul_(gT)
            q = c.r.mul_(hg.unsqueeze(2))  # ψ·g with ψ = dρ/dr (N, s, 2, n)
            if need_w2d:  # dρ/dw = ψ ⊙ e
                g_w += (q * c.e).sum(dim=1)
            if need_x2d:  # dρ/dx2d = −ψ ⊙ w
                g_q += q.sum(dim=1)
            if need_x3d:
                s = q.shape[1]
                dh = x3d.new_empty(N, s, 3, n)
                a = torch.mul(q, w2dT, out=dh[:, :, :2]).mul_(c.valid).div_(c.z.unsqueeze(2))  # dL/dh_uv
                torch.mul((a * c.uv).sum(dim=2), c.zok, out=dh[:, :, 2]).neg_()  # dL/dh_z
                g_feat += torch.bmm(c.Ab.transpose(1, 2), dh.view(N, s * 3, n))
        gx3d = g_feat[:, :3].transpose(1, 2) if need_x3d else None
        gx2d = -(g_q.transpose(1, 2) * w2d) if need_x2d else None
        gw2d = g_w.transpose(1, 2) if need_w2d else None
        return gx3d, gx2d, gw2d, g_d, *none


@fp32
def sampled_pnp_cost(x3d: Tensor, x2d: Tensor, w2d: Tensor, poses: Tensor, camera: CameraParams, delta: Tensor,
                     chunk_elems: Optional[int] = None, backend: str = 'default', robust: str = 'huber') -> Tensor:
    """Robust cost of many poses per object, memory-bounded and differentiable in the correspondences.

    Equal to :func:`.cost.pnp_cost` (same clamping and Huber arithmetic) but fused: nothing of size ``S·N·n`` is
    kept for the backward pass, which recomputes what it needs.

    Args:
        x3d: (N, n, 3) metres, object frame. x2d: (N, n, 2) pixels. w2d: (N, n, 2).
        poses: (S, N, 4) ``[x, y, z, yaw]`` or (S, N, 7) ``[x, y, z, w, i, j, k]``, camera frame. Treated as
            constants (no gradient flows to the poses or the camera).
        camera: :class:`CameraParams` (N, ...).
        delta: (N,) Huber threshold.
        chunk_elems: points per chunk of the eager implementation (``samples_per_chunk·N·n``); default by device
            (:func:`.solver.default_chunk_elems`: cache-sized on the CPU, memory-bounded on a GPU).
        backend: ``'default'`` / ``'eager'`` (bmm + in-place element-wise ops over cache-sized chunks; on the
            CPU ``'default'`` and ``'auto'`` run the native C++ kernels instead, see :mod:`._native`, unless
            ``EPROPNP_DISABLE_NATIVE=1``),
            ``'compile'`` (``torch.compile``-fused kernels, ~10× faster on CPU; compiled once per process, 10–120 s,
            falls back to eager with a warning if compilation fails) or ``'auto'`` (compile when
            ``S·N·n ≥ 2¹⁸``; the environment variable ``EPROPNP_DISABLE_COMPILE=1`` forces eager).
        robust: ``'huber'`` (default) or ``'cauchy'`` (:mod:`.robust`).

    Returns:
        (S, N) cost, differentiable w.r.t. x3d, x2d, w2d and delta.
    """
    return _sampled_cost(x3d, x2d, w2d, poses, camera, delta, chunk_elems, backend, robust=check_robust(robust))


def _sampled_cost(x3d, x2d, w2d, poses, camera, delta, chunk_elems, backend, precomputed=None, robust='huber'):
    """:func:`sampled_pnp_cost`; with ``precomputed`` (S, N) (the same costs, computed without grad) nothing is
    recomputed and only the backward is attached (used by AMIS for one backward pass over all rounds)."""
    if poses.dim() != 3 or poses.shape[1] != x3d.shape[0]:
        raise ValueError(f'poses must be (S, N, 4|7) with N = {x3d.shape[0]}, got {tuple(poses.shape)}')
    native = _native.enabled(x3d, x2d, w2d, backend=backend)  # CPU: the C++ kernels before torch.compile
    affine = (_native_affine if native else _pose_affine)(poses.detach(), camera.cam_mats.detach(),
                                                          *((x3d.dtype,) if native else ()))
    delta = torch.as_tensor(delta, dtype=x3d.dtype, device=x3d.device).expand(x3d.shape[0])
    compiled = not native and _compile.use_compile(backend, poses.shape[0] * x3d.shape[0] * x3d.shape[1])
    chunk_elems = default_chunk_elems(x3d.device) if chunk_elems is None else chunk_elems
    return _SampledCost.apply(x3d, x2d, w2d, delta, affine, camera.lb.detach(), camera.ub.detach(),
                              float(camera.z_min), int(chunk_elems), compiled, robust, precomputed, native)
