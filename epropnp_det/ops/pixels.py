"""The pixel-coordinate conventions of the project, in one place (docs/method.md §0.2).

**Continuous pixel coordinates**: pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5`` and an image of
width ``W`` spans ``[0, W]``. Image transforms (``img_transform``), projected 2D boxes and the network's reference
points live in continuous coordinates.

**K-projections** ``u = fx·X/Z + cx`` (what the PnP layer compares with ``x2d``) depend on how the intrinsics were
calibrated:

* ``'v1'``: ``K`` projects pixel *centres* to integers (``u = i`` at the centre of pixel ``i``):
  ``continuous = u + 0.5``;
* ``'v2'``: ``K`` projects to continuous coordinates: ``continuous = u``.

:data:`PIXEL_CONVENTIONS` maps each convention to that offset; every module that converts between the two forms
imports it (or the functions below) from here. Pure Python / torch (importable with torch alone).
"""
from typing import Union

from torch import Tensor

__all__ = ['PIXEL_CONVENTIONS', 'check_pixel_convention', 'k_projection_offset', 'k_projection_to_continuous',
           'continuous_to_k_projection']

#: offset added to a K-projection to get the continuous pixel coordinate
PIXEL_CONVENTIONS = {'v1': 0.5, 'v2': 0.0}


def check_pixel_convention(convention: str, name: str = 'pixel_convention') -> str:
    """``convention`` if it is ``'v1'`` or ``'v2'``, else a ``ValueError`` naming the argument ``name``."""
    if convention not in PIXEL_CONVENTIONS:
        raise ValueError(f"{name} must be 'v1' or 'v2', got {convention!r}")
    return convention


def k_projection_offset(convention: str) -> float:
    """Continuous coordinate minus K-projection (pixels): 0.5 for ``'v1'``, 0 for ``'v2'``.

    >>> k_projection_offset('v1'), k_projection_offset('v2')
    (0.5, 0.0)
    """
    return PIXEL_CONVENTIONS[check_pixel_convention(convention, 'convention')]


def k_projection_to_continuous(uv: Union[Tensor, float], convention: str):
    """(..., 2) K-projections (or any array / float) → continuous pixel coordinates."""
    return uv + k_projection_offset(convention)


def continuous_to_k_projection(uv: Union[Tensor, float], convention: str):
    """(..., 2) continuous pixel coordinates → K-projections (inverse of :func:`k_projection_to_continuous`)."""
    return uv - k_projection_offset(convention)
