"""Monte Carlo 3D scoring at test time (docs/method.md §6.2, ``mc_scoring_ratio``).

The Monte-Carlo forward of the PnP layer gives, per object, K weighted pose samples ``y_k`` (self-normalised
importance weights ``w_k = softmax(logw)_k``) and the solver's pose ``y*``. The "te" score of a pose is the training
target of the 3D score (docs/method.md §5.5), ``s(te) = clamp((2.5 − log2 te)/4, 0, 1)`` of its BEV translation error
``te = ‖y[x, z] − y*[x, z]‖``; its posterior expectation measures how concentrated the pose distribution is around
the solution::

    score_mc = Σ_k w_k · s(‖y_k[x, z] − y*[x, z]‖)          in [0, 1]
    score3d  = score3d_net^(1 − r) · score_mc^r              geometric blend, r = mc_scoring_ratio ∈ [0, 1]

``r = 0`` keeps the network's 3D score (default; no Monte Carlo run), ``r = 1`` uses the posterior alone.
"""
import torch
from torch import Tensor

__all__ = ['te_score', 'mc_te_score', 'blend_scores']


def te_score(te: Tensor) -> Tensor:
    """BEV translation error (metres, ≥ 0) → score ``clamp((2.5 − log2 te)/4, 0, 1)`` (1 for te ≤ 2^-1.5 m)."""
    return ((2.5 - torch.log2(te.clamp(min=1e-12))) / 4).clamp(0, 1)


def mc_te_score(pose_samples: Tensor, logw: Tensor, pose_opt: Tensor) -> Tensor:
    """Posterior expectation of the te score around ``pose_opt``.

    Args:
        pose_samples: (K, N, 4) ``[x, y, z, yaw]`` camera frame.
        logw: (K, N) log importance weights (normalised here by a softmax over K).
        pose_opt: (N, 4) the output pose ``y*``.

    Returns:
        (N,) score in [0, 1] (detached).
    """
    w = torch.softmax(logw.detach(), dim=0)
    te = (pose_samples[..., [0, 2]] - pose_opt[None, :, [0, 2]]).norm(dim=-1)  # (K, N)
    return (w * te_score(te)).sum(dim=0).detach()


def blend_scores(score3d: Tensor, score_mc: Tensor, ratio: float) -> Tensor:
    """``score3d^(1 − r) · score_mc^r`` (ratio 0: ``score3d``, ratio 1: ``score_mc``)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'mc_scoring_ratio must be in [0, 1], got {ratio}')
    if ratio == 0:
        return score3d
    return score3d.pow(1 - ratio) * score_mc.pow(ratio)
