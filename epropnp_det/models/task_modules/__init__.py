from .center_target import EProPnPVolumeCenter, ray_box_depths
from .depth_coder import EProPnPCamAwareLinearCoder
from .log_dim_coder import EProPnPMultiClassLogDimCoder
from .object_sampler import EProPnPObjectSampler, ObjectSamples
from .pnp_pose import EProPnPPoseStage, PoseEstimate

__all__ = ['EProPnPMultiClassLogDimCoder', 'EProPnPVolumeCenter', 'ray_box_depths', 'EProPnPObjectSampler',
           'ObjectSamples', 'EProPnPCamAwareLinearCoder', 'EProPnPPoseStage', 'PoseEstimate']
