"""nuScenes data path of EPro-PnP-Det on mmdet3d 1.4 infos. The full data contract (what the pipeline gives the
detector, what the metric expects from it) is in ``docs/data_contract.md``.

Importing this package registers: ``EProPnPNuScenesDataset`` (DATASETS); ``EProPnPLoadImage``,
``EProPnPLoadAnnotations``, ``EProPnPLoadLidarObjectCoords``, ``EProPnPRandomFlip``, ``EProPnPCrop``,
``EProPnPResize``, ``EProPnPPack3DDetInputs`` (TRANSFORMS); ``EProPnPDataPreprocessor`` (MODELS); and lets
``mmdet3d.apis.MonoDet3DInferencer`` take the project's test pipelines (``mmdet3d_inferencer``).
"""
from .data_preprocessor import EProPnPDataPreprocessor
from .mmdet3d_inferencer import patch_mono_det3d_inferencer
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

patch_mono_det3d_inferencer()  # mmdet3d's MonoDet3DInferencer(model=CONFIG) accepts EProPnPLoadImage
