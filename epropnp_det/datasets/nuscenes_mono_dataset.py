"""``EProPnPNuScenesDataset``: mmdet3d's ``NuScenesDataset`` in ``mv_image_based`` mode (one item per camera image,
6 consecutive items per sample in ``images`` order, ``sample_idx = 6·frame + cam``) with EPro-PnP's filters.

Differences to the stock dataset (spec §4.2):

* reads the EPro-PnP fields added by ``tools/create_data.py`` (``visibility``, ``truncation``, ``bbox_nearclip``,
  ...; a clear KeyError if the infos lack them);
* two-level filter: instances with ``visibility < min_visibility`` (default 2) or an unmapped class are dropped;
  of the rest, ``truncation ≤ trunc_ignore_thres`` (0.8) and ``min(w, h) ≥ min_box_size`` (4 px, original image)
  are ground truth, the others go to ``gt_bboxes_ignore`` (2D only);
* no LiDAR-point filter (EPro-PnP keeps 0-point boxes; the stock ``use_valid_flag=False`` path would KeyError);
* ``gt_bboxes`` = the near-plane clipped ``bbox_nearclip`` (continuous pixels of the original image);
* NaN velocities are set to 0 AND flagged in ``velocities_valid`` (the stock dataset only zeroes them);
* each item also carries ``lidar_points`` (``lidar_path`` joined with ``data_prefix['pts']``, ``lidar2ego``) and
  ``cam_name`` so the LiDAR object-coordinate transform and the metric have what they need.
"""
import copy
import os.path as osp
from typing import List, Union

import numpy as np
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.datasets.det3d_dataset import Det3DDataset
from mmdet3d.registry import DATASETS
from mmdet3d.structures import CameraInstance3DBoxes

#: per-object keys of the pipeline ``results`` dict (every geometric filter keeps them consistent)
PER_OBJECT_KEYS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_labels_3d', 'gt_bboxes_3d', 'attr_labels', 'velocities',
                   'velocities_valid', 'truncation', 'visibility', 'ann_tokens', 'instance_tokens', 'num_lidar_pts',
                   'centers_2d', 'depths', 'gt_x3d', 'gt_x2d')
REQUIRED_FIELDS = ('visibility', 'truncation', 'bbox_nearclip', 'ann_token')


def empty_ann_info() -> dict:
    """ann_info of an image without ground truth (well-shaped arrays, unlike the stock 0-d label arrays)."""
    return dict(gt_bboxes_3d=CameraInstance3DBoxes(np.zeros((0, 9), np.float32), box_dim=9, origin=(0.5, 0.5, 0.5)),
                gt_labels_3d=np.zeros(0, np.int64), gt_bboxes=np.zeros((0, 4), np.float32),
                gt_bboxes_labels=np.zeros(0, np.int64), attr_labels=np.zeros(0, np.int64),
                velocities=np.zeros((0, 2), np.float32), velocities_valid=np.zeros(0, bool),
                truncation=np.zeros(0, np.float32), visibility=np.zeros(0, np.int64),
                ann_tokens=np.zeros(0, dtype='<U32'), instance_tokens=np.zeros(0, dtype='<U32'),
                num_lidar_pts=np.zeros(0, np.int64), centers_2d=np.zeros((0, 2), np.float32),
                depths=np.zeros(0, np.float32), gt_bboxes_ignore=np.zeros((0, 4), np.float32),
                gt_bboxes_ignore_labels=np.zeros(0, np.int64))


