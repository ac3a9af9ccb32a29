"""Numpy geometry of the synthetic generator: yaw rotations, the curved road, box corners and ray/box intersection.

Frames and units follow :mod:`epropnp_det.synthetic.constants` (metres, radians, ``[w, x, y, z]`` quaternions).
"""
from __future__ import annotations

import numpy as np


def yaw_to_quaternion(yaw: float) -> list:
    """Rotation about +z by ``yaw`` rad -> ``[w, x, y, z]`` unit quaternion (list of 4 floats)."""
    return [float(np.cos(yaw / 2.0)), 0.0, 0.0, float(np.sin(yaw / 2.0))]


def rot_z(yaw: float) -> np.ndarray:
    """(3, 3) rotation about +z by ``yaw`` rad (counter-clockwise seen from above)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# Camera (OpenCV x right, y down, z forward) -> ego (x forward, y left, z up) for a camera looking along ego +x.
CAM_TO_EGO_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_rotation(yaw: float) -> np.ndarray:
    """(3, 3) camera->ego rotation of a level camera whose optical axis points at ego azimuth ``yaw`` rad."""
    return rot_z(yaw) @ CAM_TO_EGO_FORWARD


def matrix_to_quaternion(rot: np.ndarray) -> list:
    """(3, 3) proper rotation -> ``[w, x, y, z]`` unit quaternion with w >= 0 (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return [float(v) for v in q]


def quaternion_to_matrix(q) -> np.ndarray:
    """``[w, x, y, z]`` quaternion -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def wrap_angle(a):
    """Wrap angle(s) in rad to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


class Road:
    """A circular-arc road (constant curvature) on the flat world ground plane z = 0.

    Road coordinates: ``s`` = arc length along the centreline (m), ``l`` = lateral offset to the left of the
    centreline (m).  The centreline passes through ``origin`` (global xy, m) with heading ``heading0`` (rad,
    counter-clockwise from global +x) at s = 0 and turns with signed ``curvature`` (1/m, > 0 turns left).
    ``|curvature|`` must be >= 1e-6 (use a tiny value for an almost straight road).
    """

    def __init__(self, origin, heading0: float, curvature: float):
        if abs(curvature) < 1e-6:
            raise ValueError(f'Road curvature must satisfy |curvature| >= 1e-6, got {curvature}')
        self.origin = np.asarray(origin, dtype=np.float64)
        self.heading0 = float(heading0)
        self.curvature = float(curvature)
        self.radius = 1.0 / self.curvature  # signed: > 0 centre on the left
        n0 = np.array([-np.sin(self.heading0), np.cos(self.heading0)])
        self.centre = self.origin + self.radius * n0

    def heading(self, s):
        """Road tangent heading (rad, global) at arc length(s) ``s``."""
        return self.heading0 + self.curvature * np.asarray(s, dtype=np.float64)

    def point(self, s, l):
        """Global xy of road coordinates: ``s``, ``l`` broadcastable arrays -> (..., 2) metres."""
        th = self.heading(s)
        l = np.asarray(l, dtype=np.float64)
        # Point at lateral l lies at distance (R - l) from the centre, in direction -n(s) (for either sign of R).
        x = self.centre[0] + (self.radius - l) * np.sin(th)
        y = self.centre[1] - (self.radius - l) * np.cos(th)
        return np.stack(np.broadcast_arrays(x, y), axis=-1)

    def velocity(self, s, l, ds_dt):
        """Global xy velocity (..., 2) m/s of a point moving with ``ds_dt`` (m/s along the centreline) at fixed l."""
        th = self.heading(s)
        speed = np.asarray(ds_dt) * (1.0 - self.curvature * np.asarray(l))
        return np.stack(np.broadcast_arrays(speed * np.cos(th), speed * np.sin(th)), axis=-1)

    def to_road(self, x, y):
        """Global xy arrays -> (s, l) road coordinates (same shapes).  ``s`` is unwrapped around s = 0."""
        dx = x - self.centre[0]
        dy = y - self.centre[1]
        dist = np.sqrt(dx * dx + dy * dy)
        sign = 1.0 if self.radius > 0 else -1.0
        l = self.radius - sign * dist
        # point = centre + (R - l) (sin th, -cos th) and sign(R - l) = sign(R) for |l| < |R|.
        th = np.arctan2(sign * dx, -sign * dy)
        s = wrap_angle(th - self.heading0) / self.curvature
        return s, l


def box_corners(center, wlh, yaw) -> np.ndarray:
    """Box (centre (3,), wlh (3,), yaw rad about z) -> (8, 3) corners in the same frame as ``center``.

    Corner order follows nuScenes ``Box.corners``: front 4 (x = +l/2) then back 4; within each, (+y,+z),
    (-y,+z), (-y,-z), (+y,-z).
    """
    w, l, h = wlh
    x = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * l / 2
    y = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    z = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * h / 2
    return (rot_z(yaw) @ np.stack([x, y, z])).T + np.asarray(center)


def ray_box_intersect(origin_loc: np.ndarray, dirs_loc: np.ndarray, half: np.ndarray):
    """Slab test of rays against an axis-aligned box centred at the origin of its local frame.

    Args:
        origin_loc: (3,) ray origin in the box frame (m).
        dirs_loc: (..., 3) ray directions in the box frame (any length; ``t`` is in units of that length).
        half: (3,) half extents (m) along the box axes.
    Returns:
        t_in (...): entry parameter (``origin + t_in * dir`` is the entry point), inf where the ray misses;
        t_out (...): exit parameter; axis (...) int8: box axis of the entry face (0 x, 1 y, 2 z);
        sign (...) float: +1 / -1 side of the entry face along that axis.
    Rays starting inside the box report ``t_in < 0``; callers keep ``t_in > near``.
    """
    d = np.where(np.abs(dirs_loc) < 1e-12, 1e-12, dirs_loc)
    inv = 1.0 / d
    t1 = (-half - origin_loc) * inv
    t2 = (half - origin_loc) * inv
    tmin_ax = np.minimum(t1, t2)
    tmax_ax = np.maximum(t1, t2)
    axis = np.argmax(tmin_ax, axis=-1)
    t_in = np.take_along_axis(tmin_ax, axis[..., None], axis=-1)[..., 0]
    t_out = tmax_ax.min(axis=-1)
    d_ax = np.take_along_axis(d, axis[..., None], axis=-1)[..., 0]
    sign = np.where(d_ax > 0, -1.0, 1.0)
    miss = t_out < t_in
    t_in = np.where(miss, np.inf, t_in)
    return t_in, t_out, axis.astype(np.int8), sign
