from .fcos_emb_head import EProPnPFCOSEmbHead, FCOSCandidates, FCOSTargets

__all__ = ['EProPnPFCOSEmbHead', 'FCOSTargets', 'FCOSCandidates']
