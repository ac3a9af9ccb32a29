"""Camera-aware linear depth coder of the v2 dense depth branch (docs/method.md §10.12).

``decode(code, f) = (code·depth_std + depth_mean) · f / focal_ref`` and its inverse
``encode(z, f) = (z · focal_ref / f − depth_mean) / depth_std``, with ``f = (fx + fy)/2`` the focal length of the
ORIGINAL intrinsics in pixels and depths in metres (camera-frame z). Scaling by ``f / focal_ref`` makes the code a
function of the apparent size of things in the image: the same object seen by a camera with twice the focal length
at twice the depth gets the same code. Defaults: ``depth_mean = depth_std = 15 m``, ``focal_ref = 1260 px``
(≈ the nuScenes cameras).
"""
from typing import Union

from mmdet3d.registry import TASK_UTILS
from torch import Tensor

__all__ = ['EProPnPCamAwareLinearCoder']


@TASK_UTILS.register_module()
class EProPnPCamAwareLinearCoder:
    """Linear depth code normalised by the camera focal length (module docstring).

    Args:
        depth_mean, depth_std: metres, at the reference focal length.
        focal_ref: reference focal length in pixels.
    """

    def __init__(self, depth_mean: float = 15.0, depth_std: float = 15.0, focal_ref: float = 1260.0):
        if depth_std <= 0 or focal_ref <= 0:
            raise ValueError(f'depth_std ({depth_std}) and focal_ref ({focal_ref}) must be positive')
        self.depth_mean, self.depth_std, self.focal_ref = float(depth_mean), float(depth_std), float(focal_ref)

    def encode(self, depth: Tensor, focal: Union[Tensor, float]) -> Tensor:
        """depth (...,) metres, focal broadcastable (px) → code (...,)."""
        return (depth * (self.focal_ref / focal) - self.depth_mean) / self.depth_std

    def decode(self, code: Tensor, focal: Union[Tensor, float]) -> Tensor:
        """code (...,), focal broadcastable (px) → depth (...,) metres."""
        return (code * self.depth_std + self.depth_mean) * (focal / self.focal_ref)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(depth_mean={self.depth_mean}, depth_std={self.depth_std}, '
                f'focal_ref={self.focal_ref})')
