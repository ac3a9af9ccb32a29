"""Validation of nuScenes info files when an ``EProPnPNuScenesDataset`` is built (every sample, image and camera
instance), and clear errors for damaged data files.

What is checked (:func:`validate_sample`, run by the dataset on every raw info before it is split per camera):

* the file: ``metainfo['epropnp_fields']`` must be set (files written by mmdet3d's own converter lack the EPro-PnP
  fields; the error gives the ``tools/create_data.py`` command that writes them, see :func:`fix_command`);
* the sample: ``token``, ``ego2global`` (4, 4) finite, ``lidar_points.lidar_path`` and ``lidar_points.lidar2ego``
  (4, 4) finite;
* every image ``images[CAM]``: ``img_path``; ``cam2img`` (3×3, or the 3×3 block of a 3×4 / 4×4) finite with
  ``fx, fy > 0`` and the principal point inside the image; ``width``, ``height`` positive integers; ``cam2ego``
  and ``lidar2cam`` (4, 4) finite. An image problem is always an error (:class:`InfoValidationError`): nothing of
  that image can be used;
* every camera instance ``cam_instances[CAM][i]``: the keys of :data:`REQUIRED_INSTANCE_KEYS`; ``bbox_3d`` 7 finite
  values ``[x, y, z, l, h, w, yaw]`` with ``l, h, w > 0`` and ``z > 0`` (centre in front of the camera);
  ``bbox_nearclip`` 4 finite values with ``x2 > x1``, ``y2 > y1`` inside ``[0, width] × [0, height]`` (±1 px);
  ``center_2d`` 2 finite values; ``depth`` finite and > 0; ``velocity`` 2 values (NaN = unknown, as in nuScenes);
  ``visibility`` an integer 0..4; ``truncation`` finite in [0, 1]; ``bbox_label_3d`` an integer ≥ −1;
  ``attr_label`` an integer 0..8; ``num_lidar_pts`` an integer ≥ 0.
  An instance failing a check is rejected (removed before the dataset parses the camera) and counted in an
  :class:`InfoValidationReport` under its first failed check; the dataset logs the counts and examples once, or
  raises when its ``bad_instances='error'``. A file whose instances are ALL rejected is always an error.

Every message names the info file, sample token, camera, instance index and field, and says what to run.
"""
import os.path as osp
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

#: keys every camera instance must have (mmdet3d's ``cam_instances`` keys used by the dataset + the EPro-PnP fields)
REQUIRED_INSTANCE_KEYS = ('bbox_3d', 'bbox_label_3d', 'bbox_label', 'velocity', 'center_2d', 'depth', 'attr_label',
                          'visibility', 'truncation', 'bbox_nearclip', 'ann_token', 'instance_token',
                          'num_lidar_pts')
#: the EPro-PnP fields added by ``tools/create_data.py`` (absent from mmdet3d's own infos)
EPROPNP_INSTANCE_KEYS = ('visibility', 'truncation', 'bbox_nearclip', 'ann_token', 'instance_token',
                         'num_lidar_pts')
BOX_TOL = 1.0  # pixels a 2D box may exceed the image


class InfoValidationError(ValueError):
    """An info file cannot be used as it is (message: file, sample, camera, field, and the command to fix it)."""


@dataclass(frozen=True)
class Problem:
    """One rejected instance or broken image: where (file, sample token, camera, instance index), which field, why."""
    ann_file: str
    token: str
    camera: Optional[str]
    instance: Optional[int]
    field: str
    reason: str

    def __str__(self) -> str:
        where = f'sample {self.token}'
        if self.camera is not None:
            where += f' {self.camera}'
        if self.instance is not None:
            where += f' instance {self.instance}'
        return f"{self.ann_file}: {where}: '{self.field}' {self.reason}"


