"""Camera intrinsics for inference on your own images (``tools/demo.py --intrinsics`` / ``--calib``).

``K`` (3, 3) follows the data contract (``docs/data_contract.md``): pixels of the image as given (before any
resize), ``u = fx·X/Z + cx`` in the pixel convention of the data the model was trained on (nuScenes / OpenCV:
pixel ``i`` centred on ``u = i``). Calibration files:

* JSON ``{"cam2img": K}`` (one camera for every image) and/or ``{"images": {"<file name>": {"cam2img": K}}}``
  (per image, matched by base name; a per-image entry beats the default). ``K`` is a 3×3, 3×4 or 4×4 nested list
  (only the top-left 3×3 is used); ``"intrinsics": [fx, fy, cx, cy]`` may replace ``"cam2img"`` anywhere.
  A camera that is not level: ``"cam2level"`` (3×3 rotation real camera → level camera, see
  :mod:`epropnp_det.apis.level`) or ``"pitch_deg"`` / ``"roll_deg"``, at the top level or per image.
* KITTI ``calib/*.txt``: the ``P2:`` line (12 numbers), or a ``K:`` line (9 numbers).
"""
import json
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ['CalibError', 'Calibration', 'intrinsics_matrix', 'check_intrinsics', 'load_calibration']


class CalibError(ValueError):
    """A calibration that is missing or malformed (the message names the file and what is wrong)."""


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``(fx, fy, cx, cy)`` pixels → (3, 3) float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
    return np.array([[fx, 0., cx], [0., fy, cy], [0., 0., 1.]], dtype=np.float64)


def check_intrinsics(K, source: str = 'intrinsics') -> np.ndarray:
    """Validates a 3×3 / 3×4 / 4×4 camera matrix and returns its (3, 3) float64 top-left block.

    Raises :class:`CalibError` (naming ``source``) for a wrong shape, non-finite entries, non-positive focal lengths
    or a last row other than ``[0, 0, 1]``.
    """
    try:
        mat = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibError(f'{source}: camera matrix is not numeric ({exc})') from None
    if mat.ndim != 2 or mat.shape[0] < 3 or mat.shape[1] < 3 or mat.shape[0] > 4 or mat.shape[1] > 4:
        raise CalibError(f'{source}: camera matrix must be 3x3, 3x4 or 4x4, got shape {mat.shape}')
    k = mat[:3, :3].copy()
    if not np.isfinite(k).all():
        raise CalibError(f'{source}: camera matrix has non-finite entries: {k.tolist()}')
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibError(f'{source}: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}')
    if not np.allclose(k[2], (0., 0., 1.)):
        raise CalibError(f'{source}: the last row of K must be [0, 0, 1], got {k[2].tolist()}')
    return k


def _entry_to_k(entry, source: str) -> np.ndarray:
    if isinstance(entry, dict):
        if 'cam2img' in entry:
            return check_intrinsics(entry['cam2img'], source)
        if 'intrinsics' in entry:
            vals = entry['intrinsics']
            if len(vals) != 4:
                raise CalibError(f'{source}: "intrinsics" must be [fx, fy, cx, cy], got {vals}')
            return check_intrinsics(intrinsics_matrix(*vals), source)
        raise CalibError(f'{source}: needs "cam2img" (3x3) or "intrinsics" [fx, fy, cx, cy]; keys: {sorted(entry)}')
    return check_intrinsics(entry, source)


def _entry_to_level(entry, source: str):
    """``cam2level`` (3, 3) of a JSON entry, or None if it has none."""
    if not isinstance(entry, dict):
        return None
    from .level import tilt_rotation
    if 'cam2level' in entry:
        rot = np.asarray(entry['cam2level'], dtype=np.float64)
        if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
            raise CalibError(f'{source}: "cam2level" must be a 3x3 rotation matrix, got {entry["cam2level"]}')
        return rot
    if 'pitch_deg' in entry or 'roll_deg' in entry:
        return tilt_rotation(float(entry.get('pitch_deg', 0.0)), float(entry.get('roll_deg', 0.0)))
    return None


class Calibration:
    """Intrinsics per input: a default ``K`` (for every image) and per-file ``K`` by base name.

    ``lookup(name)`` returns the (3, 3) float64 matrix for an input file name or raises :class:`CalibError`.
    """

    def __init__(self, default: Optional[np.ndarray] = None, per_image: Optional[Dict[str, np.ndarray]] = None,
                 source: str = 'calibration', level_default: Optional[np.ndarray] = None,
                 level_per_image: Optional[Dict[str, np.ndarray]] = None):
        self.default = None if default is None else check_intrinsics(default, source)
        self.per_image = {osp.basename(k): check_intrinsics(v, f'{source} [{k}]') for k, v in (per_image or {}).items()}
        self.source = source
        self.level_default = level_default
        self.level_per_image = {osp.basename(k): v for k, v in (level_per_image or {}).items()}

    def lookup_level(self, name: str) -> Optional[np.ndarray]:
        """``cam2level`` (3, 3) of an input (per image, else the file's default), None for a level camera."""
        return self.level_per_image.get(osp.basename(name), self.level_default)

    @classmethod
    def from_intrinsics(cls, values: Sequence[float]) -> 'Calibration':
        """``--intrinsics fx fy cx cy``."""
        if len(values) != 4:
            raise CalibError(f'--intrinsics needs 4 numbers fx fy cx cy, got {len(values)}')
        return cls(default=intrinsics_matrix(*values), source='--intrinsics')

    def lookup(self, name: str) -> np.ndarray:
        key = osp.basename(name)
        if key in self.per_image:
            return self.per_image[key].copy()
        if self.default is not None:
            return self.default.copy()
        raise CalibError(f'{name}: no intrinsics in {self.source} (it lists {len(self.per_image)} images, not this '
                         f'one, and has no default "cam2img")')


def load_calibration(path: str) -> Calibration:
    """Reads a JSON or KITTI calibration file (formats in the module docstring)."""
    if not osp.isfile(path):
        raise CalibError(f'{path}: calibration file not found')
    with open(path) as f:
        text = f.read()
    if path.lower().endswith('.json') or text.lstrip().startswith('{'):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibError(f'{path}: not valid JSON ({exc})') from None
        if not isinstance(data, dict):
            raise CalibError(f'{path}: expected a JSON object with "cam2img" and/or "images"')
        default = None
        if 'cam2img' in data or 'intrinsics' in data:
            default = _entry_to_k(data, path)
        images = data.get('images', {})
        per_image = {name: _entry_to_k(entry, f'{path} [{name}]') for name, entry in images.items()}
        if default is None and not per_image:
            raise CalibError(f'{path}: has neither "cam2img"/"intrinsics" nor "images"')
        level_per_image = {name: _entry_to_level(entry, f'{path} [{name}]') for name, entry in images.items()}
        return Calibration(default, per_image, source=path, level_default=_entry_to_level(data, path),
                           level_per_image={k: v for k, v in level_per_image.items() if v is not None})
    for line in text.splitlines():
        key, _, rest = line.partition(':')
        key = key.strip()
        if key in ('P2', 'K'):
            vals = [float(v) for v in rest.split()]
            need = 12 if key == 'P2' else 9
            if len(vals) != need:
                raise CalibError(f'{path}: line {key} has {len(vals)} numbers, expected {need}')
            return Calibration(np.asarray(vals).reshape(3, -1), source=path)
    raise CalibError(f'{path}: no "P2:" or "K:" line (KITTI format) and not JSON')
