"""Loading transforms: image (+ calibration, ``img_transform = I``), annotations, LiDAR object coordinates.

Damaged files give errors that name the file, the sample token and camera, and what is wrong: a missing image or
LiDAR file (``FileNotFoundError``), an empty, truncated (JPEG without its end-of-image marker, PNG without
``IEND``) or undecodable image, an image whose size differs from the info, a LiDAR file that is empty or not a
whole number of points (``DataFileError``), missing calibration in the info (``KeyError``).
"""
import os.path as osp

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import LoadImageFromFileMono3D
from mmdet3d.registry import TRANSFORMS
from mmengine.fileio import get
from mmengine.logging import MMLogger

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS, cam2global_matrix, cam_boxes_to_model, points_to_box_local

#: ann_info keys copied into the results by :class:`EProPnPLoadAnnotations`
ANN_KEYS = ('gt_bboxes_3d', 'gt_labels_3d', 'gt_bboxes', 'gt_bboxes_labels', 'attr_labels', 'velocities',
            'velocities_valid', 'truncation', 'visibility', 'ann_tokens', 'instance_tokens', 'num_lidar_pts',
            'centers_2d', 'depths', 'gt_bboxes_ignore', 'gt_bboxes_ignore_labels')


class DataFileError(ValueError):
    """A data file (image, LiDAR sweep) exists but is damaged; the message names the file and what is wrong."""


def _where(results: dict, cam=None) -> str:
    where = f"sample {results.get('token', '?')}"
    return where + (f' {cam}' if cam else '')


def image_bytes_problem(data: bytes):
    """Why ``data`` is not a complete JPEG/PNG (None if it looks complete; other formats are left to the
    decoder): empty, JPEG without the end-of-image marker ``FFD9``, PNG without the ``IEND`` chunk."""
    if len(data) == 0:
        return 'empty file (0 bytes)'
    if data[:2] == b'\xff\xd8' and data.rstrip(b'\x00')[-2:] != b'\xff\xd9':
        return f'truncated JPEG: no end-of-image marker (file has {len(data)} bytes)'
    if data[:8] == b'\x89PNG\r\n\x1a\n' and b'IEND' not in data[-12:]:
        return f'truncated PNG: no IEND chunk (file has {len(data)} bytes)'
    return None


def decode_image(data: bytes, path: str, where: str, flag: str = 'color', backend: str = 'cv2') -> np.ndarray:
    """``mmcv.imfrombytes`` that raises ``DataFileError`` (naming ``path`` and ``where``) on empty, truncated or
    undecodable data instead of returning None or a partially decoded image."""
    why = image_bytes_problem(data)
    img = None
    if why is None:
        try:
            img = mmcv.imfrombytes(data, flag=flag, backend=backend)
        except Exception as e:  # noqa: BLE001  (decoders raise many types; all mean the same here)
            why = f'cannot be decoded ({type(e).__name__}: {e})'
        else:
            if img is None:
                why = 'cannot be decoded as an image (corrupted or not an image file)'
    if why is not None:
        raise DataFileError(f'{where}: image {path}: {why}; restore the file from the dataset')
    return img


