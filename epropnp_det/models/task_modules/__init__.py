from .center_target import EProPnPVolumeCenter, ray_box_depths
from .log_dim_coder import EProPnPMultiClassLogDimCoder

__all__ = ['EProPnPMultiClassLogDimCoder', 'EProPnPVolumeCenter', 'ray_box_depths']
