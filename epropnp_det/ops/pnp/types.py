"""Immutable containers passed between the PnP operators.

Everything is a frozen dataclass of tensors: cameras and solutions are passed as arguments and returned as
values, never stored on modules between calls (this fixes docs/method.md §13.13, where the original stored camera and
cost parameters on shared modules before every solve).

Shapes: ``N`` objects, ``D`` pose parameters (4: ``[x, y, z, yaw]``; 7: ``[x, y, z, w, i, j, k]``), ``T`` tangent
dimension (4 for 4-DoF, 6 for 6-DoF). All poses are in the camera frame (OpenCV: +x right, +y down, +z forward),
metres and radians.
"""
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..pixels import k_projection_offset

__all__ = ['CameraParams', 'PnPSolution']


@dataclass(frozen=True)
class CameraParams:
    """Pinhole camera for a batch of ``N`` objects (one camera row per object).

    Attributes:
        cam_mats: (N, 3, 3) intrinsics ``K`` of the **original** image; the last row must be ``[0, 0, 1]``.
        lb: (N, 2) lower clamp bounds of projected pixel coordinates ``(u, v)``.
        ub: (N, 2) upper clamp bounds of projected pixel coordinates ``(u, v)``.
        z_min: depth clamp in metres (points closer than this are projected as if at ``z_min``).

    Poses with extra leading dims (e.g. ``(S, N, 4)`` Monte-Carlo samples) broadcast against the ``N`` axis, so
    there is no need to repeat the camera for proposals; :meth:`expand` / :meth:`repeat` exist for callers that
    flatten proposal dims into the object axis.
    """
    cam_mats: Tensor
    lb: Tensor
    ub: Tensor
    z_min: float = 0.1

    def __post_init__(self):
        if self.cam_mats.dim() < 3 or self.cam_mats.shape[-2:] != (3, 3):
            raise ValueError(f'CameraParams.cam_mats must be (N, 3, 3), got {tuple(self.cam_mats.shape)}')
        lead = self.cam_mats.shape[:-2]
        for name in ('lb', 'ub'):
            v = getattr(self, name)
            if v.shape != (*lead, 2):
                raise ValueError(f'CameraParams.{name} must be {(*lead, 2)}, got {tuple(v.shape)}')

    @classmethod
    def from_image_shape(cls, cam_mats: Tensor, img_hw: Union[Tensor, Sequence], convention: str = 'v1',
                         allowed_border: float = 200., z_min: float = 0.1) -> 'CameraParams':
        """Build the camera with the clamp bounds of docs/method.md §2.2 / §0.2.

        Args:
            cam_mats: (N, 3, 3) original intrinsics.
            img_hw: (N, 2) or (2,) original image ``[height, width]`` in pixels.
            convention: ``'v1'`` (integer pixel centres: bounds ``[-0.5 - b, (W, H) - 0.5 + b]``) or ``'v2'``
                (continuous coordinates: bounds ``[-b, (W, H) + b]``).
            allowed_border: ``b``, pixels projected points may go outside the image before being clamped.
            z_min: depth clamp (metres).
        """
        img_hw = torch.as_tensor(img_hw, dtype=cam_mats.dtype, device=cam_mats.device)
        wh = img_hw.flip(-1).expand(*cam_mats.shape[:-2], 2)
        shift = -k_projection_offset(convention)  # the continuous image [0, W] as K-projections
        lb = torch.full_like(wh, shift - allowed_border)
        ub = wh + (shift + allowed_border)
        return cls(cam_mats, lb, ub, z_min)

    @classmethod
    def unbounded(cls, cam_mats: Tensor, z_min: float = 0.1) -> 'CameraParams':
        """Camera whose projections are never clamped to an image (bounds ``∓inf``), e.g. normalised image
        coordinates with ``K = I`` as in the original's ``PerspectiveCamera()`` demo.

        Args:
            cam_mats: (N, 3, 3) intrinsics (last row ``[0, 0, 1]``); a single (3, 3) matrix is expanded to (1, 3, 3).
            z_min: depth clamp in metres (points closer than this are projected as if at ``z_min``).

        >>> cam = CameraParams.unbounded(torch.eye(3).expand(2, 3, 3))
        >>> cam.lb[0].tolist(), cam.ub[0].tolist()
        ([-inf, -inf], [inf, inf])
        """
        if cam_mats.dim() == 2:
            cam_mats = cam_mats[None]
        lb = torch.full((*cam_mats.shape[:-2], 2), -math.inf, dtype=cam_mats.dtype, device=cam_mats.device)
        return cls(cam_mats, lb, -lb, z_min)

    @property
    def num_objects(self) -> int:
        return self.cam_mats.shape[-3]

    def to(self, *args, **kwargs) -> 'CameraParams':
        return replace(self, cam_mats=self.cam_mats.to(*args, **kwargs), lb=self.lb.to(*args, **kwargs),
                       ub=self.ub.to(*args, **kwargs))

    def index(self, idx) -> 'CameraParams':
        """Select objects: ``idx`` indexes the leading (object) axis (bool mask, long indices or slice)."""
        return replace(self, cam_mats=self.cam_mats[idx], lb=self.lb[idx], ub=self.ub[idx])

    def expand(self, *lead: int) -> 'CameraParams':
        """View with extra leading dims: (N, ...) -> (*lead, N, ...) (no copy)."""
        return replace(self, cam_mats=self.cam_mats.expand(*lead, *self.cam_mats.shape),
                       lb=self.lb.expand(*lead, *self.lb.shape), ub=self.ub.expand(*lead, *self.ub.shape))

    def repeat(self, k: int) -> 'CameraParams':
        """Tile along the object axis: (N, ...) -> (k*N, ...), matching ``x.repeat(k, ...)`` of per-object data."""
        return replace(self, cam_mats=self.cam_mats.repeat(k, 1, 1), lb=self.lb.repeat(k, 1),
                       ub=self.ub.repeat(k, 1))


@dataclass(frozen=True)
class PnPSolution:
    """Result of :func:`epropnp_det.ops.pnp.solver.solve_pnp` (all in the caller's, i.e. denormalised, frame).

    Attributes:
        pose: (N, D) solution, camera frame (``[x, y, z, yaw]`` or ``[x, y, z, w, i, j, k]``); detached.
        cost: (N,) robust cost at ``pose`` (the final pose, not one step stale); detached.
        cov: (N, T, T) Laplace covariance ``inv(J~^T J~ + eps I)`` at ``pose`` in the local (tangent)
            parameterisation, or ``None`` if not requested. With ``normalize=True`` the covariance is that of the
            normalised parameters; it is mapped back to the caller's frame by the linearised change of variables
            (:func:`~epropnp_det.ops.pnp.normalize.pnp_denormalize_cov`); ``eps·I`` is added in the normalised
            frame.
        pose_plus: (N, D) ``pose`` plus one differentiable Gauss-Newton step (docs/method.md §2.12), or ``None``.
        pose_free: (N, D) with ``with_free_solution``: the solution started from the RSLM result alone (``pose_init``
            not competing), i.e. what an independent solve without ``pose_init`` returns (detached), or ``None``.
    """
    pose: Tensor
    cost: Tensor
    cov: Optional[Tensor] = None
    pose_plus: Optional[Tensor] = None
    pose_free: Optional[Tensor] = None
