"""Geometric image transforms of EPro-PnP (docs/method.md §4.3, §10.2): they change the image, the 2D boxes and the
original→augmented homography ``img_transform`` only. 3D boxes, velocities, intrinsics (``cam2img``) and the LiDAR
object coordinates / pixels stay in the ORIGINAL camera frame and image (mmdet3d's ``RandomFlip3D`` edits 3D boxes
and K; its ``RandomCrop3D`` ignores K and 3D boxes: neither fits).

Every transform left-multiplies ``results['img_transform']`` (continuous pixel coordinates) and keeps the
per-object keys (``PER_OBJECT_KEYS``) consistent when objects are dropped.
"""
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS

from epropnp_det.structures.boxes import crop_transform, flip_transform, scale_transform

from ..nuscenes_mono_dataset import PER_OBJECT_KEYS

BOX_KEYS = ('gt_bboxes', 'gt_bboxes_ignore')


def filter_objects(results: dict, keep: np.ndarray, to_ignore: np.ndarray = None) -> None:
    """Keep per-object entries where ``keep``; append the 2D boxes of ``to_ignore`` objects to the ignore set."""
    if to_ignore is not None and to_ignore.any():
        ign = results.get('gt_bboxes_ignore', np.zeros((0, 4), np.float32))
        ign_lab = results.get('gt_bboxes_ignore_labels', np.zeros(0, np.int64))
        results['gt_bboxes_ignore'] = np.concatenate([ign, results['gt_bboxes'][to_ignore]]).astype(np.float32)
        results['gt_bboxes_ignore_labels'] = np.concatenate([ign_lab, results['gt_bboxes_labels'][to_ignore]])
    for key in PER_OBJECT_KEYS:
        if key not in results:
            continue
        val = results[key]
        if isinstance(val, list):
            results[key] = [v for v, k in zip(val, keep) if k]
        else:
            results[key] = val[keep]


def _update_transform(results: dict, mat: np.ndarray) -> None:
    results['img_transform'] = mat @ results.get('img_transform', np.eye(3))


