"""Model components of EPro-PnP-Det; importing this package registers them in mmdet3d's registries."""
from . import dense_heads, detectors, layers, losses, task_modules, utils  # noqa: F401
from .dense_heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .task_modules import *  # noqa: F401,F403