def fix_command(ann_file: str, data_root: str, version: Optional[str]) -> str:
    """The ``tools/create_data.py`` command that rewrites ``ann_file`` with the EPro-PnP fields (prefix and output
    directory taken from the file name ``<prefix>_infos_<split>.pkl``)."""
    m = re.match(r'(.+)_infos_(train|val|test)\.pkl$', osp.basename(ann_file))
    prefix = m.group(1) if m else 'nuscenes'
    root = data_root or osp.dirname(ann_file) or '.'
    cmd = (f'python tools/create_data.py nuscenes --root-path {root} --out-dir {osp.dirname(ann_file) or "."} '
           f'--version {version or "v1.0-trainval"}')
    return cmd + ('' if prefix == 'nuscenes' else f' --extra-tag {prefix}')


@dataclass
class InfoValidationReport:
    """Counts of what :func:`validate_sample` saw and rejected in one info file.

    ``rejected``: every rejected instance (a :class:`Problem`, first failed check); ``counts``: ``{(field, kind):
    n}`` with ``kind`` the reason's first word(s) (``missing``, ``non-finite``, ``degenerate``, ...).
    """
    ann_file: str
    fix: str
    num_samples: int = 0
    num_images: int = 0
    num_instances: int = 0
    rejected: List[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def num_rejected(self) -> int:
        return len(self.rejected)

    def add(self, problem: Problem, kind: str) -> None:
        self.rejected.append(problem)
        self.counts[(problem.field, kind)] += 1

    def summary(self, max_examples: int = 5, error: bool = False) -> str:
        """One message: totals, counts per field and kind, up to ``max_examples`` examples and the fix (``error``:
        worded for an error, else for the warning of a dataset that leaves the rejected instances out). When every
        instance was rejected the message says so and does not offer ``bad_instances='warn'``."""
        lines = [f'{self.ann_file}: rejected {self.num_rejected} of {self.num_instances} camera instances '
                 f'({self.num_images} images, {self.num_samples} samples):']
        lines += [f"  {n} × '{f}' {k}" for (f, k), n in sorted(self.counts.items())]
        lines.append('  e.g.')
        lines += [f'    {p}' for p in self.rejected[:max_examples]]
        fix = (f'  fix: re-create the info file (`{self.fix}`; if the nuScenes tables themselves are damaged, repair '
               'them first)')
        if error and self.num_rejected == self.num_instances:
            lines.insert(0, 'every camera instance of the info file was rejected, so it has no ground truth:')
            lines.append(fix)
        elif error:
            lines.append(fix + ", or build the dataset with bad_instances='warn' to use it without them")
        else:
            lines.append('  these instances are left out of the dataset (neither ground truth nor ignore boxes);')
            lines.append(fix)
        return '\n'.join(lines)


def _array(value, shape: Sequence[int]) -> Optional[np.ndarray]:
    """``value`` as a float64 array of ``shape``, or None if it is not numeric or has another shape."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == tuple(shape) else None


def _is_int(value, lo: int, hi: Optional[int] = None) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return False
    return lo <= int(value) and (hi is None or int(value) <= hi)


def _matrix_problem(value) -> Optional[str]:
    arr = _array(value, (4, 4))
    if arr is None:
        return f'is not a 4x4 matrix (got {np.shape(value) if value is not None else None})'
    if not np.isfinite(arr).all():
        return 'non-finite: contains NaN/Inf'
    return None


def intrinsics_problem(cam2img, width, height) -> Optional[str]:
    """Why ``cam2img`` is unusable for an image of ``width × height`` (None if it is fine)."""
    arr = np.asarray(cam2img, dtype=object)
    try:
        k = np.asarray(cam2img, dtype=np.float64)
    except (TypeError, ValueError):
        return f'is not a numeric matrix (shape {arr.shape})'
    if k.ndim != 2 or k.shape[0] < 3 or k.shape[1] < 3 or k.shape not in ((3, 3), (3, 4), (4, 4)):
        return f'is not a 3x3, 3x4 or 4x4 matrix (shape {k.shape})'
    k = k[:3, :3]
    if not np.isfinite(k).all():
        return 'non-finite: contains NaN/Inf'
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return f'degenerate: focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g} must be > 0'
    if _is_int(width, 1) and _is_int(height, 1) and not (0 < k[0, 2] < width and 0 < k[1, 2] < height):
        return f'out of range: principal point ({k[0, 2]:g}, {k[1, 2]:g}) outside the {width}x{height} image'
    return None


def instance_problem(inst: dict, width: int, height: int):
    """``(field, kind, reason)`` of the first failed check of one camera instance (module docstring), or None."""
    for key in REQUIRED_INSTANCE_KEYS:
        if key not in inst:
            return key, 'missing', 'missing'
    box = _array(inst['bbox_3d'], (7,))
    if box is None:
        return 'bbox_3d', 'wrong shape', f'wrong shape: not 7 numbers ({inst["bbox_3d"]!r})'
    if not np.isfinite(box).all():
        return 'bbox_3d', 'non-finite', f'non-finite: {box.tolist()}'
    if (box[3:6] <= 0).any():
        return 'bbox_3d', 'degenerate', f'degenerate: size l, h, w = {box[3:6].tolist()} must be > 0'
    if box[2] <= 0:
        return 'bbox_3d', 'out of range', f'out of range: centre depth z = {box[2]:g} m must be > 0'
    b2d = _array(inst['bbox_nearclip'], (4,))
    if b2d is None:
        return 'bbox_nearclip', 'wrong shape', f'wrong shape: not 4 numbers ({inst["bbox_nearclip"]!r})'
    if not np.isfinite(b2d).all():
        return 'bbox_nearclip', 'non-finite', f'non-finite: {b2d.tolist()}'
    if not (b2d[2] > b2d[0] and b2d[3] > b2d[1]):
        return 'bbox_nearclip', 'degenerate', f'degenerate: [x1, y1, x2, y2] = {b2d.tolist()} has no area'
    if (b2d[0] < -BOX_TOL or b2d[1] < -BOX_TOL or b2d[2] > width + BOX_TOL or b2d[3] > height + BOX_TOL):
        return ('bbox_nearclip', 'outside image',
                f'outside image: {b2d.tolist()} exceeds the {width}x{height} image of the info')
    c2d = _array(inst['center_2d'], (2,))
    if c2d is None or not np.isfinite(c2d).all():
        return 'center_2d', 'non-finite', f'non-finite or not 2 numbers: {inst["center_2d"]!r}'
    depth = _array(inst['depth'], ())
    if depth is None or not np.isfinite(depth) or depth <= 0:
        return 'depth', 'out of range', f'out of range: {inst["depth"]!r} (must be finite and > 0)'
    if _array(inst['velocity'], (2,)) is None:
        return 'velocity', 'wrong shape', f'wrong shape: not 2 numbers ({inst["velocity"]!r})'
    if not _is_int(inst['visibility'], 0, 4):
        return 'visibility', 'out of range', f'out of range: {inst["visibility"]!r} (an integer 0..4)'
    trunc = _array(inst['truncation'], ())
    if trunc is None or not np.isfinite(trunc) or not 0 <= trunc <= 1:
        return 'truncation', 'out of range', f'out of range: {inst["truncation"]!r} (finite, in [0, 1])'
    for key, lo, hi in (('bbox_label_3d', -1, None), ('bbox_label', -1, None), ('attr_label', 0, 8),
                        ('num_lidar_pts', 0, None)):
        if not _is_int(inst[key], lo, hi):
            rng = f'{lo}..{hi}' if hi is not None else f'≥ {lo}'
            return key, 'out of range', f'out of range: {inst[key]!r} (an integer {rng})'
    return None


def image_problems(img: dict) -> List[tuple]:
    """``[(field, reason)]`` of one ``images[CAM]`` entry (module docstring)."""
    out = []
    if not img.get('img_path'):
        out.append(('img_path', 'missing'))
    width, height = img.get('width'), img.get('height')
    for key, val in (('width', width), ('height', height)):
        if not _is_int(val, 1):
            out.append((key, 'missing' if val is None else f'out of range: {val!r} (a positive integer)'))
    if 'cam2img' not in img:
        out.append(('cam2img', 'missing (camera intrinsics)'))
    else:
        why = intrinsics_problem(img['cam2img'], width, height)
        if why:
            out.append(('cam2img', why))
    for key in ('cam2ego', 'lidar2cam'):
        if key not in img:
            out.append((key, 'missing (camera calibration)'))
        else:
            why = _matrix_problem(img[key])
            if why:
                out.append((key, why))
    return out


def sample_problems(info: dict) -> List[tuple]:
    """``[(field, reason)]`` of the sample-level keys (module docstring)."""
    out = []
    if 'ego2global' not in info:
        out.append(('ego2global', 'missing (ego pose)'))
    else:
        why = _matrix_problem(info['ego2global'])
        if why:
            out.append(('ego2global', why))
    lidar = info.get('lidar_points')
    if not isinstance(lidar, dict):
        out.append(('lidar_points', 'missing'))
    else:
        if not lidar.get('lidar_path'):
            out.append(('lidar_points.lidar_path', 'missing'))
        if 'lidar2ego' not in lidar:
            out.append(('lidar_points.lidar2ego', 'missing (LiDAR calibration)'))
        else:
            why = _matrix_problem(lidar['lidar2ego'])
            if why:
                out.append(('lidar_points.lidar2ego', why))
    if not isinstance(info.get('images'), dict) or not info['images']:
        out.append(('images', 'missing or empty'))
    return out


def validate_sample(info: dict, report: InfoValidationReport) -> None:
    """Check one raw info (module docstring): raise :class:`InfoValidationError` on a sample/image problem, remove
    rejected camera instances from ``info['cam_instances']`` in place and record them in ``report``."""
    token = info.get('token', f'<no token, sample_idx {info.get("sample_idx")}>')
    problems = [Problem(report.ann_file, token, None, None, f, r) for f, r in sample_problems(info)]
    images = info.get('images') or {}
    for cam, img in images.items():
        problems += [Problem(report.ann_file, token, cam, None, f, r) for f, r in image_problems(img)]
    if problems:
        shown = '\n  '.join(str(p) for p in problems[:10])
        more = f'\n  ... and {len(problems) - 10} more' if len(problems) > 10 else ''
        raise InfoValidationError(f'{report.ann_file}: sample {token} cannot be used:\n  {shown}{more}\n'
                                  f'fix: re-create the info file: `{report.fix}`')
    report.num_samples += 1
    report.num_images += len(images)
    cam_instances: Dict[str, list] = info.get('cam_instances') or {}
    for cam, insts in cam_instances.items():
        img = images.get(cam, {})
        kept = []
        for i, inst in enumerate(insts):
            report.num_instances += 1
            bad = instance_problem(inst, img.get('width'), img.get('height'))
            if bad is None:
                kept.append(inst)
            else:
                report.add(Problem(report.ann_file, token, cam, i, bad[0], bad[2]), bad[1])
        cam_instances[cam] = kept


def check_epropnp_metainfo(metainfo: dict, ann_file: str, fix: str) -> None:
    """Raise :class:`InfoValidationError` if the info file was not written by this project's
    ``tools/create_data.py`` (no ``metainfo['epropnp_fields']``)."""
    if metainfo.get('epropnp_fields') is None:
        raise InfoValidationError(
            f"{ann_file}: no 'epropnp_fields' in metainfo: this info file lacks the EPro-PnP fields "
            f"({', '.join(EPROPNP_INSTANCE_KEYS)} per camera instance; width, height per image), e.g. it was "
            f"written by mmdet3d's own converter. Fix: `{fix}`")


__all__ = ['InfoValidationError', 'InfoValidationReport', 'Problem', 'validate_sample', 'instance_problem',
           'image_problems', 'sample_problems', 'intrinsics_problem', 'check_epropnp_metainfo', 'fix_command',
           'REQUIRED_INSTANCE_KEYS', 'EPROPNP_INSTANCE_KEYS']
