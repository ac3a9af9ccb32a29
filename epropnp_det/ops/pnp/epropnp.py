"""EPro-PnP: the pose posterior ``p(y | X) ∝ exp(−cost(y))`` by adaptive multiple importance sampling (AMIS).

Paper Algorithm 1 / docs/method.md §2.7–2.10. Given correspondences (x3d, x2d, w2d) the layer

1. finds the mode ``y*`` and the Laplace covariance with the LM solver (:func:`.solver.solve_pnp`, RSLM init,
   optionally competing with ``pose_init``, e.g. the ground truth in training),
2. fits the first proposal to (``y*``, covariance) and runs ``num_iter`` AMIS rounds of ``mc_samples / num_iter``
   samples: each round draws from its proposal, evaluates the (differentiable) cost of its samples, re-weights
   **all** samples so far with the balance-heuristic mixture ``q̄ = (1/(i+1)) Σ_j≤i q_j`` and re-estimates the next
   proposal from the weighted samples,
3. returns samples and log-weights ``logw = −cost(y) − log q̄(y)`` (gradient only through ``cost``).

``logsumexp(logw) − log K`` estimates ``log ∫ exp(−cost(y)) dy``, the normaliser needed by the KL loss
(:mod:`.losses`).

Proposals (4-DoF, docs/method.md §2.8): translation = multivariate Student-t (ν = 3); yaw = 0.75 von Mises + 0.25
uniform.
6-DoF (docs/method.md §2.10): translation as 4-DoF, rotation = angular central Gaussian on unit quaternions.

Shapes: ``N`` objects, ``n`` points, ``K`` samples; ``x3d (N, n, 3)`` metres, object frame; ``x2d (N, n, 2)``
pixels (original image); ``w2d (N, n, 2)``; poses camera frame ``[x, y, z, yaw]`` (4-DoF) or
``[x, y, z, w, i, j, k]`` (6-DoF); ``delta (N,)`` Huber threshold.

Differences from the reference (fixes): all sampling is torch with an optional ``torch.Generator`` and there is no
host/device synchronisation inside the AMIS loop (docs/method.md §13.18); nothing is stored on the module between calls
(docs/method.md §13.13); the Cholesky fallback is batched (no per-matrix Python loop); the sampled-cost evaluation is a
fused, chunked autograd function (:func:`sampled_pnp_cost`) whose memory does not grow with ``K·N·n``.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import _graphs
from ._amp import fp32
from .cost import adaptive_huber_delta
from .distributions import AngularCentralGaussian, MultivariateStudentT, VonMisesUniformMix, cholesky_with_fallback
from .normalize import pnp_denormalize, pnp_denormalize_cov, pnp_normalize
from .robust import check_robust
from .rotation import quaternion_tangent_matrix
from .sampled_cost import _flush_tiny, _sampled_cost, sampled_pnp_cost  # noqa: F401  (re-exported, old home)
from .solver import compute_pose_plus, default_chunk_elems, solve_pnp
from .types import CameraParams, PnPSolution

__all__ = ['exclude_nonfinite', 'sampled_pnp_cost', 'Proposal4DoF', 'Proposal6DoF', 'PoseSamples', 'amis',
           'EProPnPBase', 'EProPnP4DoF', 'EProPnP6DoF']


# =============================================================================================================
# Proposals
# =============================================================================================================
# κ from the Laplace variance and from the weighted mean resultant length (docs/method.md §2.8): 0.33 widens the
# proposal
_KAPPA_SCALE = 0.33
_KAPPA_EPS = 1e-5


def _weighted_translation(t: Tensor, w: Tensor, default_diag) -> Tuple[Tensor, Tensor]:
    """Weighted mean and Cholesky of the weighted covariance: t (M, N, 3), w (M, N) normalised over M."""
    mu = (w.unsqueeze(-1) * t).sum(dim=0)
    d = t - mu
    cov = torch.einsum('mn,mni,mnj->nij', w, d, d)
    return mu, cholesky_with_fallback(cov, default_diag)


@dataclass(frozen=True)
class Proposal4DoF:
    """Product proposal ``q(y) = t_ν=3(x, y, z; mode, L L^T) · VonMisesUniformMix(yaw; mode, κ)``.

    Attributes (leading dims ``*`` e.g. (I,) for the stacked AMIS proposals, then N):
        trans_mode: (*, N, 3) metres; trans_tril: (*, N, 3, 3) scale factor;
        rot_mode: (*, N) radians; kappa: (*, N) von Mises concentration.
    Densities are w.r.t. d(x, y, z, yaw) (metres³·radian).
    """
    trans_mode: Tensor
    trans_tril: Tensor
    rot_mode: Tensor
    kappa: Tensor

    dof = 4
    trans_fallback = (1.0, 1.0, 4.0)  # docs/method.md §2.8: substituted tril diag (covariance diag(1, 1, 16))

    def sample(self, num: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """(num, N, 4) samples (for unstacked proposals); the first ``round(num/4)`` yaws are uniform."""
        t = MultivariateStudentT(self.trans_mode, self.trans_tril).sample((num,), generator=generator)
        yaw = VonMisesUniformMix(self.rot_mode, self.kappa).sample(num, generator=generator)
        return torch.cat([t, yaw.unsqueeze(-1)], dim=-1)

    def log_prob(self, pose: Tensor) -> Tensor:
        """Log-density of poses (..., N, 4), broadcast against the parameters' leading dims."""
        return MultivariateStudentT(self.trans_mode, self.trans_tril).log_prob(pose[..., :3]) + \
            VonMisesUniformMix(self.rot_mode, self.kappa).log_prob(pose[..., 3])

    @classmethod
    def initial_fit(cls, pose_opt: Tensor, pose_cov: Tensor) -> 'Proposal4DoF':
        """From the mode (N, 4) and the Laplace covariance (N, 4, 4) (same frame)."""
        tril = cholesky_with_fallback(pose_cov[..., :3, :3], cls.trans_fallback)
        kappa = _KAPPA_SCALE / pose_cov[..., 3, 3].clamp(min=_KAPPA_EPS)
        return cls(pose_opt[..., :3], tril, pose_opt[..., 3], kappa)

    @classmethod
    def estimate(cls, samples: Tensor, weights: Tensor) -> 'Proposal4DoF':
        """Weighted fit: samples (M, N, 4), weights (M, N) summing to one over M (docs/method.md §2.8
        ``estimate_params``)."""
        mu, tril = _weighted_translation(samples[..., :3], weights, cls.trans_fallback)
        yaw = samples[..., 3]
        m_sin, m_cos = (weights * torch.sin(yaw)).sum(dim=0), (weights * torch.cos(yaw)).sum(dim=0)
        r2 = m_sin.square() + m_cos.square()
        # Banerjee et al. approximation of the von Mises MLE
        kappa = _KAPPA_SCALE * r2.sqrt().clamp(min=_KAPPA_EPS) * (2 - r2) / (1 - r2).clamp(min=_KAPPA_EPS)
        return cls(mu, tril, torch.atan2(m_sin, m_cos), kappa)


