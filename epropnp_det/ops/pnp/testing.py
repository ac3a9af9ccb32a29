"""Synthetic PnP problems like the detector's (the recipe of `tools/benchmarks/pnp_layer.py`), for tests and benchmarks.

Objects: ``n`` points uniform in a (4, 1.6, 1.9) m box (object frame, centred) scaled by U(0.75, 1.25) per object;
pose x ∈ [−15, 15], y ∈ [0.5, 2], z ∈ [5, 60] m, yaw ∈ [−π, π], with the x/y ranges narrowed per object so that
the centre projects inside the image; nuScenes front camera f = 1266.4, c = (816.3, 491.5), 1600×900;
``x2d`` = clamped projection + N(0, noise_px²); ``w2d`` = softmax over points of N(0, 1) logits × U(0.5, 2) per
object and axis.
"""
import math
from typing import Optional

import torch

from .camera import project
from .rotation import random_quaternion
from .types import CameraParams

__all__ = ['make_problems', 'NUSC_FRONT_K', 'NUSC_IMG_HW']

NUSC_FRONT_K = ((1266.4, 0., 816.3), (0., 1266.4, 491.5), (0., 0., 1.))
NUSC_IMG_HW = (900., 1600.)


def make_problems(N: int, n: int, noise_px: float = 2., dtype: torch.dtype = torch.float32, device=None,
                  generator: Optional[torch.Generator] = None, dof: int = 4) -> dict:
    """Random problems (all randomness from ``generator``; computed in float64 then cast).

    Returns:
        dict with ``x3d (N, n, 3)`` metres object frame, ``x2d (N, n, 2)`` pixels, ``w2d (N, n, 2)``,
        ``pose_gt (N, 4)`` ``[x, y, z, yaw]`` (or ``(N, 7)`` ``[x, y, z, w, i, j, k]`` if ``dof == 6``) camera
        frame, ``cam_mats (N, 3, 3)``, ``img_hw (N, 2)`` and ``camera`` (:class:`CameraParams`, v1 bounds).
    """
    if dof not in (4, 6):
        raise ValueError(f'dof must be 4 or 6, got {dof}')
    g = dict(generator=generator, dtype=torch.float64)

    def uni(lo, hi, *shape):
        return torch.rand(*shape, **g) * (hi - lo) + lo

    K = torch.tensor(NUSC_FRONT_K, dtype=torch.float64).expand(N, 3, 3)
    img_hw = torch.tensor(NUSC_IMG_HW, dtype=torch.float64).expand(N, 2)
    f, cx, cy = K[0, 0, 0].item(), K[0, 0, 2].item(), K[0, 1, 2].item()
    h, w = NUSC_IMG_HW
    size = torch.tensor([4.0, 1.6, 1.9], dtype=torch.float64)
    x3d = (torch.rand(N, n, 3, **g) - 0.5) * size * uni(0.75, 1.25, N, 1, 1)
    z = uni(5., 60., N)
    x_lo, x_hi = torch.clamp(-cx * z / f, min=-15.), torch.clamp((w - cx) * z / f, max=15.)
    y_hi = torch.clamp((h - cy) * z / f, max=2.)
    x = torch.rand(N, **g) * (x_hi - x_lo) + x_lo
    y = torch.rand(N, **g) * (y_hi - 0.5) + 0.5
    if dof == 4:
        rot = uni(-math.pi, math.pi, N)[:, None]
    else:
        rot = random_quaternion((N,), dtype=torch.float64, generator=generator)
    pose_gt = torch.cat([torch.stack([x, y, z], dim=-1), rot], dim=-1)
    camera = CameraParams.from_image_shape(K, img_hw)
    x2d, _ = project(x3d, pose_gt, camera)
    x2d = x2d + torch.randn(N, n, 2, **g) * noise_px
    w2d = torch.softmax(torch.randn(N, n, 2, **g), dim=-2) * uni(0.5, 2., N, 1, 2)
    out = dict(x3d=x3d, x2d=x2d, w2d=w2d, pose_gt=pose_gt, cam_mats=K.contiguous(), img_hw=img_hw.contiguous())
    out = {k: v.to(dtype=dtype, device=device) for k, v in out.items()}
    out['camera'] = CameraParams.from_image_shape(out['cam_mats'], out['img_hw'])
    return out
