"""Cameras that are not level: warp the image to a level virtual camera with the same centre, predict there, and
rotate the boxes back into the real camera frame.

The model's pose is 4-DoF (x, y, z, yaw about the camera y axis), i.e. it assumes the camera's x-z plane is parallel
to the ground. For a camera rotated by ``cam2level`` (``R``, real-camera → level-camera coordinates,
``p_level = R · p_real``) the level virtual camera with the same centre and intrinsics ``K`` sees the pixel
``x_level ~ K R K⁻¹ x_real`` (a homography: no depth needed). Boxes predicted in the level frame (yaw about gravity)
are exact in that frame; in the real camera frame their centres are ``Rᵀ c`` and their orientation ``Rᵀ R_y(yaw)``.

Angles: ``pitch`` > 0 looks down, ``roll`` > 0 turns the camera about its optical axis from +x towards +y (the
horizon appears rotated the other way in the image); :func:`tilt_rotation` gives ``R`` for both.
"""
from typing import Tuple

import numpy as np

__all__ = ['tilt_rotation', 'level_homography', 'rectify_image', 'boxes_level_to_camera']


def tilt_rotation(pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """(3, 3) ``cam2level`` of a camera pitched by ``pitch_deg`` (down) and rolled by ``roll_deg`` (camera frame:
    ``R = R_x(−pitch) · R_z(roll)``; the optical axis of a pitched camera is ``(0, sin p, cos p)`` in the level
    frame)."""
    p, r = np.deg2rad(pitch_deg), np.deg2rad(roll_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ rz


def _check_rotation(rot) -> np.ndarray:
    rot = np.asarray(rot, dtype=np.float64)
    if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
        raise ValueError(f'cam2level must be a (3, 3) rotation matrix, got {rot.tolist()}')
    return rot


def level_homography(cam2img, cam2level, convention: str = 'v1') -> np.ndarray:
    """(3, 3) map of continuous pixels of the real image to those of the level virtual camera (same ``K``):
    ``C · K R K⁻¹ · C⁻¹`` with ``C`` the K-projection → continuous shift of ``convention``."""
    from epropnp_det.structures.boxes import PIXEL_CONVENTIONS

    from .calib import check_intrinsics
    K = check_intrinsics(cam2img)
    shift = np.eye(3)
    shift[:2, 2] = PIXEL_CONVENTIONS[convention]
    return shift @ K @ _check_rotation(cam2level) @ np.linalg.inv(K) @ np.linalg.inv(shift)


#: how :func:`rectify_image` fills the pixels the level camera sees outside the real image (OpenCV border modes)
BORDERS = ('constant', 'replicate', 'reflect')


def rectify_image(img: np.ndarray, cam2img, cam2level, convention: str = 'v1',
                  border: str = 'constant') -> Tuple[np.ndarray, np.ndarray]:
    """The image of the level virtual camera (same size and ``K``; pixels it sees outside the real image are
    black, or with ``border='replicate'`` / ``'reflect'`` the nearest edge pixel / the mirrored image), bilinear,
    and the continuous-pixel homography real → level (:func:`level_homography`). A model trained without black
    bands may miss objects near one (``tools/benchmarks/pitch_roll_accuracy.py``)."""
    import cv2
    if border not in BORDERS:
        raise ValueError(f'border must be one of {BORDERS}, got {border!r}')
    mode = {'constant': cv2.BORDER_CONSTANT, 'replicate': cv2.BORDER_REPLICATE, 'reflect': cv2.BORDER_REFLECT}[border]
    H = level_homography(cam2img, cam2level, convention)
    to_cv = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.]])  # continuous → cv2 (integer = pixel centre)
    h, w = img.shape[:2]
    warped = cv2.warpPerspective(img, to_cv @ H @ np.linalg.inv(to_cv), (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=mode, borderValue=0)
    return warped, H


def boxes_level_to_camera(boxes, cam2level) -> Tuple[np.ndarray, np.ndarray]:
    """Level-frame model boxes (N, 7) ``[l, h, w, x, y, z, yaw]`` → real-camera-frame centres (N, 3) and
    orientations (N, 3, 3) (object-local KITTI axes → real camera)."""
    R = _check_rotation(cam2level)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    zeros, ones = np.zeros_like(c), np.ones_like(c)
    ry = np.stack([np.stack([c, zeros, s], -1), np.stack([zeros, ones, zeros], -1),
                   np.stack([-s, zeros, c], -1)], -2)                                   # R_y(yaw) (N, 3, 3)
    return b[:, 3:6] @ R, R.T[None] @ ry