@dataclass(frozen=True)
class Proposal6DoF:
    """Product proposal: Student-t (ν = 3) translation × angular central Gaussian on the unit quaternion.

    Attributes: trans_mode (*, N, 3), trans_tril (*, N, 3, 3), rot_tril (*, N, 4, 4) (factor of the ACG Σ).
    Densities are w.r.t. d(x, y, z) × the surface measure of S³.
    """
    trans_mode: Tensor
    trans_tril: Tensor
    rot_tril: Tensor

    dof = 6
    trans_fallback = (1.0, 1.0, 1.0)
    acg_iters = 3

    def sample(self, num: int, generator: Optional[torch.Generator] = None) -> Tensor:
        t = MultivariateStudentT(self.trans_mode, self.trans_tril).sample((num,), generator=generator)
        q = AngularCentralGaussian(self.rot_tril).sample((num,), generator=generator)
        return torch.cat([t, q], dim=-1)

    def log_prob(self, pose: Tensor) -> Tensor:
        return MultivariateStudentT(self.trans_mode, self.trans_tril).log_prob(pose[..., :3]) + \
            AngularCentralGaussian(self.rot_tril).log_prob(pose[..., 3:])

    @staticmethod
    def _acg_tril(sigma: Tensor) -> Tensor:
        # dispersion floor det(Σ)^(1/4)·1e-3·I keeps the factor well conditioned (docs/method.md §2.10)
        eye = torch.eye(4, dtype=sigma.dtype, device=sigma.device)
        det = torch.linalg.det(sigma).clamp(min=0)
        sigma = sigma + det.pow(0.25)[..., None, None] * 1e-3 * eye
        return cholesky_with_fallback(sigma, (1.0, 1.0, 1.0, 1.0))

    @classmethod
    def initial_fit(cls, pose_opt: Tensor, pose_cov: Tensor) -> 'Proposal6DoF':
        """From the mode (N, 7) and the Laplace covariance (N, 6, 6) in the tangent parameterisation."""
        eye4 = torch.eye(4, dtype=pose_opt.dtype, device=pose_opt.device)
        trans_tril = cholesky_with_fallback(pose_cov[..., :3, :3], cls.trans_fallback)
        prec = torch.linalg.inv_ex(pose_cov[..., 3:, 3:])[0]
        T = quaternion_tangent_matrix(pose_opt[..., 3:])  # (N, 4, 3)
        sigma = torch.linalg.inv_ex(T @ prec @ T.transpose(-1, -2) + eye4)[0]
        sigma = sigma / sigma.diagonal(dim1=-2, dim2=-1).sum(dim=-1)[..., None, None]
        sigma = torch.where(torch.isfinite(sigma).all(dim=-1).all(dim=-1)[..., None, None], sigma, eye4)
        return cls(pose_opt[..., :3], trans_tril, cls._acg_tril(sigma))

    @classmethod
    def estimate(cls, samples: Tensor, weights: Tensor, eps: float = 1e-5) -> 'Proposal6DoF':
        """Weighted fit (docs/method.md §2.10): translation as 4-DoF; ACG MLE by 3 fixed-point iterations from Σ = I."""
        mu, trans_tril = _weighted_translation(samples[..., :3], weights, cls.trans_fallback)
        q = samples[..., 3:]  # (M, N, 4)
        eye4 = torch.eye(4, dtype=q.dtype, device=q.device)
        sigma = eye4.expand(q.shape[1], 4, 4)
        for _ in range(cls.acg_iters):
            prec = torch.linalg.inv_ex(sigma)[0]
            maha = torch.einsum('mni,nij,mnj->mn', q, prec, q)
            wh = weights / maha.clamp(min=eps)
            wh = wh / wh.sum(dim=0, keepdim=True)
            sigma = torch.einsum('mn,mni,mnj->nij', wh, q, q) + eps * eye4
        return cls(mu, trans_tril, cls._acg_tril(sigma))