@TRANSFORMS.register_module()
class EProPnPRandomFlip(BaseTransform):
    """Horizontal flip with probability ``prob``: image, ``x1' = W − x2``, ``x2' = W − x1`` for 2D (and ignore)
    boxes, ``img_transform ← [[-1,0,W],[0,1,0],[0,0,1]] · img_transform``, ``flip=True``,
    ``flip_direction='horizontal'``. 3D boxes, K, velocities and LiDAR targets are not modified
    (docs/method.md §4.3)."""

    def __init__(self, prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            results.setdefault('flip', False)
            return results
        w = results['img'].shape[1]
        results['img'] = mmcv.imflip(results['img'], direction='horizontal')
        for key in BOX_KEYS:
            if key in results and len(results[key]):
                b = results[key].copy()
                b[:, 0], b[:, 2] = w - results[key][:, 2], w - results[key][:, 0]
                results[key] = b
        _update_transform(results, flip_transform(w))
        results['flip'] = not results.get('flip', False)
        results['flip_direction'] = 'horizontal' if results['flip'] else None
        return results


@TRANSFORMS.register_module()
class EProPnPCrop(BaseTransform):
    """Fixed crop ``crop_box = (x1, y1, x2, y2)`` (docs/method.md §4.3 Crop3D), e.g. (0, 228, 1600, 900) → 1600×672.

    2D boxes are shifted and clipped to the crop; a gt survives if its clipped box has positive area. If no gt
    survives and ``allow_negative_crop=False`` the sample is rejected (returns None, the dataset draws another);
    this test comes before the truncation rule. With ``trunc_ignore_thres > 0``, gts whose clipped area is below
    ``(1 − thres) · area_full`` with ``area_full = area(box before crop) / max(1 − truncation, 1e-4)`` move to the
    ignore boxes (their 3D data are dropped). Ignore boxes are shifted/clipped, empty ones dropped.
    ``img_transform ← [[1,0,−x1],[0,1,−y1],[0,0,1]] · img_transform``.
    """

    def __init__(self, crop_box=(0, 228, 1600, 900), trunc_ignore_thres: float = 0.8,
                 allow_negative_crop: bool = False):
        x1, y1, x2, y2 = crop_box
        if not (x2 > x1 >= 0 and y2 > y1 >= 0):
            raise ValueError(f'invalid crop_box {crop_box}')
        self.crop_box = tuple(int(v) for v in crop_box)
        self.trunc_ignore_thres = trunc_ignore_thres
        self.allow_negative_crop = allow_negative_crop

    def transform(self, results: dict):
        x1, y1, x2, y2 = self.crop_box
        h, w = results['img'].shape[:2]
        if x2 > w or y2 > h:
            raise ValueError(f'crop_box {self.crop_box} exceeds the {w}x{h} image {results.get("img_path")}')
        results['img'] = results['img'][y1:y2, x1:x2]
        cw, ch = x2 - x1, y2 - y1
        off = np.array([x1, y1, x1, y1], np.float32)

        def shift_clip(b):
            b = b - off
            b[:, 0::2] = b[:, 0::2].clip(0, cw)
            b[:, 1::2] = b[:, 1::2].clip(0, ch)
            return b

        if 'gt_bboxes_ignore' in results and len(results['gt_bboxes_ignore']):
            ign = shift_clip(results['gt_bboxes_ignore'])
            ok = (ign[:, 2] > ign[:, 0]) & (ign[:, 3] > ign[:, 1])
            results['gt_bboxes_ignore'] = ign[ok]
            if 'gt_bboxes_ignore_labels' in results:
                results['gt_bboxes_ignore_labels'] = results['gt_bboxes_ignore_labels'][ok]
        if 'gt_bboxes' in results:
            before = results['gt_bboxes']
            after = shift_clip(before)
            valid = (after[:, 2] > after[:, 0]) & (after[:, 3] > after[:, 1])
            if not valid.any() and not self.allow_negative_crop:
                return None
            results['gt_bboxes'] = after
            to_ignore = np.zeros_like(valid)
            if self.trunc_ignore_thres > 0 and 'truncation' in results:
                area_before = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
                area_full = area_before / np.maximum(1 - results['truncation'], 1e-4)
                area_after = (after[:, 2] - after[:, 0]) * (after[:, 3] - after[:, 1])
                to_ignore = valid & (area_after < (1 - self.trunc_ignore_thres) * area_full)
            filter_objects(results, valid & ~to_ignore, to_ignore)
        results['img_shape'] = results['img'].shape[:2]
        results['crop_offset'] = (x1, y1)
        _update_transform(results, crop_transform(x1, y1))
        return results


@TRANSFORMS.register_module()
class EProPnPResize(BaseTransform):
    """Resize the image to ``scale=(W, H)`` (``keep_ratio=True``: largest size fitting in it, mmcv rescale rule)
    or by ``scale_factor`` (default: neither → factor 1, a no-op); scales 2D boxes and
    ``img_transform ← diag(sx, sy, 1) · img_transform`` with the exact
    ratios ``sx = W_new / W_old`` (continuous coordinates, pixel edges map exactly). A no-op at the target size."""

    def __init__(self, scale=None, scale_factor=None, keep_ratio: bool = True, interpolation: str = 'bilinear'):
        if scale is not None and scale_factor is not None:
            raise ValueError('give only one of scale=(W, H) or scale_factor')
        if scale is None and scale_factor is None:
            scale_factor = 1.0
        self.scale, self.scale_factor, self.keep_ratio, self.interpolation = scale, scale_factor, keep_ratio, \
            interpolation

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        if self.scale is not None:
            if self.keep_ratio:
                new_w, new_h = mmcv.rescale_size((w, h), tuple(self.scale))
            else:
                new_w, new_h = self.scale
        else:
            f = self.scale_factor
            fx, fy = (f, f) if np.isscalar(f) else f
            new_w, new_h = int(w * fx + 0.5), int(h * fy + 0.5)
        if (new_w, new_h) == (w, h):
            return results
        sx, sy = new_w / w, new_h / h
        results['img'] = mmcv.imresize(results['img'], (new_w, new_h), interpolation=self.interpolation)
        for key in BOX_KEYS:
            if key in results and len(results[key]):
                results[key] = (results[key] * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
        prev = results.get('scale_factor', (1.0, 1.0))
        results['scale_factor'] = (prev[0] * sx, prev[1] * sy)
        results['img_shape'] = (new_h, new_w)
        _update_transform(results, scale_transform(sx, sy))
        return results
