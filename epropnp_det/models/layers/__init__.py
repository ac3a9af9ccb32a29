from .deform_sampler import EProPnPDeformableAttentionSampler, SamplerOutput
from .object_branches import EProPnPObjectBranches, ObjectBranchOutput
from .point_subnet import EProPnPPointSubnet, GroupLinear, PointSubnetOutput, fibonacci_sphere
from .positional_encoding import EProPnPSinePositionalEncoding

__all__ = ['EProPnPSinePositionalEncoding', 'EProPnPDeformableAttentionSampler', 'SamplerOutput',
           'EProPnPPointSubnet', 'GroupLinear', 'PointSubnetOutput', 'fibonacci_sphere', 'EProPnPObjectBranches',
           'ObjectBranchOutput']
