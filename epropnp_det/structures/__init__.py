"""Box, frame and pixel conventions (see :mod:`epropnp_det.structures.boxes`)."""
from .boxes import *  # noqa: F401,F403
from .boxes import __all__  # noqa: F401