def _stack_proposals(props):
    cls = type(props[0])
    return cls(*[torch.stack([getattr(p, f) for p in props]) for f in cls.__dataclass_fields__])


def _keep_finite(new, old):
    """Per object, keep the previous proposal where the new estimate is not finite (e.g. all weights −inf)."""
    ok = None
    for f in type(new).__dataclass_fields__:
        v = getattr(new, f)
        fin = torch.isfinite(v).reshape(*v.shape[:1], -1).all(dim=-1)
        ok = fin if ok is None else ok & fin
    vals = {}
    for f in type(new).__dataclass_fields__:
        v, o = getattr(new, f), getattr(old, f)
        vals[f] = torch.where(ok.reshape(-1, *([1] * (v.dim() - 1))), v, o)
    return type(new)(**vals)


# =============================================================================================================
# AMIS
# =============================================================================================================
@dataclass(frozen=True)
class PoseSamples:
    """Output of :meth:`EProPnPBase.monte_carlo_forward` (poses in the caller's camera frame).

    Attributes:
        pose_opt: (N, D) LM mode ``y*`` (detached).
        pose_cov: (N, T, T) Laplace covariance at ``y*`` in the local parameterisation (detached).
        cost_opt: (N,) cost at ``y*`` (detached).
        pose_samples: (K, N, D) importance samples (detached).
        logw: (K, N) log importance weights ``−cost(y_k) − log q̄(y_k)`` (differentiable through the cost).
        cost_init: (N,) differentiable cost at ``pose_init`` (the target in training), or ``None``.
        proposal: the stacked AMIS proposals (leading dim ``num_iter``) in the **normalised** frame
            (translations shifted by ``R·offset``, see :mod:`.normalize`), or the caller's frame if
            ``offset`` is ``None``.
        offset: (N, 3) normalisation offset (mean of x3d, object frame), or ``None``.
        pose_free: (N, D) with ``with_free_solution=True``: the solve from the RSLM start alone (no ``pose_init``),
            i.e. an independent solve sharing the RSLM draws (detached), or ``None``.
        valid: (N,) bool with ``nonfinite='exclude'``: objects whose inputs were all finite (the others have NaN
            outputs and zero gradients), or ``None``.
        pose_plus: (N, D) with ``with_pose_plus=True``: ``pose_opt`` plus one differentiable Gauss-Newton step
            (:func:`.solver.compute_pose_plus`, caller's frame), the input of the derivative regularisation on the
            training solution (:func:`.regularization.derivative_reg_losses`), or ``None``.
    """
    pose_opt: Tensor
    pose_cov: Tensor
    cost_opt: Tensor
    pose_samples: Tensor
    logw: Tensor
    cost_init: Optional[Tensor] = None
    proposal: Optional[object] = None
    offset: Optional[Tensor] = None
    pose_free: Optional[Tensor] = None
    valid: Optional[Tensor] = None
    pose_plus: Optional[Tensor] = None

    @property
    def log_normalizer(self) -> Tensor:
        """(N,) Monte-Carlo estimate of ``log ∫ exp(−cost(y)) dy`` = ``logsumexp(logw) − log K``."""
        return torch.logsumexp(self.logw, dim=0) - math.log(self.logw.shape[0])

    @property
    def weights(self) -> Tensor:
        """(K, N) self-normalised importance weights (detached), e.g. for posterior means."""
        return torch.softmax(self.logw.detach(), dim=0)


