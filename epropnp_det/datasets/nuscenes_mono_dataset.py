"""``EProPnPNuScenesDataset``: mmdet3d's ``NuScenesDataset`` in ``mv_image_based`` mode (one item per camera image,
6 consecutive items per sample in ``images`` order, ``sample_idx = 6·frame + cam``) with EPro-PnP's filters.

Differences to the stock dataset (docs/method.md §4.2):

* reads the EPro-PnP fields added by ``tools/create_data.py`` (``visibility``, ``truncation``, ``bbox_nearclip``,
  ...);
* validates every sample, image and camera instance when it is built (``epropnp_det/datasets/validation.py``):
  an info file without the EPro-PnP fields, or a sample/image with missing or broken calibration, is an
  ``InfoValidationError`` naming the file, sample, camera and field and giving the ``tools/create_data.py``
  command that fixes it; a bad instance (missing key, non-finite or degenerate box, out-of-range value) is
  rejected and counted in ``validation_report``, logged once with examples (``bad_instances='warn'``, default) or
  an error (``bad_instances='error'``); a file whose instances are all rejected is always an error.
  ``check_files=True`` also checks, at build time, that every image exists with the info's size and every LiDAR
  file exists with a whole number of points (the loading transforms check the files they read in any case);
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
from mmengine.logging import MMLogger

from .validation import (
    REQUIRED_INSTANCE_KEYS,
    InfoValidationError,
    InfoValidationReport,
    check_epropnp_metainfo,
    fix_command,
    validate_sample,
)

#: per-object keys of the pipeline ``results`` dict (every geometric filter keeps them consistent)
PER_OBJECT_KEYS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_labels_3d', 'gt_bboxes_3d', 'attr_labels', 'velocities',
                   'velocities_valid', 'truncation', 'visibility', 'ann_tokens', 'instance_tokens', 'num_lidar_pts',
                   'centers_2d', 'depths', 'gt_x3d', 'gt_x2d')
BAD_INSTANCE_MODES = ('warn', 'error')


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
    """See module docstring. Extra args: ``min_visibility=2``, ``trunc_ignore_thres=0.8``, ``min_box_size=4.0``,
    ``bad_instances='warn'`` (or ``'error'``), ``check_files=False``.
    Defaults: ``load_type='mv_image_based'``, ``box_type_3d='Camera'``, camera-only modality.

    After building, ``validation_report`` (``InfoValidationReport``) holds the numbers of samples, images and
    instances seen and every rejected instance."""

    def __init__(self, data_root: str = '', ann_file: str = '', min_visibility: int = 2,
                 trunc_ignore_thres: float = 0.8, min_box_size: float = 4.0, load_type: str = 'mv_image_based',
                 box_type_3d: str = 'Camera', modality: dict = dict(use_camera=True, use_lidar=False),
                 bad_instances: str = 'warn', check_files: bool = False, **kwargs) -> None:
        if load_type != 'mv_image_based':
            raise ValueError(f"EProPnPNuScenesDataset needs load_type='mv_image_based', got '{load_type}'")
        if bad_instances not in BAD_INSTANCE_MODES:
            raise ValueError(f'bad_instances must be one of {BAD_INSTANCE_MODES}, got {bad_instances!r}')
        self.bad_instances = bad_instances
        self.check_files = check_files
        self.validation_report = None
        self.min_visibility = min_visibility
        self.trunc_ignore_thres = trunc_ignore_thres
        self.min_box_size = min_box_size
        super().__init__(data_root=data_root, ann_file=ann_file, load_type=load_type, box_type_3d=box_type_3d,
                         modality=modality, **kwargs)

    def parse_ann_info(self, info: dict) -> dict:
        """Camera instances → ann_info (gt arrays + ignore boxes), see module docstring."""
        instances = info['instances']      # validated in parse_data_info: every required key is there
        kept = [inst for inst in instances
                if inst['visibility'] >= self.min_visibility and self.label_mapping[inst['bbox_label_3d']] != -1]
        if not kept:
            return empty_ann_info()
        sub = dict(info, instances=[{k: inst[k] for k in REQUIRED_INSTANCE_KEYS} for inst in kept])
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

    # ------------------------------------------------------------------------------------------------ validation
    def _fix_command(self) -> str:
        return fix_command(self.ann_file, self.data_root, self._metainfo.get('version'))

    def load_data_list(self) -> List[dict]:
        """mmengine's loading, with every raw info validated in :meth:`parse_data_info`; then the rejected
        instances are logged once (or raised, ``bad_instances='error'``) and, with ``check_files``, the files
        checked."""
        self.validation_report = InfoValidationReport(self.ann_file, '')
        self._metainfo_checked = False
        data_list = super().load_data_list()
        self._check_metainfo()
        report = self.validation_report
        if report.num_rejected:
            if self.bad_instances == 'error' or report.num_rejected == report.num_instances:
                raise InfoValidationError(report.summary(error=True))
            MMLogger.get_current_instance().warning(report.summary())
        if self.check_files:
            self._check_files(data_list)
        return data_list

    def _check_metainfo(self) -> None:
        if not self._metainfo_checked:
            self.validation_report.fix = self._fix_command()
            check_epropnp_metainfo(self._metainfo, self.ann_file, self.validation_report.fix)
            self._metainfo_checked = True

    def _check_files(self, data_list: List[dict]) -> None:
        """Every image exists and has the info's size (header only); every LiDAR file exists and holds a whole
        number of 5-float points."""
        from PIL import Image
        seen_lidar = set()
        for item in data_list:
            cam, img = next(iter(item['images'].items()))
            where = f"{self.ann_file}: sample {item['token']} {cam}"
            path = img['img_path']
            if not osp.isfile(path):
                raise FileNotFoundError(f"{where}: image file not found: {path}")
            try:
                with Image.open(path) as im:
                    size = im.size
            except OSError as e:
                raise InfoValidationError(f'{where}: {path} is not a readable image ({e})') from None
            if size != (img['width'], img['height']):
                raise InfoValidationError(f"{where}: {path} is {size[0]}x{size[1]} but the info says "
                                          f"{img['width']}x{img['height']} (cam2img refers to the info size); "
                                          f'fix: `{self._fix_command()}`')
            lidar = item['lidar_points']['lidar_path']
            if lidar in seen_lidar:
                continue
            seen_lidar.add(lidar)
            from .transforms.loading import check_lidar_file
            check_lidar_file(lidar, 5, where=f"{self.ann_file}: sample {item['token']}")

    def parse_data_info(self, info: dict) -> Union[List[dict], dict]:
        self._check_metainfo()
        validate_sample(info, self.validation_report)
        lidar = copy.deepcopy(info.get('lidar_points', {}))
        items = super().parse_data_info(info)
        if 'lidar_path' in lidar and not self.modality.get('use_lidar', False):
            lidar['lidar_path'] = osp.join(self.data_prefix.get('pts', ''), lidar['lidar_path'])
        for item, cam in zip(items, info['images']):
            item['cam_name'] = cam
            item['lidar_points'] = lidar if not self.modality.get('use_lidar', False) else info['lidar_points']
        return items