@DATASETS.register_module()
class EProPnPNuScenesDataset(NuScenesDataset):
    """See module docstring. Extra args: ``min_visibility=2``, ``trunc_ignore_thres=0.8``, ``min_box_size=4.0``.
    Defaults: ``load_type='mv_image_based'``, ``box_type_3d='Camera'``, camera-only modality."""

    def __init__(self, data_root: str = '', ann_file: str = '', min_visibility: int = 2,
                 trunc_ignore_thres: float = 0.8, min_box_size: float = 4.0, load_type: str = 'mv_image_based',
                 box_type_3d: str = 'Camera', modality: dict = dict(use_camera=True, use_lidar=False),
                 **kwargs) -> None:
        if load_type != 'mv_image_based':
            raise ValueError(f"EProPnPNuScenesDataset needs load_type='mv_image_based', got '{load_type}'")
        self.min_visibility = min_visibility
        self.trunc_ignore_thres = trunc_ignore_thres
        self.min_box_size = min_box_size
        super().__init__(data_root=data_root, ann_file=ann_file, load_type=load_type, box_type_3d=box_type_3d,
                         modality=modality, **kwargs)

    def parse_ann_info(self, info: dict) -> dict:
        """Camera instances → ann_info (gt arrays + ignore boxes), see module docstring."""
        instances = info['instances']
        if instances and any(k not in instances[0] for k in REQUIRED_FIELDS):
            raise KeyError(f'{self.ann_file}: camera instances lack the EPro-PnP fields {REQUIRED_FIELDS}; build the '
                           f'infos with epropnp_det\'s tools/create_data.py')
        kept = [inst for inst in instances
                if inst['visibility'] >= self.min_visibility and self.label_mapping[inst['bbox_label_3d']] != -1]
        if not kept:
            return empty_ann_info()
        sub = dict(info, instances=[{k: v for k, v in inst.items() if k != 'bbox'} for inst in kept])
        raw = Det3DDataset.parse_ann_info(self, sub)                   # concatenates every key (renamed where known)
        box2d = np.asarray(raw['bbox_nearclip'], dtype=np.float32).reshape(-1, 4)
        size = np.minimum(box2d[:, 2] - box2d[:, 0], box2d[:, 3] - box2d[:, 1])
        trunc = np.asarray(raw['truncation'], dtype=np.float32)
        is_gt = (trunc <= self.trunc_ignore_thres) & (size >= self.min_box_size)
        velo = np.asarray(raw['velocities'], dtype=np.float32).reshape(-1, 2)
        velo_valid = np.isfinite(velo).all(axis=1)
        velo = np.where(velo_valid[:, None], velo, 0).astype(np.float32)
        box3d = np.concatenate([np.asarray(raw['gt_bboxes_3d'], np.float32).reshape(-1, 7), velo], axis=1)

        ann = empty_ann_info()
        g = is_gt
        ann.update(
            gt_bboxes_3d=CameraInstance3DBoxes(box3d[g], box_dim=9, origin=(0.5, 0.5, 0.5)),
            gt_labels_3d=raw['gt_labels_3d'][g], gt_bboxes=box2d[g], gt_bboxes_labels=raw['gt_bboxes_labels'][g],
            attr_labels=raw['attr_labels'][g], velocities=velo[g], velocities_valid=velo_valid[g],
            truncation=trunc[g], visibility=np.asarray(raw['visibility'], np.int64)[g],
            ann_tokens=np.asarray(raw['ann_token'])[g], instance_tokens=np.asarray(raw['instance_token'])[g],
            num_lidar_pts=np.asarray(raw['num_lidar_pts'], np.int64)[g],
            centers_2d=np.asarray(raw['centers_2d'], np.float32).reshape(-1, 2)[g],
            depths=np.asarray(raw['depths'], np.float32)[g],
            gt_bboxes_ignore=box2d[~g], gt_bboxes_ignore_labels=raw['gt_bboxes_labels'][~g])
        return ann

    def parse_data_info(self, info: dict) -> Union[List[dict], dict]:
        lidar = copy.deepcopy(info.get('lidar_points', {}))
        items = super().parse_data_info(info)
        if 'lidar_path' in lidar and not self.modality.get('use_lidar', False):
            lidar['lidar_path'] = osp.join(self.data_prefix.get('pts', ''), lidar['lidar_path'])
        for item, cam in zip(items, info['images']):
            item['cam_name'] = cam
            item['lidar_points'] = lidar if not self.modality.get('use_lidar', False) else info['lidar_points']
        return items