@fp32
def amis(x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Tensor, proposal0,
         num_samples: int = 512, num_iter: int = 4, generator: Optional[torch.Generator] = None,
         chunk_elems: Optional[int] = None, backend: str = 'default',
         robust: str = 'huber') -> Tuple[Tensor, Tensor, object]:
    """Adaptive multiple importance sampling (paper Algorithm 1, docs/method.md §2.7) from a first proposal.

    Args:
        x3d, x2d, w2d, camera, delta: the problem (x3d in the frame of the proposal, e.g. centred).
        proposal0: :class:`Proposal4DoF` or :class:`Proposal6DoF` with tensors (N, ...).
        num_samples: K, total samples; ``num_samples / num_iter`` per round (must divide).
        num_iter: AMIS rounds (proposals).
        generator: torch RNG for every draw.
        chunk_elems, backend, robust: see :func:`sampled_pnp_cost`.

    Returns:
        samples (K, N, D) (detached), logw (K, N) (differentiable through the cost), stacked proposals (I, N, ...).
    """
    samples, logw, props, _ = _amis(x3d, x2d, w2d, camera, delta, proposal0, num_samples, num_iter, generator,
                                    chunk_elems, backend, robust=check_robust(robust))
    return samples, logw, props


def _amis(x3d, x2d, w2d, camera, delta, proposal0, num_samples, num_iter, generator, chunk_elems, backend,
          extra_poses=None, robust='huber'):
    """:func:`amis`, plus the differentiable costs (E, N) of ``extra_poses`` (E, N, D) (e.g. the training
    target), or ``None``.

    The costs of every round are evaluated without grad (the proposals only need their values); one
    differentiable node over all K (+ E) poses then carries the backward: one fused gradient pass instead of one
    per round and another for the extra poses (same values and gradients). On a GPU the no-grad rounds are one
    CUDA-graph replay (:mod:`._graphs`)."""
    if num_samples % num_iter != 0:
        raise ValueError(f'mc_samples ({num_samples}) must be divisible by num_iter ({num_iter})')
    N = x3d.shape[0]
    chunk_elems = default_chunk_elems(x3d.device) if chunk_elems is None else int(chunk_elems)
    delta = torch.as_tensor(delta, dtype=x3d.dtype, device=x3d.device).expand(N)
    cls = type(proposal0)
    fields = tuple(getattr(proposal0, f).detach() for f in cls.__dataclass_fields__)
    extra = None if extra_poses is None else extra_poses.detach()
    tensors = (x3d.detach(), x2d.detach(), w2d.detach(), delta.detach(), camera.cam_mats.detach(),
               camera.lb.detach(), camera.ub.detach(), extra, *fields)
    static = (cls, int(num_samples), int(num_iter), int(chunk_elems), float(camera.z_min), robust)
    out = None
    if _graphs.enabled(backend, x3d.device):
        out = _graphs.run('amis', lambda *t: _amis_nograd(*t[:-1], generator=t[-1], static=static,
                                                          backend='eager'),
                          tensors, (0, 0, 0, 0, 0, 0, 0, 1) + (0,) * len(fields),
                          (1, 1, 1, (1,) * len(fields)), static, generator, N)
    if out is None:
        with torch.no_grad():
            out = _amis_nograd(*tensors, generator=generator, static=static, backend=backend)
    samples, costs, mix, prop_fields = out
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x3d, x2d, w2d, delta)):
        poses = samples if extra is None else torch.cat([samples, extra])
        costs = _sampled_cost(x3d, x2d, w2d, poses, camera, delta, chunk_elems, backend, precomputed=costs,
                              robust=robust)
    logw = -costs[:num_samples] - mix
    extra_cost = costs[num_samples:] if extra is not None else None
    return samples, logw, cls(*prop_fields), extra_cost


