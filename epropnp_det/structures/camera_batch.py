"""The cameras of a batch of images, built once from the data samples' metainfo.

Frames and pixels (see :mod:`epropnp_det.ops.pixels` for the two K-projection conventions): ``cam2img`` are the
ORIGINAL intrinsics; ``img_transform`` maps original continuous pixel coordinates to the AUGMENTED (flipped, cropped,
resized) image the network sees; ``img_wh`` is the unpadded augmented size, ``ori_hw`` the original size.
"""
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from epropnp_det.ops.pixels import check_pixel_convention, k_projection_offset
from epropnp_det.ops.pnp.types import CameraParams

__all__ = ['CameraBatch']


def _as_tensor(x, ref: Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=ref.dtype, device=ref.device)


@dataclass(frozen=True)
class CameraBatch:
    """Per-image camera tensors of a batch of ``B`` images.

    Attributes:
        cam2img: (B, 3, 3) original intrinsics ``K``.
        img_transform: (B, 3, 3) original → augmented continuous pixels (identity without augmentation).
        img_wh: (B, 2) unpadded augmented image ``(w, h)``, pixels.
        ori_hw: (B, 2) original image ``(h, w)``, pixels.
        flip: (B,) bool, the image was flipped horizontally.
        pad_hw: ``(H, W)`` of the padded batch tensor (Python ints, shared by the batch).
        pixel_convention: ``'v1'`` or ``'v2'`` meaning of K-projections (:mod:`epropnp_det.ops.pixels`).
        dense_x2d: (B, 2, h, w) original coordinates of the stride-``s`` cells (the v1 sampler's ``dense_map``
            mode), or None.
        dense_mask: (B, 1, h, w) fraction of each cell inside the image, or None.
    """
    cam2img: Tensor
    img_transform: Tensor
    img_wh: Tensor
    ori_hw: Tensor
    flip: Tensor
    pad_hw: Tuple[int, int]
    pixel_convention: str = 'v1'
    dense_x2d: Optional[Tensor] = None
    dense_mask: Optional[Tensor] = None

    @classmethod
    def from_metainfo(cls, metas: List[dict], ref: Tensor, pixel_convention: str,
                      dense_x2d: Optional[Tensor] = None, dense_mask: Optional[Tensor] = None,
                      dense_stride: Optional[int] = None) -> 'CameraBatch':
        """Build from the data samples' ``metainfo`` (``cam2img``, ``img_shape``, ``ori_shape`` required;
        ``img_transform``, ``flip``, ``batch_input_shape`` / ``pad_shape`` optional).

        Args:
            metas: one metainfo dict per image.
            ref: a tensor giving dtype and device.
            pixel_convention: ``'v1'`` or ``'v2'``.
            dense_x2d, dense_mask: (B, 2, H, W) / (B, 1, H, W) full-resolution dense maps of the data
                preprocessor; average-pooled by ``dense_stride`` when given.
        """
        check_pixel_convention(pixel_convention)

        def get(m, key):
            if key not in m:
                raise KeyError(f"data sample metainfo lacks '{key}' (see docs/data_contract.md)")
            return m[key]
        K = torch.stack([_as_tensor(get(m, 'cam2img'), ref)[:3, :3] for m in metas])
        T = torch.stack([_as_tensor(m.get('img_transform', np.eye(3)), ref) for m in metas])
        img_wh = torch.stack([_as_tensor(get(m, 'img_shape')[:2], ref).flip(0) for m in metas])
        ori_hw = torch.stack([_as_tensor(get(m, 'ori_shape')[:2], ref) for m in metas])
        flip = torch.tensor([bool(m.get('flip', False)) for m in metas], device=ref.device)
        pad = metas[0].get('batch_input_shape', metas[0].get('pad_shape', get(metas[0], 'img_shape')))
        if dense_x2d is not None and dense_mask is not None and dense_stride is not None:
            dense_x2d = F.avg_pool2d(dense_x2d.to(ref), dense_stride, ceil_mode=True)
            dense_mask = F.avg_pool2d(dense_mask.to(ref), dense_stride, ceil_mode=True)
        return cls(K, T, img_wh, ori_hw, flip, (int(pad[0]), int(pad[1])), pixel_convention, dense_x2d, dense_mask)

    @property
    def num_images(self) -> int:
        return self.cam2img.shape[0]

    @property
    def k_offset(self) -> float:
        """Continuous coordinate minus K-projection of this batch's convention (0.5 for v1, 0 for v2)."""
        return k_projection_offset(self.pixel_convention)

    def pnp_camera(self, img_inds: Tensor) -> CameraParams:
        """The PnP layer's camera of objects in images ``img_inds`` (N,): original intrinsics and the clamp
        bounds of the original image in this batch's convention."""
        return CameraParams.from_image_shape(self.cam2img[img_inds], self.ori_hw[img_inds],
                                             convention=self.pixel_convention)

    def index(self, img_inds: Tensor) -> 'CameraBatch':
        """The cameras of images ``img_inds`` (e.g. one per RoI); the dense maps are dropped."""
        return replace(self, cam2img=self.cam2img[img_inds], img_transform=self.img_transform[img_inds],
                       img_wh=self.img_wh[img_inds], ori_hw=self.ori_hw[img_inds], flip=self.flip[img_inds],
                       dense_x2d=None, dense_mask=None)
