"""Monte-Carlo KL pose loss (paper eq. 5–7, docs/method.md §2.11), torch only.

With the pose density ``p(y | X) = exp(−cost(y)) / Z``, ``Z = ∫ exp(−cost(y)) dy``, the KL divergence from the
target Dirac at ``y_gt`` is, up to the target's (constant) entropy, ``cost(y_gt) + log Z``. AMIS
(:mod:`.epropnp`) gives ``K`` log-weights ``logw_k = −cost(y_k) − log q̄(y_k)``, and ``log Z`` is estimated by
``logsumexp_k(logw_k) − log K``. The gradient is eq. (7):
``∂L/∂θ = ∂cost(y_gt)/∂θ − E_{y~p}[∂cost(y)/∂θ]`` (self-normalised importance-sampling estimate).

Fixes w.r.t. the reference (docs/method.md §13.4): the ``−log K`` constant is included, so the value is the KL estimate
itself (comparable across ``mc_samples`` settings); non-finite per-object terms are excluded **and counted**
(returned as ``num_nonfinite``) instead of being silently set to zero.
"""
import math
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from ._amp import fp32

__all__ = ['monte_carlo_kl', 'monte_carlo_kl_loss', 'MonteCarloLossOutput', 'MonteCarloPoseLoss']


def monte_carlo_kl(cost_target: Tensor, logw: Tensor) -> Tensor:
    """Per-object KL estimate ``cost(y_gt) + logsumexp_k(logw_k) − log K``.

    Args:
        cost_target: (N,) cost at the target pose (differentiable).
        logw: (K, N) importance log-weights (differentiable through the sampled costs).

    Returns:
        (N,) KL estimate (up to the target entropy), in nats.
    """
    if logw.dim() != 2 or cost_target.shape != logw.shape[1:]:
        raise ValueError(f'cost_target must be (N,) and logw (K, N), got {tuple(cost_target.shape)} and '
                         f'{tuple(logw.shape)}')
    return cost_target + torch.logsumexp(logw, dim=0) - math.log(logw.shape[0])


class MonteCarloLossOutput(NamedTuple):
    """``loss`` (scalar) and ``num_nonfinite`` (int64 scalar tensor: objects excluded for NaN/Inf)."""
    loss: Tensor
    num_nonfinite: Tensor


def monte_carlo_kl_loss(cost_target: Tensor, logw: Tensor, weight: Optional[Tensor] = None,
                        avg_factor: Optional[Union[float, Tensor]] = None) -> MonteCarloLossOutput:
    """Weighted Monte-Carlo KL loss with mmdet reduction semantics.

    ``loss = Σ_obj L_obj · weight_obj / avg_factor`` over the objects whose ``L_obj`` is finite (mean over the
    finite objects if ``avg_factor`` is ``None``). Non-finite objects contribute neither value nor gradient
    (their inputs are masked before the log-sum-exp, so no ``0 · NaN`` reaches the graph), and are counted.

    Args:
        cost_target: (N,) differentiable cost at the target pose.
        logw: (K, N) importance log-weights.
        weight: (N,) per-object weights (e.g. sample weights), or ``None``.
        avg_factor: normaliser (float or scalar tensor), or ``None``.

    Returns:
        :class:`MonteCarloLossOutput` (no host synchronisation).
    """
    with torch.no_grad():
        ok = torch.isfinite(monte_carlo_kl(cost_target, logw))
        if weight is not None:
            ok &= torch.isfinite(weight)
    cost_safe = torch.where(ok, cost_target, torch.zeros_like(cost_target))
    logw_safe = torch.where(ok, logw, torch.zeros_like(logw))
    per_obj = monte_carlo_kl(cost_safe, logw_safe)
    if weight is not None:
        per_obj = per_obj * torch.where(ok, weight, torch.zeros_like(weight))
    per_obj = torch.where(ok, per_obj, torch.zeros_like(per_obj))
    if avg_factor is None:
        loss = per_obj.sum() / ok.sum().clamp(min=1)
    else:
        loss = per_obj.sum() / avg_factor
    return MonteCarloLossOutput(loss, (~ok).sum())


class MonteCarloPoseLoss(nn.Module):
    """Monte-Carlo KL pose loss with the running normalisation of docs/method.md §2.11 (torch only).

    ``forward`` returns ``loss_weight · monte_carlo_kl_loss(...) / norm_factor``. The buffer ``norm_factor``
    (init 1) is an EMA of the batch's mean predicted weight scale: in training mode, when ``batch_norm_factor`` is
    given, ``norm_factor ← (1 − momentum)·norm_factor + momentum·reduce_fn(batch_norm_factor)`` **before** the loss
    is computed, and the updated value is used for the current step. Nothing is updated in eval mode. This buffer
    is the only state the module changes. Dividing by it keeps the loss scale (which grows linearly with the w2d
    scale) and hence the effective learning rate stable.

    Args:
        loss_weight: multiplier (0.15 in v1-basic, 0.5 in v1b/v2).
        momentum: EMA momentum (0.01).
        reduce_fn: optional callable applied to the batch value before the EMA, e.g. a distributed all-reduce mean
            (kept as an argument so this module stays torch-only); identity if ``None``.
    """

    def __init__(self, loss_weight: float = 1.0, momentum: float = 0.01,
                 reduce_fn: Optional[Callable[[Tensor], Tensor]] = None):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.momentum = float(momentum)
        self.reduce_fn = reduce_fn
        self.register_buffer('norm_factor', torch.tensor(1.0, dtype=torch.float))

    @fp32
    def forward(self, cost_target: Tensor, logw: Tensor, batch_norm_factor: Optional[Union[float, Tensor]] = None,
                weight: Optional[Tensor] = None, avg_factor: Optional[Union[float, Tensor]] = None
                ) -> MonteCarloLossOutput:
        """Args: cost_target (N,), logw (K, N), batch_norm_factor (scalar, e.g.
        ``Σ(scale·w) / max(2N, 1)``), weight (N,), avg_factor. Returns :class:`MonteCarloLossOutput`."""
        if self.training and batch_norm_factor is not None:
            with torch.no_grad():
                batch = torch.as_tensor(batch_norm_factor, dtype=self.norm_factor.dtype,
                                        device=self.norm_factor.device).detach()
                if self.reduce_fn is not None:
                    batch = self.reduce_fn(batch)
                self.norm_factor.mul_(1 - self.momentum).add_(self.momentum * batch)
        out = monte_carlo_kl_loss(cost_target, logw, weight, avg_factor)
        return MonteCarloLossOutput(out.loss * (self.loss_weight / self.norm_factor.to(out.loss.dtype)),
                                    out.num_nonfinite)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, momentum={self.momentum}'
