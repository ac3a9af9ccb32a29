"""``EProPnPDataPreprocessor``: mmdet3d's ``Det3DDataPreprocessor`` plus the dense original-coordinate maps."""
import numpy as np
import torch
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.registry import MODELS

from .transforms.formatting import dense_x2d_from_transform


@MODELS.register_module()
class EProPnPDataPreprocessor(Det3DDataPreprocessor):
    """Normalises / pads / stacks images like ``Det3DDataPreprocessor`` (bottom/right zero padding to
    ``pad_size_divisor``). With ``with_dense_x2d=True`` it also adds ``inputs['img_dense_x2d']`` (B, 2, Hp, Wp) and
    ``inputs['img_dense_x2d_mask']`` (B, 1, Hp, Wp) float32 for the padded batch: the original-image coordinate of
    every input pixel (``dense_x2d_convention`` 'v1' integer-centre / 'v2' continuous), "edge"-padded, mask 0 in the
    padding (docs/method.md §0.3, §4.3 Pad3D). They are computed from each sample's ``img_transform`` and ``img_shape``,
    which is exactly what warping an explicit map through flip/crop/pad would give.

    Defaults follow the published model's Normalize (ImageNet mean/std, BGR→RGB) and Pad3D(size_divisor=32).
    """

    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), bgr_to_rgb: bool = True,
                 pad_size_divisor: int = 32, with_dense_x2d: bool = False, dense_x2d_convention: str = 'v1',
                 **kwargs):
        super().__init__(mean=mean, std=std, bgr_to_rgb=bgr_to_rgb, pad_size_divisor=pad_size_divisor, **kwargs)
        if dense_x2d_convention not in ('v1', 'v2'):
            raise ValueError(f"dense_x2d_convention must be 'v1' or 'v2', got '{dense_x2d_convention}'")
        self.with_dense_x2d = with_dense_x2d
        self.dense_x2d_convention = dense_x2d_convention

    def simple_process(self, data: dict, training: bool = False) -> dict:
        out = super().simple_process(data, training)
        if self.with_dense_x2d and 'imgs' in out['inputs'] and out['data_samples'] is not None:
            imgs = out['inputs']['imgs']
            hp, wp = imgs.shape[-2:]
            maps, masks = [], []
            for ds in out['data_samples']:
                x2d, mask = dense_x2d_from_transform(ds.metainfo.get('img_transform', np.eye(3)),
                                                     ds.metainfo['img_shape'][:2], (hp, wp),
                                                     self.dense_x2d_convention)
                maps.append(torch.from_numpy(x2d))
                masks.append(torch.from_numpy(mask))
            out['inputs']['img_dense_x2d'] = torch.stack(maps).to(imgs.device)
            out['inputs']['img_dense_x2d_mask'] = torch.stack(masks).to(imgs.device)
        return out
