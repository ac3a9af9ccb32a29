"""Training-loop components (optim wrapper, hooks); importing registers them in mmdet3d's registries."""
from .hooks import EProPnPLossRecorderHook, EProPnPRestoreTorchRNGHook
from .optim_wrapper import EProPnPAmpOptimWrapper, EProPnPOptimWrapper, nan_safe_clip_grad_norm_

__all__ = ['EProPnPOptimWrapper', 'EProPnPAmpOptimWrapper', 'nan_safe_clip_grad_norm_', 'EProPnPLossRecorderHook',
           'EProPnPRestoreTorchRNGHook']
