"""Class-specific log-dimension coder (docs/method.md §3.7).

``encode(d, c) = (log d − log mean_c) / (std_c / mean_c)``, ``decode(e, c) = exp(e·std_c/mean_c + log mean_c)``,
dims ordered ``[l, h, w]`` in metres (object-local x, y, z extents).
"""
from typing import Sequence

import torch
from mmdet3d.registry import TASK_UTILS
from torch import Tensor

from epropnp_det.utils.device_path import on_device_path

__all__ = ['EProPnPMultiClassLogDimCoder', 'NUSCENES_DIM_MEANS', 'NUSCENES_DIM_STDS']

# car, truck, trailer, bus, construction_vehicle, bicycle, motorcycle, pedestrian, traffic_cone, barrier
NUSCENES_DIM_MEANS = ((4.62, 1.73, 1.96), (6.94, 2.84, 2.52), (12.56, 3.89, 2.94), (11.22, 3.50, 2.95),
                      (6.68, 3.21, 2.85), (1.70, 1.29, 0.61), (2.11, 1.46, 0.78), (0.73, 1.77, 0.67),
                      (0.41, 1.08, 0.41), (0.50, 0.99, 2.52))
NUSCENES_DIM_STDS = ((0.46, 0.24, 0.16), (2.11, 0.84, 0.45), (4.50, 0.77, 0.54), (2.06, 0.49, 0.33),
                     (3.23, 0.93, 1.07), (0.26, 0.35, 0.16), (0.33, 0.29, 0.17), (0.19, 0.19, 0.14),
                     (0.14, 0.27, 0.13), (0.17, 0.15, 0.62))


@TASK_UTILS.register_module()
class EProPnPMultiClassLogDimCoder:
    """Log-dims coder with per-class means / stds (each ``(num_classes, 3)``, metres, ``[l, h, w]``)."""

    def __init__(self, target_means: Sequence = NUSCENES_DIM_MEANS, target_stds: Sequence = NUSCENES_DIM_STDS):
        means = torch.as_tensor(target_means, dtype=torch.float32)
        stds = torch.as_tensor(target_stds, dtype=torch.float32)
        if means.dim() != 2 or means.shape[-1] != 3 or stds.shape != means.shape:
            raise ValueError(f'target_means/target_stds must both be (num_classes, 3), got {tuple(means.shape)} '
                             f'and {tuple(stds.shape)}')
        if (means <= 0).any() or (stds <= 0).any():
            raise ValueError('target_means and target_stds must be positive')
        self.log_means = means.log()
        self.rel_stds = stds / means

    @property
    def num_classes(self) -> int:
        return self.log_means.shape[0]

    def _params(self, labels: Tensor, ref: Tensor):
        # checked where it is free (host tensors); on a device the check would synchronise (the labels are
        # validated when the dataset is built, and an out-of-range index still fails in the gather below)
        if not on_device_path(labels) and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f'labels must be in [0, {self.num_classes}), got range '
                             f'[{int(labels.min())}, {int(labels.max())}]')
        return self.log_means.to(ref)[labels], self.rel_stds.to(ref)[labels]

    def encode(self, dims: Tensor, labels: Tensor) -> Tensor:
        """(N, 3) dims in metres, (N,) labels → (N, 3) codes."""
        log_mean, rel_std = self._params(labels, dims)
        return (dims.log() - log_mean) / rel_std

    def decode(self, codes: Tensor, labels: Tensor) -> Tensor:
        """(N, 3) codes, (N,) labels → (N, 3) dims in metres."""
        log_mean, rel_std = self._params(labels, codes)
        return (codes * rel_std + log_mean).exp()
