from .log_dim_coder import EProPnPMultiClassLogDimCoder

__all__ = ['EProPnPMultiClassLogDimCoder']
