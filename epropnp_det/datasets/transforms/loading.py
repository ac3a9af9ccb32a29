"""Loading transforms: image (+ calibration, ``img_transform = I``), annotations, LiDAR object coordinates."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import LoadImageFromFileMono3D
from mmdet3d.registry import TRANSFORMS

from epropnp_det.structures.boxes import PIXEL_CONVENTIONS, cam2global_matrix, cam_boxes_to_model, points_to_box_local

#: ann_info keys copied into the results by :class:`EProPnPLoadAnnotations`
ANN_KEYS = ('gt_bboxes_3d', 'gt_labels_3d', 'gt_bboxes', 'gt_bboxes_labels', 'attr_labels', 'velocities',
            'velocities_valid', 'truncation', 'visibility', 'ann_tokens', 'instance_tokens', 'num_lidar_pts',
            'centers_2d', 'depths', 'gt_bboxes_ignore', 'gt_bboxes_ignore_labels')


@TRANSFORMS.register_module()
class EProPnPLoadImage(LoadImageFromFileMono3D):
    """mmdet3d's ``LoadImageFromFileMono3D`` plus the geometry EPro-PnP needs (spec §4.3 LoadImageFromFile3D).

    Adds: ``cam2img`` (3, 3) float32 ndarray (original K), ``img_transform`` (3, 3) float64 identity,
    ``flip=False``, ``flip_direction=None``, ``scale_factor=(1., 1.)``, ``cam_name``, ``cam2ego``, ``lidar2cam``,
    ``lidar2ego`` and the exact camera-time ``cam2global`` (4, 4) float64 when the info has the poses.
    Raises if the image size differs from the info's ``width``/``height`` (K refers to that size).
    """

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        if results is None:
            return None
        cam = list(results['images'].keys())[0]
        img_info = results['images'][cam]
        results['cam_name'] = results.get('cam_name', cam)
        results['cam2img'] = np.asarray(results['cam2img'], dtype=np.float32)[:3, :3]
        h, w = results['img'].shape[:2]
        if 'width' in img_info and (img_info['width'], img_info['height']) != (w, h):
            raise ValueError(f"{img_info['img_path']}: image is {w}x{h} but the info says "
                             f"{img_info['width']}x{img_info['height']} (intrinsics refer to the info size)")
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
    """Per-object LiDAR object coordinates and pixels for the coordinate-regression loss (spec §4.1, §4.3),
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
        if path is None or 'lidar2cam' not in results:
            raise KeyError('EProPnPLoadLidarObjectCoords needs lidar_points.lidar_path and lidar2cam '
                           '(use EProPnPNuScenesDataset + EProPnPLoadImage before it)')
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % self.load_dim:
            raise ValueError(f'{path}: {raw.size} floats is not a multiple of load_dim={self.load_dim}')
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