def _amis_nograd(x3d, x2d, w2d, delta, cam_mats, lb, ub, extra_poses, *prop0_fields, generator, static, backend):
    """The no-grad AMIS rounds as a pure function of tensors (capturable in a CUDA graph).

    Returns ``samples (K, N, D)``, ``costs (K + E, N)`` (samples, then ``extra_poses``), the balance-heuristic
    mixture ``log q̄ (K, N)`` and the stacked proposal fields ``(I, N, ...)``."""
    cls, num_samples, num_iter, chunk_elems, z_min, robust = static
    camera = CameraParams(cam_mats, lb, ub, z_min)
    S, I = num_samples // num_iter, num_iter
    N = x3d.shape[0]
    logq = x3d.new_zeros(I, I, S, N)  # logq[j, i] = log q_j(samples of round i)
    samples, costs, props = [], [], [cls(*prop0_fields)]
    for i in range(I):
        prop = props[i]
        smp = prop.sample(S, generator=generator)
        samples.append(smp)
        costs.append(sampled_pnp_cost(x3d, x2d, w2d, smp, camera, delta, chunk_elems, backend, robust))
        all_smp = torch.stack(samples)  # (i+1, S, N, D)
        logq[i, :i + 1] = prop.log_prob(all_smp)
        if i > 0:  # old proposals on the new samples: params (i, 1, N, ...) vs samples (S, N, D)
            old = _stack_proposals(props[:i])
            old = type(old)(*[getattr(old, f).unsqueeze(1) for f in type(old).__dataclass_fields__])
            logq[:i, i] = old.log_prob(smp)
        if i < I - 1:
            mix = torch.logsumexp(logq[:i + 1, :i + 1], dim=0) - math.log(i + 1)
            logw = -torch.stack(costs) - mix  # (i+1, S, N)
            w = torch.softmax(logw.reshape(-1, N), dim=0)
            new = type(prop).estimate(all_smp.reshape(-1, N, all_smp.shape[-1]), w)
            props.append(_keep_finite(new, prop))
    mix = torch.logsumexp(logq, dim=0) - math.log(I)  # balance heuristic over all proposals
    samples = torch.stack(samples).reshape(num_samples, N, -1)
    costs = torch.stack(costs).reshape(num_samples, N)
    if extra_poses is not None:
        # a handful of poses: not worth the compiled kernels (sized for many), but the native CPU kernels are
        # cheap at any size and give the values the backward is attached to with the same arithmetic
        extra_backend = 'default' if backend in ('default', 'auto') else 'eager'
        costs = torch.cat([costs, sampled_pnp_cost(x3d, x2d, w2d, extra_poses, camera, delta, chunk_elems,
                                                   extra_backend, robust)])
    stacked = _stack_proposals(props)
    return samples, costs, mix.reshape(num_samples, N), tuple(getattr(stacked, f) for f in cls.__dataclass_fields__)


