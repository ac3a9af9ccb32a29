from .deform_sampler import EProPnPDeformableAttentionSampler, SamplerOutput
from .dense_branch import EProPnPDenseBranch, padding_mask
from .depth_branch import DepthPoints, EProPnPDepthBranch
from .object_branches import EProPnPObjectBranches, ObjectBranchOutput
from .point_subnet import EProPnPPointSubnet, GroupLinear, PointSubnetOutput, fibonacci_sphere
from .positional_encoding import EProPnPSinePositionalEncoding
from .roi_aux_branch import EProPnPRoIAuxBranch, RoIAuxOutput

__all__ = ['EProPnPDenseBranch', 'padding_mask', 'EProPnPSinePositionalEncoding',
           'EProPnPDeformableAttentionSampler', 'SamplerOutput', 'EProPnPPointSubnet', 'GroupLinear',
           'PointSubnetOutput', 'fibonacci_sphere', 'EProPnPObjectBranches', 'ObjectBranchOutput']
__all__ += ['EProPnPRoIAuxBranch', 'RoIAuxOutput']
__all__ += ['EProPnPDepthBranch', 'DepthPoints']
