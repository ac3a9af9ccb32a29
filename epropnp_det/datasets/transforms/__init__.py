"""EPro-PnP pipeline transforms (registered in mmdet3d's ``TRANSFORMS``)."""
from .formatting import EProPnPPack3DDetInputs, dense_x2d_from_transform
from .loading import EProPnPLoadAnnotations, EProPnPLoadImage, EProPnPLoadLidarObjectCoords
from .transforms_2d import EProPnPCrop, EProPnPRandomFlip, EProPnPResize, filter_objects

__all__ = ['EProPnPLoadImage', 'EProPnPLoadAnnotations', 'EProPnPLoadLidarObjectCoords', 'EProPnPRandomFlip',
           'EProPnPCrop', 'EProPnPResize', 'EProPnPPack3DDetInputs', 'dense_x2d_from_transform', 'filter_objects']
