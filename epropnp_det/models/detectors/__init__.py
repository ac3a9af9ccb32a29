from .epropnp_det import EProPnPDet
from .flip_tta import EProPnPFlipTTAModel

__all__ = ['EProPnPDet', 'EProPnPFlipTTAModel']
