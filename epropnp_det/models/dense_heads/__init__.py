from .deform_pnp_head import NUSCENES_CLS_ATTRS, EProPnPDeformPnPHead
from .fcos_emb_head import EProPnPFCOSEmbHead, FCOSCandidates, FCOSTargets

__all__ = ['EProPnPFCOSEmbHead', 'FCOSTargets', 'FCOSCandidates', 'EProPnPDeformPnPHead', 'NUSCENES_CLS_ATTRS']
