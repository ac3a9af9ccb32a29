from .epropnp_det import EProPnPDet

__all__ = ['EProPnPDet']
