"""Box, frame and pixel conventions (:mod:`epropnp_det.structures.boxes`), the batch cameras
(:class:`CameraBatch`), the 2D–3D correspondences (:class:`Correspondences`) and the nuScenes class/attribute table
(:mod:`epropnp_det.structures.nuscenes_attributes`)."""
from .boxes import *  # noqa: F401,F403
from .boxes import __all__ as _boxes_all
from .camera_batch import CameraBatch
from .correspondences import Correspondences

__all__ = list(_boxes_all) + ['CameraBatch', 'Correspondences']
