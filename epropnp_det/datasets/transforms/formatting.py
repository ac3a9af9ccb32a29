"""Packing: ``EProPnPPack3DDetInputs`` → ``dict(inputs=dict(img), data_samples=Det3DDataSample)`` (see
``docs/data_contract.md``), and the analytic dense original-coordinate maps (docs/method.md §0.3)."""
from typing import Tuple

import numpy as np
import torch
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures import Det3DDataSample
from mmengine.structures import InstanceData

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS, cam_boxes_to_model

#: keys this packer understands (anything else in ``keys`` raises)
PACK_KEYS = ('img', 'gt_bboxes_3d', 'gt_labels_3d', 'attr_labels', 'velocities', 'velocities_valid',
             'truncation', 'visibility', 'num_lidar_pts', 'gt_x3d', 'gt_x2d', 'centers_2d', 'depths', 'gt_bboxes',
             'gt_bboxes_labels', 'gt_bboxes_ignore', 'cam_pts_uvz')
META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip', 'flip_direction', 'cam2img',
             'img_transform', 'sample_idx', 'token', 'cam_name', 'ego2global', 'cam2ego', 'lidar2cam', 'lidar2ego',
             'cam2global', 'crop_offset', 'box_type_3d', 'box_mode_3d')


def dense_x2d_from_transform(img_transform: np.ndarray, valid_hw: Tuple[int, int], out_hw: Tuple[int, int],
                             convention: str = 'v1') -> Tuple[np.ndarray, np.ndarray]:
    """Dense original-image coordinates of every augmented pixel (docs/method.md §0.3), computed from ``img_transform``.

    Pixel ``(v, u)`` of the ``out_hw`` canvas holds the original coordinate of its centre,
    ``T⁻¹ · (u + 0.5, v + 0.5)`` minus 0.5 in the v1 integer-centre convention (so identity gives ``(u, v)``) or as
    is in v2. Pixels beyond ``valid_hw`` (padding, bottom/right) replicate the nearest valid pixel ("edge" padding)
    and have mask 0. Equals flipping/cropping/padding an explicit map exactly, and the exact version of resizing it.

    Returns:
        x2d (2, H, W) float32 ``(u, v)`` original coordinates, mask (1, H, W) float32.
    """
    h_out, w_out = out_hw
    h_val, w_val = valid_hw
    inv = np.linalg.inv(np.asarray(img_transform, dtype=np.float64))
    u = np.minimum(np.arange(w_out), w_val - 1) + 0.5
    v = np.minimum(np.arange(h_out), h_val - 1) + 0.5
    uu, vv = np.meshgrid(u, v)
    x = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2]
    y = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2]
    z = inv[2, 0] * uu + inv[2, 1] * vv + inv[2, 2]
    off = PIXEL_CONVENTIONS[convention]
    x2d = np.stack([x / z - off, y / z - off]).astype(np.float32)
    mask = np.zeros((1, h_out, w_out), np.float32)
    mask[:, :h_val, :w_val] = 1
    return x2d, mask