# =============================================================================================================
# Modules
# =============================================================================================================
def exclude_nonfinite(x3d: Tensor, x2d: Tensor, w2d: Tensor, delta: Optional[Tensor] = None,
                      pose_init: Optional[Tensor] = None):
    """Objects with any non-finite input, replaced by harmless problems (no host synchronisation).

    Returns ``(valid (N,) bool, x3d, x2d, w2d, delta, pose_init)``: for invalid objects the points are zero, the
    weights zero (the solvers then return finite, meaningless poses), δ = 1 and ``pose_init`` a pose 10 m ahead.
    ``torch.where`` passes gradients only to the kept values: invalid objects send exactly zero gradient back,
    valid ones the same as without this step (so one NaN object cannot poison a training step). Compute anything
    differentiable from the inputs (e.g. the adaptive δ) from the returned copies: a node fed with NaN would turn
    the zero gradient into NaN (0 · NaN).
    """
    valid = torch.isfinite(x3d).flatten(1).all(1) & torch.isfinite(x2d).flatten(1).all(1) & \
        torch.isfinite(w2d).flatten(1).all(1)
    if delta is not None:
        valid = valid & torch.isfinite(delta)
    if pose_init is not None:
        valid = valid & torch.isfinite(pose_init).all(-1)
    m = valid[:, None, None]
    x3d, x2d, w2d = torch.where(m, x3d, 0.), torch.where(m, x2d, 0.), torch.where(m, w2d, 0.)
    if delta is not None:
        delta = torch.where(valid, delta, 1.)
    if pose_init is not None:
        safe = torch.zeros_like(pose_init)
        safe[:, 2] = 10.
        if pose_init.shape[-1] == 7:
            safe[:, 3] = 1.
        pose_init = torch.where(valid[:, None], pose_init, safe)
    return valid, x3d, x2d, w2d, delta, pose_init


def _mark(valid: Optional[Tensor], t: Optional[Tensor], obj_dim: int = 0) -> Optional[Tensor]:
    """NaN where ``valid`` (N,) is False along ``obj_dim`` of ``t``."""
    if valid is None or t is None:
        return t
    shape = [1] * t.dim()
    shape[obj_dim] = -1
    return torch.where(valid.reshape(shape), t, float('nan'))


