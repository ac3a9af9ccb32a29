"""Multivariate diagonal (MVD) Gaussian-mixture negative log-likelihood (docs/method.md §5.6, §10.14).

For a prediction with ``M`` mixture components along ``dim`` (default 1) and ``D`` coordinates in the last dim,
per remaining position (e.g. RoI cell)::

    r_m    = (pred_m − target) ⊙ exp(−logstd_m)          inverse std clamped at 1/eps (= 1e4)
    q_m    = ‖r_m‖₂
    ρ(q)   = 0.5·q²                        (quadratic, delta=None)
           = 0.5·q² if q ≤ δ else δ·q − 0.5·δ²   (Huber on the whitened residual norm, delta=δ > 0; v2)
    comp_m = −ρ(q_m) + log π_m − Σ_D logstd_m
    nll    = −logsumexp_m comp_m              (2π normalisers omitted, as in the reference)

``log π`` are log mixture weights normalised over the components (optionally ALSO over overlapping RoIs, see
``rois`` below); ``None`` means uniform weights ``−log M``. With ``rois`` the mixture additionally runs over the
overlapping RoIs of the same image: ``nll = −logsumexp_across_rois(logsumexp_m comp_m)``
(:func:`~epropnp_det.models.losses.roi_logsumexp.logsumexp_across_rois`), so a cell covered by several objects is
explained by any of them.

Standard deviations: per component via ``logstd`` (broadcastable to ``pred``), or one shared log-σ per loss via
``sigma`` (a fixed constant with ``freeze_sigma=True``, else a learnable scalar parameter ``log_sigma`` initialised at
``log(sigma)``) which overrides ``logstd``.

Adaptive weighting (``adaptive_weight=True``; a float buffer ``mean_inv_std``, init 1): in training, before the
loss is divided, ::

    m = rmean(Σ inv_std·π) / max(rmean(D·Σ π), eps)      (inv_std, π detached; rmean = all-reduce mean)
    mean_inv_std ← (1 − momentum)·mean_inv_std + momentum·m
    nll ← nll / max(mean_inv_std, eps)             (the freshly updated value, also used in eval mode)

i.e. the running π-weighted mean inverse standard deviation, which keeps the loss scale independent of how sharp
the predicted distributions get. ``rmean`` uses mmdet's ``reduce_mean`` so the buffer stays identical on all
ranks. Difference from the reference: when the all-reduced denominator is zero (no component anywhere in the
world batch) the buffer is left unchanged instead of decaying towards 0.

Weighting / reduction: the per-position ``nll`` (shape = ``pred`` without ``dim`` and the last dim) is multiplied by
``weight`` and reduced like mmdet losses (``sum / avg_factor`` for ``reduction='mean'`` with ``avg_factor``), then
multiplied by ``loss_weight``.
"""
import math
from typing import Optional, Tuple, Union

import torch
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from torch import Tensor, nn

from .roi_logsumexp import logsumexp_across_rois

__all__ = ['mvd_gaussian_mixture_nll', 'MVDGaussianMixtureNLLLoss']