@TRANSFORMS.register_module()
class EProPnPPack3DDetInputs(Pack3DDetInputs):
    """Pack for EPro-PnP. ``inputs['img']`` (3, H, W) tensor; ``data_samples`` (``Det3DDataSample``) with

    * ``gt_instances_3d``: ``bboxes_3d`` (n, 7) float32 MODEL convention ``[l,h,w,x,y,z,yaw]`` geometric centre,
      original camera frame; ``labels_3d`` (n,) int64; ``attr_labels`` (n,) int64 (0..8, 8 = None);
      ``velocities`` (n, 2) float32 ``[vx, vz]`` camera frame, 0 where unknown; ``velocities_valid`` (n,) bool;
      ``truncation`` (n,), ``visibility`` (n,), ``num_lidar_pts`` (n,); ``x3d``/``x2d``: lists of n tensors
      (n_i, 3) KITTI-local object coordinates (m) / (n_i, 2) original-image K-projections; ``centers_2d``,
      ``depths`` (mmdet3d's, original image);
    * ``gt_instances``: ``bboxes`` (n, 4) float32 augmented-image continuous pixels, ``labels`` (n,);
    * ``ignored_instances``: ``bboxes`` (m, 4) augmented image, ``labels`` (m,);
    * ``cam_pts_uvz`` (k, 3) tensor if loaded;
    * metainfo: ``META_KEYS`` present in the results (``cam2img`` = original K, ``img_transform`` (3, 3)
      original→augmented continuous pixels, ``pad_shape`` = ``img_shape`` until the data preprocessor pads).

    ``keys`` selects what to pack (default: everything present); unknown names raise ``ValueError``.
    """

    def __init__(self, keys: tuple = PACK_KEYS, meta_keys: tuple = META_KEYS):
        unknown = [k for k in keys if k not in PACK_KEYS]
        if unknown:
            raise ValueError(f'EProPnPPack3DDetInputs: unknown keys {unknown}; known: {PACK_KEYS}')
        super().__init__(keys=tuple(keys), meta_keys=tuple(meta_keys))

    def pack_single_results(self, results: dict) -> dict:
        keys = set(self.keys)
        inputs = {}
        if 'img' in keys and 'img' in results:
            img = results['img']
            if img.ndim < 3:
                img = img[..., None]
            inputs['img'] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

        sample = Det3DDataSample()
        meta = {k: results[k] for k in self.meta_keys if k in results}
        if 'img_shape' in results:
            meta.setdefault('pad_shape', tuple(results['img_shape'][:2]))
        sample.set_metainfo(meta)

        gt3d = InstanceData()
        if 'gt_bboxes_3d' in keys and 'gt_bboxes_3d' in results:
            boxes, _ = cam_boxes_to_model(results['gt_bboxes_3d'])
            gt3d.bboxes_3d = boxes.float()
        for key, name, dtype in (('gt_labels_3d', 'labels_3d', torch.int64), ('attr_labels', 'attr_labels',
                                 torch.int64), ('velocities', 'velocities', torch.float32),
                                 ('velocities_valid', 'velocities_valid', torch.bool),
                                 ('truncation', 'truncation', torch.float32), ('visibility', 'visibility', torch.int64),
                                 ('num_lidar_pts', 'num_lidar_pts', torch.int64),
                                 ('centers_2d', 'centers_2d', torch.float32), ('depths', 'depths', torch.float32)):
            if key in keys and key in results:
                setattr(gt3d, name, torch.as_tensor(np.asarray(results[key]), dtype=dtype))
        for key, name in (('gt_x3d', 'x3d'), ('gt_x2d', 'x2d')):
            if key in keys and key in results and 'gt_bboxes_3d' in results:
                setattr(gt3d, name, [torch.from_numpy(np.asarray(v, np.float32)) for v in results[key]])
        sample.gt_instances_3d = gt3d

        gt2d = InstanceData()
        if 'gt_bboxes' in keys and 'gt_bboxes' in results:
            gt2d.bboxes = torch.as_tensor(np.asarray(results['gt_bboxes'], np.float32).reshape(-1, 4))
        if 'gt_bboxes_labels' in keys and 'gt_bboxes_labels' in results:
            gt2d.labels = torch.as_tensor(np.asarray(results['gt_bboxes_labels']), dtype=torch.int64).reshape(-1)
        sample.gt_instances = gt2d

        ign = InstanceData()
        if 'gt_bboxes_ignore' in keys and 'gt_bboxes_ignore' in results:
            ign.bboxes = torch.as_tensor(np.asarray(results['gt_bboxes_ignore'], np.float32).reshape(-1, 4))
            ign.labels = torch.as_tensor(np.asarray(results.get('gt_bboxes_ignore_labels',
                                                                np.zeros(len(ign.bboxes)))), dtype=torch.int64)
        sample.ignored_instances = ign

        if 'cam_pts_uvz' in keys and 'cam_pts_uvz' in results:
            sample.cam_pts_uvz = torch.from_numpy(np.asarray(results['cam_pts_uvz'], np.float32))
        sample.eval_ann_info = results.get('eval_ann_info')
        return dict(inputs=inputs, data_samples=sample)