class EProPnPBase(nn.Module):
    """Configuration holder for the EPro-PnP layer (no buffers, nothing mutated by calls).

    Args:
        mc_samples: K, Monte-Carlo samples per object (512 in v1-basic, 128 in v1b/v2).
        num_iter: AMIS rounds (4); ``mc_samples`` must be divisible by it.
        normalize: centre x3d before solving/sampling (docs/method.md §2.6; all configs use True).
        relative_delta: adaptive Huber δ factor used when no ``delta`` is passed.
        solver_cfg: keyword arguments of :func:`.solver.solve_pnp` for the training solve
            (default: 10 trust-region LM iterations after RSLM init).
        chunk_elems, cost_backend: chunking and backend (``'default'``, ``'eager'``, ``'auto'``, ``'compile'``,
            see :mod:`._compile`) of :func:`sampled_pnp_cost`; the backend is also the default ``backend`` of the
            solver (:func:`.solver.solve_pnp`). ``'default'`` never compiles (a first call takes seconds);
            ``'auto'`` compiles large calls (the detector's configs opt in); both replay the no-grad stages as CUDA
            graphs on a GPU.
        robust: ``'huber'`` (default, the published method) or ``'cauchy'`` robust reprojection cost
            (:mod:`.robust`), used by the solver, the Monte-Carlo samples and ``pose_plus`` alike.
        nonfinite: what a non-finite input (NaN/Inf in x3d, x2d, w2d, δ or pose_init) does: ``'raise'`` (a
            ``ValueError`` naming the field; one host synchronisation per call) or ``'exclude'`` (no
            synchronisation: such objects get NaN outputs — which :class:`.losses.MonteCarloPoseLoss` excludes and
            counts — and zero gradients, see :func:`exclude_nonfinite`; for training).
    """
    proposal_cls = Proposal4DoF

    def __init__(self, mc_samples: int = 512, num_iter: int = 4, normalize: bool = True, relative_delta: float = 0.5,
                 solver_cfg: Optional[dict] = None, chunk_elems: Optional[int] = None,
                 cost_backend: str = 'default', nonfinite: str = 'raise', robust: str = 'huber'):
        super().__init__()
        if nonfinite not in ('raise', 'exclude'):
            raise ValueError(f"nonfinite must be 'raise' or 'exclude', got {nonfinite!r}")
        self.nonfinite = nonfinite
        if mc_samples % num_iter != 0:
            raise ValueError(f'mc_samples ({mc_samples}) must be divisible by num_iter ({num_iter})')
        self.mc_samples, self.num_iter, self.normalize = int(mc_samples), int(num_iter), bool(normalize)
        self.relative_delta = float(relative_delta)
        self.solver_cfg = dict(num_iter=10) if solver_cfg is None else dict(solver_cfg)
        self.chunk_elems = None if chunk_elems is None else int(chunk_elems)
        self.cost_backend = str(cost_backend)
        self.robust = check_robust(robust)

    @property
    def dof(self) -> int:
        return self.proposal_cls.dof

    def extra_repr(self) -> str:
        return (f'dof={self.dof}, mc_samples={self.mc_samples}, num_iter={self.num_iter}, '
                f'normalize={self.normalize}, solver_cfg={self.solver_cfg}, robust={self.robust!r}')

    def check_pose(self, pose: Optional[Tensor], name: str = 'pose_init') -> None:
        """Raise a ``ValueError`` if ``pose`` (N, D) does not have this layer's parameterisation (e.g. a (N, 7)
        quaternion pose given to the 4-DoF layer, which would otherwise fail later on shapes)."""
        if pose is None:
            return
        want = 4 if self.dof == 4 else 7
        if pose.dim() != 2 or pose.shape[-1] != want:
            layout = '[x, y, z, yaw]' if self.dof == 4 else '[x, y, z, w, i, j, k]'
            other = ('use EProPnP6DoF for (N, 7) quaternion poses' if self.dof == 4
                     else 'use EProPnP4DoF for (N, 4) yaw poses')
            raise ValueError(f'{type(self).__name__}: {name} must be (N, {want}) {layout}, got '
                             f'{tuple(pose.shape)}; {other}')

    def _delta(self, x2d: Tensor, w2d: Tensor, delta: Optional[Tensor]) -> Tensor:
        # v1 behaviour: δ from x2d.detach() and a differentiable w2d
        return adaptive_huber_delta(x2d.detach(), w2d, self.relative_delta) if delta is None else delta

    @fp32
    def solve(self, x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams, delta: Optional[Tensor] = None,
              **kwargs) -> PnPSolution:
        """Forward to :func:`.solver.solve_pnp` with this layer's dof/normalisation and solver settings;
        ``kwargs`` override per call (e.g. ``fast_mode=True, num_iter=5`` for inference)."""
        cfg = dict(dict(backend=self.cost_backend, robust=self.robust), **self.solver_cfg)
        cfg.update(normalize=self.normalize, dof=self.dof)
        cfg.update(kwargs)
        self.check_pose(cfg.get('pose_init'))
        if self.nonfinite == 'raise':
            return solve_pnp(x3d, x2d, w2d, camera, self._delta(x2d, w2d, delta).detach(), **cfg)
        valid, x3d, x2d, w2d, delta, pose_init = exclude_nonfinite(x3d, x2d, w2d, delta, cfg.pop('pose_init', None))
        delta = self._delta(x2d, w2d, delta).detach()
        sol = solve_pnp(x3d, x2d, w2d, camera, delta, pose_init=pose_init, check_finite=False, **cfg)
        return PnPSolution(*(_mark(valid, t) for t in (sol.pose, sol.cost, sol.cov, sol.pose_plus, sol.pose_free)))

    forward = solve

    @fp32
    def monte_carlo_forward(self, x3d: Tensor, x2d: Tensor, w2d: Tensor, camera: CameraParams,
                            delta: Optional[Tensor] = None, pose_init: Optional[Tensor] = None,
                            force_init_solve: bool = True, generator: Optional[torch.Generator] = None,
                            mc_samples: Optional[int] = None, **solver_kwargs) -> PoseSamples:
        """Solve, then sample the pose posterior with AMIS (docs/method.md §2.7).

        Args:
            x3d: (N, n, 3) metres, object frame. x2d: (N, n, 2) pixels. w2d: (N, n, 2) weights.
            camera: :class:`CameraParams` (N, ...).
            delta: (N,) Huber threshold; default ``adaptive_huber_delta(x2d.detach(), w2d, relative_delta)``
                (differentiable in w2d, as v1).
            pose_init: (N, D) camera frame, e.g. the ground truth in training; its cost is returned as
                ``cost_init`` (differentiable) and it competes with the RSLM initialisation.
            force_init_solve: with ``pose_init``, also run RSLM and keep the better start per object.
            generator: torch RNG for RSLM and every Monte-Carlo draw.
            mc_samples: override ``self.mc_samples`` for this call (must be divisible by ``num_iter``).
            **solver_kwargs: per-call overrides of the solver settings; ``with_free_solution=True`` (with
                ``pose_init``) also returns ``pose_free``, the solution of an independent solve from the same
                RSLM draws (see :func:`.solver.solve_pnp`); ``with_pose_plus=True`` also returns ``pose_plus``,
                ``pose_opt`` (the training solution) plus one differentiable Gauss-Newton step, for the
                derivative regularisation on the training solution as in the original's 6-DoF training
                (:func:`.regularization.derivative_reg_losses`).

        Returns:
            :class:`PoseSamples`.
        """
        K = self.mc_samples if mc_samples is None else int(mc_samples)
        self.check_pose(pose_init)
        solver_kwargs = dict(solver_kwargs)
        with_pose_plus = bool(solver_kwargs.pop('with_pose_plus', False))
        valid = None
        if self.nonfinite == 'exclude':
            valid, x3d, x2d, w2d, delta, pose_init = exclude_nonfinite(x3d, x2d, w2d, delta, pose_init)
            solver_kwargs = dict(solver_kwargs, check_finite=False)
        delta = self._delta(x2d, w2d, delta)
        offset = None
        x3d_n, pose_init_n = x3d, pose_init
        if self.normalize:
            offset, x3d_n, pose_init_n = pnp_normalize(x3d, pose_init)
        cfg = dict(dict(backend=self.cost_backend, robust=self.robust), **self.solver_cfg)
        cfg.update(dof=self.dof)
        cfg.update(solver_kwargs)
        robust = cfg['robust']
        cfg.update(normalize=False, with_cov=True, pose_init=pose_init_n, force_init_solve=force_init_solve,
                   generator=generator)
        sol = solve_pnp(x3d_n, x2d, w2d, camera, delta.detach(), **cfg)
        with torch.no_grad():
            prop0 = self.proposal_cls.initial_fit(sol.pose, sol.cov)
        # the target's cost shares the samples' backward pass (one fused gradient kernel)
        samples, logw, props, cost_init = _amis(
            x3d_n, x2d, w2d, camera, delta, prop0, K, self.num_iter, generator, self.chunk_elems, self.cost_backend,
            extra_poses=None if pose_init_n is None else pose_init_n.detach()[None], robust=robust)
        if cost_init is not None:
            cost_init = cost_init[0]
        pose_opt, pose_cov, pose_free = sol.pose, sol.cov, sol.pose_free
        if self.normalize:
            pose_cov = pnp_denormalize_cov(offset, pose_opt, pose_cov)
            pose_opt = pnp_denormalize(offset, pose_opt)
            samples = pnp_denormalize(offset, samples)
            pose_free = None if pose_free is None else pnp_denormalize(offset, pose_free)
        pose_plus = None
        if with_pose_plus:  # from the caller's frame, with the normalisation order of compute_pose_plus
            pose_plus = compute_pose_plus(x3d, x2d, w2d, pose_opt, camera, delta, normalize=self.normalize,
                                          eps=cfg.get('eps', 1e-5), robust=robust)
        return PoseSamples(pose_opt=_mark(valid, pose_opt), pose_cov=_mark(valid, pose_cov),
                           cost_opt=_mark(valid, sol.cost), pose_samples=_mark(valid, samples, 1),
                           logw=_mark(valid, logw, 1), cost_init=_mark(valid, cost_init), proposal=props,
                           offset=offset, pose_free=_mark(valid, pose_free), valid=valid,
                           pose_plus=_mark(valid, pose_plus))


class EProPnP4DoF(EProPnPBase):
    """EPro-PnP layer for 4-DoF poses ``[x, y, z, yaw]`` (yaw about the camera y axis), as used by the detector.

    >>> layer = EProPnP4DoF(mc_samples=64, num_iter=4)
    >>> layer.dof
    4
    """
    proposal_cls = Proposal4DoF


class EProPnP6DoF(EProPnPBase):
    """EPro-PnP layer for 6-DoF poses ``[x, y, z, w, i, j, k]`` (unit quaternion, real first)."""
    proposal_cls = Proposal6DoF