def mvd_gaussian_mixture_nll(pred: Tensor, target: Optional[Tensor], logstd: Tensor,
                             log_mix: Optional[Tensor] = None, rois: Optional[Tensor] = None, dim: int = 1,
                             delta: Optional[float] = None, eps: float = 1e-4,
                             roi_pairs: Optional[Tuple[Tensor, Tensor]] = None):
    """Unreduced mixture NLL (see module docstring); no adaptive weighting.

    Args:
        pred: (n, M, *S, D) component means (mixture axis at ``dim``).
        target: broadcastable to ``pred`` (e.g. (n, 1, *S, D)), or ``None`` for zero.
        logstd: broadcastable to ``pred`` (per component), or (D,) / scalar (shared).
        log_mix: (n, M, *S) log mixture weights, or ``None`` (uniform).
        rois: (n, 5) RoIs for the cross-RoI mixture (then ``S`` must be (rh, rw) and ``dim`` 1), or ``None``.
        dim: mixture axis of ``pred``.
        delta: Huber threshold on the whitened norm (``None`` or ≤ 0: quadratic).
        eps: inverse std clamp ``exp(−logstd) ≤ 1/eps``.
        roi_pairs: the overlapping pairs of ``rois`` if already known (:func:`overlapping_roi_pairs`).

    Returns:
        nll (n, *S), inv_std (broadcastable to ``pred``), mix weights π (n, M, *S) or ``None`` if uniform.
    """
    diff = pred if target is None else pred - target
    inv_std = torch.exp(-logstd).clamp(max=1 / eps)
    sq = (diff * inv_std).square().sum(-1)  # (n, M, *S)
    if delta is None or delta <= 0:
        rho = 0.5 * sq
    else:
        if delta <= eps:
            raise ValueError(f'delta must be > eps={eps}, got {delta}')
        # the linear branch is evaluated on sq clamped at δ², which is exact where it is selected and keeps the
        # gradient of sqrt finite where it is not (q = 0)
        rho = torch.where(sq <= delta * delta, 0.5 * sq, delta * sq.clamp(min=delta * delta).sqrt() - 0.5 * delta ** 2)
    logdet = logstd.sum(-1) if logstd.dim() > 0 else logstd * pred.shape[-1]
    comp = -rho - logdet
    if log_mix is None:
        comp = comp - math.log(pred.shape[dim])
    else:
        comp = comp + log_mix
    if rois is None:
        nll = -torch.logsumexp(comp, dim=dim)
    else:
        if dim != 1 or comp.dim() != 4:
            raise ValueError('the cross-RoI mixture needs pred (n, M, rh, rw, D) with dim=1')
        nll = -logsumexp_across_rois(torch.logsumexp(comp, dim=1, keepdim=True), rois, roi_pairs)[:, 0]
    mix = None if log_mix is None else log_mix.exp()
    return nll, inv_std, mix


