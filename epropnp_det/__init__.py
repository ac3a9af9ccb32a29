"""EPro-PnP-Det for mmdetection3d 1.x.

This top-level module stays light on purpose: ``import epropnp_det.ops.pnp`` must load torch alone
(no mmcv/mmdet/mmdet3d/mmengine). The mm-dependent subpackages (``epropnp_det.models``,
``epropnp_det.datasets``, ``epropnp_det.evaluation``, ...) register their modules into mmdet3d's
registries when imported, which configs do through ``custom_imports``.
"""
from .version import __version__

__all__ = ['__version__']
