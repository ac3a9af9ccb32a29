"""nuScenes evaluation / submission of EPro-PnP-Det. Importing registers ``EProPnPNuScenesMetric`` (METRICS)."""
from .metrics import ATTRIBUTES, CLS2ATTR, EProPnPNuScenesMetric, bev_nms_global, restricted_attribute

__all__ = ['EProPnPNuScenesMetric', 'bev_nms_global', 'restricted_attribute', 'CLS2ATTR', 'ATTRIBUTES']