def check_lidar_file(path: str, load_dim: int, where: str) -> int:
    """Number of points in a LiDAR ``.bin`` file of ``load_dim`` float32 per point; raises ``FileNotFoundError``
    or ``DataFileError`` (naming ``path`` and ``where``) if it is missing, empty or not a whole number of points."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{where}: LiDAR file not found: {path}')
    size = osp.getsize(path)
    if size == 0 or size % (4 * load_dim):
        raise DataFileError(f'{where}: LiDAR file {path}: {size} bytes is ' +
                            ('empty' if size == 0 else f'not a whole number of points of {load_dim} float32 '
                             f'({4 * load_dim} bytes each): truncated or not a nuScenes .pcd.bin') +
                            '; restore the file from the dataset')
    return size // (4 * load_dim)


@TRANSFORMS.register_module()
class EProPnPLoadImage(LoadImageFromFileMono3D):
    """mmdet3d's ``LoadImageFromFileMono3D`` plus the geometry EPro-PnP needs (docs/method.md §4.3 LoadImageFromFile3D).

    Adds: ``img_path`` (the file read, as mmdet3d's ``LoadImageFromFile`` sets it; the visualisation hook reads
    it), ``cam2img`` (3, 3) float32 ndarray (original K), ``img_transform`` (3, 3) float64 identity,
    ``flip=False``, ``flip_direction=None``, ``scale_factor=(1., 1.)``, ``cam_name``, ``cam2ego``, ``lidar2cam``,
    ``lidar2ego`` and the exact camera-time ``cam2global`` (4, 4) float64 when the info has the poses.

    Raises, naming the file, sample token and camera: ``KeyError`` if the info lacks ``img_path`` or ``cam2img``;
    ``FileNotFoundError`` for a missing image; ``DataFileError`` for an empty, truncated or undecodable image or one
    whose size differs from the info's ``width``/``height`` (K refers to that size). With ``ignore_empty=True``
    (mmdet3d's option) a missing or damaged image returns None with a logged warning instead.
    """

    def _load(self, results: dict):
        cams = list(results['images'].keys())
        if len(cams) != 1:
            raise ValueError(f'{_where(results)}: EProPnPLoadImage needs one camera per item, got {cams} '
                             "(use EProPnPNuScenesDataset, load_type='mv_image_based')")
        cam = cams[0]
        img_info = results['images'][cam]
        where = _where(results, cam)
        for key, what in (('img_path', 'image file name'), ('cam2img', 'camera intrinsics')):
            if key not in img_info:
                raise KeyError(f"{where}: no '{key}' ({what}) in the info; re-create the info file with "
                               'tools/create_data.py')
        path = img_info['img_path']
        try:
            data = get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(f'{where}: image file not found: {path}') from None
        img = decode_image(data, path, where, flag=self.color_type, backend=self.imdecode_backend)
        return cam, img_info, path, img

    def transform(self, results: dict) -> dict:
        try:
            cam, img_info, path, img = self._load(results)
        except (FileNotFoundError, DataFileError) as e:
            if not self.ignore_empty:
                raise
            MMLogger.get_current_instance().warning(f'{e} (ignore_empty=True: item skipped)')
            return None
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_path'] = path
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        results['cam_name'] = results.get('cam_name', cam)
        results['cam2img'] = np.asarray(img_info['cam2img'], dtype=np.float32)[:3, :3]
        h, w = results['img'].shape[:2]
        if 'width' in img_info and (img_info['width'], img_info['height']) != (w, h):
            raise DataFileError(f"{_where(results, cam)}: image {path} is {w}x{h} but the info says "
                                f"{img_info['width']}x{img_info['height']} (intrinsics refer to the info size); "
                                'restore the image or re-create the info file')
        results['img_transform'] = np.eye(3)
        results['flip'] = False
        results['flip_direction'] = None
        results['scale_factor'] = (1.0, 1.0)
        for key in ('cam2ego', 'lidar2cam'):
            if key in img_info:
                results[key] = np.asarray(img_info[key], dtype=np.float64)
        lidar2ego = results.get('lidar_points', {}).get('lidar2ego')
        if lidar2ego is not None:
            results['lidar2ego'] = np.asarray(lidar2ego, dtype=np.float64)
            if 'lidar2cam' in img_info and 'ego2global' in results:
                results['cam2global'] = cam2global_matrix(img_info['lidar2cam'], lidar2ego,
                                                          results['ego2global']).numpy()
        return results


@TRANSFORMS.register_module()
class EProPnPLoadAnnotations(BaseTransform):
    """Copy the dataset's ``ann_info`` (see ``EProPnPNuScenesDataset``) into the results: ``gt_bboxes_3d``
    (``CameraInstance3DBoxes``, box_dim 9, original camera frame), labels, 2D boxes (original image), ignore boxes,
    attributes, velocities (+ ``velocities_valid``), truncation, visibility, tokens. No-op without ``ann_info``
    (test mode)."""

    def transform(self, results: dict) -> dict:
        ann = results.get('ann_info')
        if ann is None:
            return results
        for key in ANN_KEYS:
            if key in ann:
                results[key] = ann[key]
        return results


@TRANSFORMS.register_module()
class EProPnPLoadLidarObjectCoords(BaseTransform):
    """Per-object LiDAR object coordinates and pixels for the coordinate-regression loss (docs/method.md §4.1, §4.3),
    computed on the fly from the info's LIDAR_TOP file and ``lidar2cam``.

    Points ``p_cam = lidar2cam · p_lidar`` are kept if ``z > near`` (v1; v2: ``z ≥ near``) and their K-projection
    lies in ``[−0.5, W−0.5) × [−0.5, H−0.5)`` (v1) or ``[0, W) × [0, H)`` (v2) of the ORIGINAL image. For ground
    truth box i: ``gt_x3d[i]`` (n_i, 3) float32 = KITTI-local object coordinates relative to the box centre
    (``R(yaw)ᵀ (p − c)``, metres) of the points with ``|oc| ≤ (l, h, w)/2``, ``gt_x2d[i]`` (n_i, 2) float32 = their
    raw K-projections (original image; continuous in v2, integer-centre in v1). With ``with_cam_pts``:
    ``cam_pts_uvz`` (m, 3) = ``[u, v, z]`` of all kept points (v2 depth loss). Position in the pipeline is free
    (only original-frame quantities are used); geometric transforms filter the lists with the other objects.
    """

    def __init__(self, convention: str = 'v1', near: float = 0.1, load_dim: int = 5, with_cam_pts: bool = False):
        if convention not in PIXEL_CONVENTIONS:
            raise ValueError(f"convention must be 'v1' or 'v2', got '{convention}'")
        self.convention, self.near, self.load_dim, self.with_cam_pts = convention, near, load_dim, with_cam_pts

    def transform(self, results: dict) -> dict:
        path = results.get('lidar_points', {}).get('lidar_path')
        where = _where(results, results.get('cam_name'))
        if path is None or 'lidar2cam' not in results:
            missing = 'lidar_points.lidar_path' if path is None else 'lidar2cam'
            raise KeyError(f"{where}: no '{missing}' (LiDAR file / calibration) for EProPnPLoadLidarObjectCoords; "
                           'use EProPnPNuScenesDataset + EProPnPLoadImage before it, on infos from '
                           'tools/create_data.py')
        check_lidar_file(path, self.load_dim, where)
        raw = np.fromfile(path, dtype=np.float32)
        pts = raw.reshape(-1, self.load_dim)[:, :3].astype(np.float64)
        l2c = results['lidar2cam']
        p_cam = pts @ l2c[:3, :3].T + l2c[:3, 3]
        z = p_cam[:, 2]
        front = z > self.near if self.convention == 'v1' else z >= self.near
        p_cam = p_cam[front]
        uv = (p_cam @ results['cam2img'].astype(np.float64).T)[:, :2] / p_cam[:, 2:3]
        h, w = results['ori_shape'][:2]
        lo = -PIXEL_CONVENTIONS[self.convention]
        inside = (uv[:, 0] >= lo) & (uv[:, 0] < w + lo) & (uv[:, 1] >= lo) & (uv[:, 1] < h + lo)
        p_cam, uv = p_cam[inside], uv[inside]
        x3d, x2d = [], []
        if 'gt_bboxes_3d' in results and len(results['gt_bboxes_3d']):
            boxes, _ = cam_boxes_to_model(results['gt_bboxes_3d'])
            boxes = boxes.double()
            oc = points_to_box_local(torch.from_numpy(p_cam), boxes).numpy()       # (N, M, 3)
            half = boxes[:, None, 0:3].numpy() / 2
            mask = (np.abs(oc) <= half).all(-1)
            for i in range(len(boxes)):
                x3d.append(oc[i][mask[i]].astype(np.float32))
                x2d.append(uv[mask[i]].astype(np.float32))
        results['gt_x3d'], results['gt_x2d'] = x3d, x2d
        if self.with_cam_pts:
            results['cam_pts_uvz'] = np.concatenate([uv, p_cam[:, 2:3]], 1).astype(np.float32)
        return results
