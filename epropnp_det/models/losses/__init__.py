"""Losses of EPro-PnP-Det beyond mmdet's (the Monte-Carlo pose loss lives in ``epropnp_det.ops.pnp.losses``)."""
from .mvd_nll_loss import MVDGaussianMixtureNLLLoss, mvd_gaussian_mixture_nll
from .roi_logsumexp import logsoftmax_across_rois, logsumexp_across_rois, overlapping_roi_pairs
from .smooth_l1 import EProPnPSmoothL1Loss

__all__ = ['EProPnPSmoothL1Loss', 'MVDGaussianMixtureNLLLoss', 'mvd_gaussian_mixture_nll', 'logsumexp_across_rois',
           'logsoftmax_across_rois', 'overlapping_roi_pairs']
