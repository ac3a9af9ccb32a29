"""nuScenes data path of EPro-PnP-Det on mmdet3d 1.4 infos. The full data contract (what the pipeline gives the
detector, what the metric expects from it) is in ``docs/data_contract.md``.

Importing this package registers: ``EProPnPNuScenesDataset`` (DATASETS); ``EProPnPLoadImage``,
``EProPnPLoadAnnotations``, ``EProPnPLoadLidarObjectCoords``, ``EProPnPRandomFlip``, ``EProPnPCrop``,
``EProPnPResize``, ``EProPnPPack3DDetInputs`` (TRANSFORMS); ``EProPnPDataPreprocessor`` (MODELS).
"""
from .data_preprocessor import EProPnPDataPreprocessor
from .nuscenes_infos import add_epropnp_fields, create_nuscenes_infos
from .nuscenes_mono_dataset import PER_OBJECT_KEYS, EProPnPNuScenesDataset
from .transforms import (
                         EProPnPCrop,
                         EProPnPLoadAnnotations,
                         EProPnPLoadImage,
                         EProPnPLoadLidarObjectCoords,
                         EProPnPPack3DDetInputs,
                         EProPnPRandomFlip,
                         EProPnPResize,
                         dense_x2d_from_transform,
)

__all__ = ['EProPnPNuScenesDataset', 'EProPnPDataPreprocessor', 'EProPnPLoadImage', 'EProPnPLoadAnnotations',
           'EProPnPLoadLidarObjectCoords', 'EProPnPRandomFlip', 'EProPnPCrop', 'EProPnPResize',
           'EProPnPPack3DDetInputs', 'dense_x2d_from_transform', 'create_nuscenes_infos', 'add_epropnp_fields',
           'PER_OBJECT_KEYS']
