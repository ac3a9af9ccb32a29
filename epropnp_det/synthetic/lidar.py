"""Ray-cast LIDAR_TOP sweep of the synthetic generator.

A spinning 32-beam LiDAR (elevations linearly spaced in ``LIDAR_ELEVATION_DEG``, ``LIDAR_AZIMUTH_STEPS`` azimuths)
is cast against the ground plane z = 0 (ego frame) and the object boxes.  A box return is placed 2 cm behind
the hit surface (at most half-way through the box along the ray), so that every box return lies strictly inside
its box and ``num_lidar_pts`` (points inside the box, devkit ``points_in_box`` semantics) is exact even after the
float32 storage of ``.pcd.bin`` files.  Rays grazing a box along a chord shorter than 1 mm are dropped.
"""
from __future__ import annotations

import numpy as np

from .constants import (
    CLASS_INTENSITY,
    CLASSES,
    LIDAR_AZIMUTH_STEPS,
    LIDAR_ELEVATION_DEG,
    LIDAR_MAX_RANGE,
    LIDAR_NUM_BEAMS,
)
from .geometry import Road, rot_z
from .world import KERB_L

_INTENSITY = np.array([CLASS_INTENSITY[c] for c in CLASSES], dtype=np.float32)


def lidar_directions() -> tuple:
    """Unit ray directions (R, 3) in the LiDAR frame and their beam (ring) index (R,) float32."""
    elev = np.deg2rad(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], LIDAR_NUM_BEAMS))
    azim = np.linspace(-np.pi, np.pi, LIDAR_AZIMUTH_STEPS, endpoint=False)
    e, a = np.meshgrid(elev, azim, indexing='ij')
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(LIDAR_NUM_BEAMS, dtype=np.float32), LIDAR_AZIMUTH_STEPS)
    return dirs, ring


def boxes_to_ego(boxes: dict, ego_trans: np.ndarray, ego_yaw: float) -> tuple:
    """Global boxes -> ego frame: centres (N, 3) m and yaws (N,) rad."""
    R_g2e = rot_z(ego_yaw).T
    centers = (boxes['center'] - ego_trans) @ R_g2e.T
    return centers, np.asarray(boxes['yaw']) - ego_yaw


def lidar_sweep(boxes: dict, ego_trans: np.ndarray, ego_yaw: float, lidar_rot: np.ndarray,
                lidar_trans: np.ndarray, road: Road, rng: np.random.Generator) -> np.ndarray:
    """Ray-cast one sweep.

    Args:
        boxes: dict with ``center`` (N, 3) global m, ``yaw`` (N,) rad, ``wlh`` (N, 3) m, ``label`` (N,) int.
        ego_trans (3,), ego_yaw: ego pose (global).  lidar_rot (3, 3), lidar_trans (3,): LiDAR -> ego.
        road: for the ground intensity (lane markings are brighter).  rng: intensity noise.
    Returns:
        points (P, 5) float32 in the LiDAR frame: x, y, z (m), intensity (0..255), ring index.
    """
    dirs_l, ring = lidar_directions()
    dirs = dirs_l @ lidar_rot.T                 # ego frame
    origin = np.asarray(lidar_trans, dtype=np.float64)
    best = np.full(len(dirs), np.inf)
    hit_id = np.full(len(dirs), -1, dtype=np.int64)
    # Ground z = 0 (ego frame).
    down = dirs[:, 2] < -1e-6
    best[down] = -origin[2] / dirs[down, 2]
    centers, yaws = boxes_to_ego(boxes, ego_trans, ego_yaw)
    for k in range(len(centers)):
        w, l, h = boxes['wlh'][k]
        half = np.array([l / 2.0, w / 2.0, h / 2.0])
        R = rot_z(yaws[k])
        o = R.T @ (origin - centers[k])
        d = dirs @ R                                   # R^T d per ray
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-half - o) / d
        t2 = (half - o) / d
        t_in = np.minimum(t1, t2).max(axis=1)
        t_out = np.maximum(t1, t2).min(axis=1)
        chord = t_out - t_in
        ok = (chord >= 1e-3) & (t_in > 0.0)
        t_pt = t_in + np.minimum(0.02, 0.5 * chord)
        closer = ok & (t_in < best)
        best[closer] = t_pt[closer]
        hit_id[closer] = k
    keep = best <= LIDAR_MAX_RANGE
    t = best[keep]
    pts_l = dirs_l[keep] * t[:, None]             # LiDAR frame (origin at the sensor)
    ids = hit_id[keep]
    intensity = np.empty(len(t), dtype=np.float32)
    on_box = ids >= 0
    intensity[on_box] = _INTENSITY[np.asarray(boxes['label'], dtype=np.int64)[ids[on_box]]] \
        if len(centers) else 0.0
    if (~on_box).any():
        g = origin + dirs[keep][~on_box] * t[~on_box, None]   # ground points, ego frame
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        gx = ego_trans[0] + c * g[:, 0] - s * g[:, 1]
        gy = ego_trans[1] + s * g[:, 0] + c * g[:, 1]
        s_road, lat = road.to_road(gx, gy)
        a = np.abs(lat)
        gi = np.where(a < KERB_L, 8.0, 25.0)
        marking = (np.abs(a - 0.15) < 0.07) | (np.abs(a - 7.0) < 0.08) | (
            (np.abs(a - 3.5) < 0.07) & (np.mod(s_road, 9.0) < 3.0))
        gi[marking] = 110.0
        intensity[~on_box] = gi
    intensity = np.clip(intensity * rng.uniform(0.8, 1.2, size=len(t)), 0, 255).astype(np.float32)
    return np.concatenate([pts_l.astype(np.float32), intensity[:, None], ring[keep][:, None]], axis=1)


def count_points_in_boxes(points_l: np.ndarray, boxes: dict, ego_trans: np.ndarray, ego_yaw: float,
                          lidar_rot: np.ndarray, lidar_trans: np.ndarray) -> np.ndarray:
    """Number of points (P, >=3, LiDAR frame, as stored) inside each box (closed box, devkit semantics) -> (N,)."""
    p = points_l[:, :3].astype(np.float64) @ lidar_rot.T + lidar_trans   # ego frame
    centers, yaws = boxes_to_ego(boxes, ego_trans, ego_yaw)
    counts = np.zeros(len(centers), dtype=np.int64)
    for k in range(len(centers)):
        w, l, h = boxes['wlh'][k]
        loc = (p - centers[k]) @ rot_z(yaws[k])
        inside = (np.abs(loc[:, 0]) <= l / 2) & (np.abs(loc[:, 1]) <= w / 2) & (np.abs(loc[:, 2]) <= h / 2)
        counts[k] = int(inside.sum())
    return counts