@MODELS.register_module()
class MVDGaussianMixtureNLLLoss(nn.Module):
    """Multivariate-diagonal Gaussian-mixture NLL with optional Huber robustification, shared σ and adaptive
    weighting (module docstring; docs/method.md §5.6 ``loss_proj``, §10.11–14 v2 ``loss_regr`` / ``loss_depth``).

    Constructor (stable signature; keyword names follow the reference except ``delta=None`` for "quadratic")::

        MVDGaussianMixtureNLLLoss(dim=1, reduction='mean', loss_weight=1.0, adaptive_weight=True,
                                  momentum=0.1, sigma=None, freeze_sigma=True, delta=None, eps=1e-4)

    Args:
        dim: mixture axis of ``pred``.
        reduction: 'none' | 'mean' | 'sum' (mmdet semantics with ``avg_factor``).
        loss_weight: multiplier of the reduced loss.
        adaptive_weight: divide by the running π-weighted mean inverse std (buffer ``mean_inv_std``, created only
            in this case).
        momentum: update rate of ``mean_inv_std`` (0.1).
        sigma: shared standard deviation (in the units of ``pred``); overrides the ``logstd`` argument of
            :meth:`forward`. ``None``: ``logstd`` must be given.
        freeze_sigma: with ``sigma``: fixed (True) or learnable scalar parameter ``log_sigma`` (False).
        delta: Huber threshold on the whitened residual norm; ``None`` (or ≤ 0, the reference's ``-1``) for the
            quadratic form. v1 ``loss_proj``: None; v2: ``loss_proj`` 2.0, ``loss_regr`` 2.0, ``loss_depth`` 0.3.
        eps: inverse-std clamp ``≤ 1/eps`` and floor of the adaptive normalisers (1e-4).

    ``forward(pred, target=None, logstd=None, log_mix=None, weight=None, avg_factor=None, rois=None,
    reduction_override=None, roi_pairs=None)``:

    * ``pred`` (n, M, *S, D), mixture axis ``dim``; ``target`` broadcastable (e.g. (n, 1, *S, D)) or ``None`` /
      ``0`` for zero; ``logstd`` broadcastable to ``pred`` (ignored with ``sigma``);
    * ``log_mix`` (n, M, *S) log mixture weights (normalised by the caller; ``None`` = uniform);
    * ``weight`` broadcastable to (n, *S); ``avg_factor`` float or scalar tensor;
    * ``rois`` (n, 5) ``[img, x1, y1, x2, y2]``: mix additionally over overlapping RoIs (needs ``S = (rh, rw)``);
      ``roi_pairs``: their overlapping pairs if the caller already has them (no second host read).

    Returns the reduced loss (or (n, *S) with ``reduction='none'``).
    """

    def __init__(self, dim: int = 1, reduction: str = 'mean', loss_weight: float = 1.0, adaptive_weight: bool = True,
                 momentum: float = 0.1, sigma: Optional[float] = None, freeze_sigma: bool = True,
                 delta: Optional[float] = None, eps: float = 1e-4):
        super().__init__()
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        if delta is not None and 0 < delta <= eps:
            raise ValueError(f'delta must be > eps={eps}, got {delta}')
        self.dim, self.reduction, self.loss_weight = dim, reduction, loss_weight
        self.adaptive_weight, self.momentum, self.eps = adaptive_weight, momentum, eps
        self.delta = delta if delta is not None and delta > 0 else None
        self.sigma, self.freeze_sigma = sigma, freeze_sigma
        if sigma is not None and not freeze_sigma:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma), dtype=torch.float32))
        else:
            self.log_sigma = None
        if adaptive_weight:
            self.register_buffer('mean_inv_std', torch.tensor(1.0))

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, loss_weight={self.loss_weight}, adaptive_weight={self.adaptive_weight}, '
                f'momentum={self.momentum}, sigma={self.sigma}, freeze_sigma={self.freeze_sigma}, '
                f'delta={self.delta}')

    def _logstd(self, pred: Tensor, logstd: Optional[Tensor]) -> Tensor:
        if self.log_sigma is not None:
            return self.log_sigma.to(pred.dtype).expand(pred.shape[-1])
        if self.sigma is not None:
            return pred.new_full((pred.shape[-1],), math.log(self.sigma))
        if logstd is None:
            raise ValueError('MVDGaussianMixtureNLLLoss: logstd is required when sigma is None')
        return logstd

    @torch.no_grad()
    def _update_mean_inv_std(self, pred: Tensor, inv_std: Tensor, mix: Optional[Tensor]) -> None:
        D = pred.shape[-1]
        if mix is None:  # uniform mixture
            mix = pred.new_full(pred.shape[:-1], 1.0 / pred.shape[self.dim])
        num = reduce_mean((inv_std.detach() * mix.detach()[..., None]).expand(pred.shape).sum())
        den = reduce_mean(mix.detach().sum() * D)
        # same decision on every rank (all-reduced); a where instead of an if: no host sync
        batch = num / den.clamp(min=self.eps)
        updated = self.mean_inv_std * (1 - self.momentum) + self.momentum * batch.to(self.mean_inv_std)
        self.mean_inv_std.copy_(torch.where(den > 0, updated, self.mean_inv_std))

    def forward(self, pred: Tensor, target: Union[Tensor, int, None] = None, logstd: Optional[Tensor] = None,
                log_mix: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                avg_factor: Union[float, Tensor, None] = None, rois: Optional[Tensor] = None,
                reduction_override: Optional[str] = None,
                roi_pairs: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        reduction = reduction_override or self.reduction
        if isinstance(target, (int, float)):
            if target != 0:
                raise ValueError('a scalar target must be 0')
            target = None
        logstd = self._logstd(pred, logstd)
        nll, inv_std, mix = mvd_gaussian_mixture_nll(pred, target, logstd, log_mix, rois, self.dim, self.delta,
                                                     self.eps, roi_pairs)
        if self.adaptive_weight:
            if self.training:
                self._update_mean_inv_std(pred, inv_std, mix)
            nll = nll / self.mean_inv_std.clamp(min=self.eps).to(nll.dtype)
        if weight is not None:
            weight = weight.to(nll.dtype).expand_as(nll)
        return self.loss_weight * weight_reduce_loss(nll, weight, reduction, avg_factor)
