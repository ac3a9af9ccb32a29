"""Camera image rendering of the synthetic generator (numpy z-buffer ray casting, exact occlusion).

Every pixel casts the ray through its centre (OpenCV convention: pixel (i, j) <-> ``u = i, v = j`` of ``K``).
Background: sky gradient above the horizon, a textured ground plane z = 0 (asphalt road with lane markings,
kerb, sidewalk tiles, terrain) below, with distance haze.  Objects: each box is ray-cast only inside the pixel
rectangle of its near-plane-clipped projection (z >= 0.1 m); a depth buffer keeps the nearest hit, so occlusion
is exact.  Faces are coloured by class with Lambertian shading from the scene's sun; the front face (local +x,
the heading) carries a large white panel, the back face is dark and the sides and top have a white band at
their front end, so the heading is visible from every side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import CLASS_COLORS, CLASSES
from .geometry import Road, rot_z
from .world import KERB_L, SIDEWALK_L

NEAR_PLANE = 0.1
HORIZON_RGB = np.array([196.0, 208.0, 222.0], dtype=np.float32)
ZENITH_RGB = np.array([88.0, 138.0, 212.0], dtype=np.float32)
# Ground materials (index -> RGB).
_GROUND_PALETTE = np.array([
    (100, 104, 82),    # 0 terrain
    (150, 148, 140),   # 1 sidewalk
    (172, 172, 166),   # 2 kerb stones
    (86, 86, 90),      # 3 asphalt
    (118, 116, 110),   # 4 sidewalk tile joints
    (220, 188, 40),    # 5 yellow centre line
    (228, 228, 224),   # 6 white markings
], dtype=np.float32)
_CLASS_RGB = np.array([CLASS_COLORS[c] for c in CLASSES], dtype=np.float32)
_VEHICLE = np.array([c in ('car', 'truck', 'trailer', 'bus', 'construction_vehicle') for c in CLASSES])
_BARRIER = CLASSES.index('barrier')
_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
_CORNER_SIGNS = np.array([[1, 1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1],
                          [-1, 1, 1], [-1, -1, 1], [-1, -1, -1], [-1, 1, -1]], dtype=np.float64)
_NOISE_BANK: dict = {}


@dataclass
class Camera:
    """A pinhole camera: ``K`` (3, 3) px, image ``width`` x ``height`` px, ``rot`` (3, 3) and ``trans`` (3,)
    camera->ego (OpenCV camera frame, ego frame x forward / y left / z up, metres)."""
    name: str
    K: np.ndarray
    width: int
    height: int
    rot: np.ndarray
    trans: np.ndarray


def ground_colors(road: Road, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Ground texture at global points (gx, gy) (equal shapes) -> (..., 3) float32 RGB."""
    s, lat = road.to_road(gx, gy)
    a = np.abs(lat)
    mat = np.zeros(gx.shape, dtype=np.uint8)
    mat[a < SIDEWALK_L[1]] = 1
    mat[a < SIDEWALK_L[0]] = 2
    mat[a < KERB_L] = 3
    mat[(mat == 1) & ((np.mod(s, 2.0) < 0.06) | (np.mod(a - SIDEWALK_L[0], 1.7) < 0.06))] = 4
    mat[np.abs(a - 0.15) < 0.07] = 5  # double yellow centre line
    white = (np.abs(a - 3.5) < 0.07) & (np.mod(s, 9.0) < 3.0)  # dashed lane divider
    white |= np.abs(a - 7.0) < 0.08  # solid edge line
    white |= (np.abs(a - 8.5) < 0.06) & (np.mod(s, 6.0) < 1.0)  # parking lane boundary
    mat[white] = 6
    return _GROUND_PALETTE[mat]


class CameraRenderer:
    """Renders images of one camera (fixed on the ego).  Caches everything that depends only on the camera:
    pixel rays, the sky, and the ground point of every below-horizon pixel in the ego frame (flat ground)."""

    def __init__(self, cam: Camera):
        self.cam = cam
        H, W = cam.height, cam.width
        K = cam.K
        self.dx = ((np.arange(W) - K[0, 2]) / K[0, 0]).astype(np.float32)  # camera-frame ray x at z = 1
        self.dy = ((np.arange(H) - K[1, 2]) / K[1, 1]).astype(np.float32)
        R = cam.rot.astype(np.float32)
        dxe = R[0, 0] * self.dx[None, :] + R[0, 1] * self.dy[:, None] + R[0, 2]
        dye = R[1, 0] * self.dx[None, :] + R[1, 1] * self.dy[:, None] + R[1, 2]
        dze = R[2, 0] * self.dx[None, :] + R[2, 1] * self.dy[:, None] + R[2, 2]
        norm = np.sqrt(dxe ** 2 + dye ** 2 + dze ** 2)
        elev = np.arcsin(np.clip(dze / norm, -1.0, 1.0))
        w_sky = np.clip(elev / (np.pi / 5.0), 0.0, 1.0)[..., None] ** 0.7
        self.sky = (HORIZON_RGB * (1.0 - w_sky) + ZENITH_RGB * w_sky).astype(np.float32)
        ground = dze < -1e-4
        self.ground_idx = np.flatnonzero(ground)
        t = -cam.trans[2] / dze.ravel()[self.ground_idx]
        self.ground_ego = np.stack([cam.trans[0] + t * dxe.ravel()[self.ground_idx],
                                    cam.trans[1] + t * dye.ravel()[self.ground_idx]])  # (2, G) ego xy
        dist = t * np.sqrt(dxe.ravel()[self.ground_idx] ** 2 + dye.ravel()[self.ground_idx] ** 2)
        self.haze = np.exp(-dist / 300.0).astype(np.float32)[:, None]
        self.haze_rgb = (HORIZON_RGB * (1.0 - self.haze)).astype(np.float32)

    def background(self, road: Road, ego_trans: np.ndarray, ego_yaw: float) -> np.ndarray:
        """Sky and ground -> (H, W, 3) float32 RGB."""
        img = self.sky.copy()
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        ex, ey = self.ground_ego
        gx = ego_trans[0] + c * ex - s * ey
        gy = ego_trans[1] + s * ex + c * ey
        col = ground_colors(road, gx, gy) * self.haze + self.haze_rgb
        img.reshape(-1, 3)[self.ground_idx] = col
        return img

    def render(self, road: Road, ego_trans: np.ndarray, ego_yaw: float, boxes: dict, sun: np.ndarray,
               rng: np.random.Generator, noise_std: float = 3.0):
        """Render one image.

        Args:
            road: the scene road (ground texture).  ego_trans (3,) m, ego_yaw rad: ego pose (global).
            boxes: dict with ``center`` (N, 3) global m (geometric centre), ``yaw`` (N,) rad global, ``wlh``
                (N, 3) m, ``label`` (N,) int class index into CLASSES, ``gain`` (N, 3) per-instance colour gain.
            sun: (3,) global unit vector towards the sun.  rng: generator for the pixel-noise offset.
        Returns:
            image (H, W, 3) uint8 RGB; footprint (N,) int64 in-image pixels the box would cover alone;
            visible (N,) int64 pixels where the box is the nearest surface; id_map (H, W) int16 (-1 = none).
        """
        cam = self.cam
        H, W = cam.height, cam.width
        K = cam.K
        img = self.background(road, ego_trans, ego_yaw)
        n = len(boxes['label'])
        footprint = np.zeros(n, dtype=np.int64)
        zbuf = np.full((H, W), np.inf, dtype=np.float32)
        id_map = np.full((H, W), -1, dtype=np.int16)
        face = np.zeros((H, W), dtype=np.int8)  # entry face code: 2 * axis + (sign > 0)
        R_e2g = rot_z(ego_yaw)
        R_g2c = (R_e2g @ cam.rot).T
        cam_g = ego_trans + R_e2g @ cam.trans
        rects = {}
        for k in range(n):
            w, l, h = boxes['wlh'][k]
            half = np.array([l / 2.0, w / 2.0, h / 2.0])
            Rc = R_g2c @ rot_z(boxes['yaw'][k])            # box local -> camera
            cc = R_g2c @ (boxes['center'][k] - cam_g)      # box centre, camera frame
            rect = _clipped_rect(cc + (_CORNER_SIGNS * half) @ Rc.T, K, W, H)
            if rect is None:
                continue
            u0, u1, v0, v1 = rect
            origin = -Rc.T @ cc                            # camera centre, box frame
            t_in, code = _ray_box_grid(origin, Rc, half, self.dx[u0:u1 + 1], self.dy[v0:v1 + 1])
            hit = t_in >= NEAR_PLANE
            footprint[k] = int(np.count_nonzero(hit))
            zsub = zbuf[v0:v1 + 1, u0:u1 + 1]
            closer = hit & (t_in < zsub)
            np.copyto(zsub, t_in, where=closer)
            np.copyto(id_map[v0:v1 + 1, u0:u1 + 1], np.int16(k), where=closer)
            np.copyto(face[v0:v1 + 1, u0:u1 + 1], code, where=closer)
            rects[k] = (rect, half, Rc, origin)
        visible = np.bincount(id_map[id_map >= 0].ravel(), minlength=n).astype(np.int64)
        for k, (rect, half, Rc, origin) in rects.items():
            if visible[k] == 0:
                continue
            u0, u1, v0, v1 = rect
            sub = id_map[v0:v1 + 1, u0:u1 + 1] == k
            rows, cols = np.nonzero(sub)
            z = zbuf[v0:v1 + 1, u0:u1 + 1][sub]
            code = face[v0:v1 + 1, u0:u1 + 1][sub]
            img[v0:v1 + 1, u0:u1 + 1][sub] = self._shade(
                self.dx[u0 + cols], self.dy[v0 + rows], z, code, int(boxes['label'][k]),
                np.asarray(boxes['gain'][k], dtype=np.float32), float(boxes['yaw'][k]), half, Rc, origin, sun)
        img += _noise(img.shape, rng, noise_std)
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8), footprint, visible, id_map

    def _shade(self, dx, dy, z, code, label, gain, yaw, half, Rc, origin, sun):
        """Colours (m, 3) float32 of m pixels of one box: camera rays (dx, dy, 1), depth z (m), entry-face code."""
        # Hit point in the box frame, normalised by the half extents: (origin + z * Rc^T d) / half.
        pn = [((origin[i] + z * (Rc[0, i] * dx + Rc[1, i] * dy + Rc[2, i])) / half[i]).astype(np.float32)
              for i in range(3)]
        axis = code // 2
        plus = code % 2 == 1
        a = np.where(axis == 0, pn[1], pn[0])
        b = np.where(axis == 2, pn[1], pn[2])
        col = np.empty((len(z), 3), dtype=np.float32)
        col[:] = _CLASS_RGB[label] * gain
        front = (axis == 0) & plus
        side = axis == 1
        col[(axis == 0) & ~plus] *= 0.45  # dark back face
        col[front & (np.abs(a) < 0.6) & (b > -0.5) & (b < 0.6)] = 245.0  # white panel on the front face
        col[(side | ((axis == 2) & plus)) & (a > 0.72)] = 245.0  # white band at the front end of sides / top
        if _VEHICLE[label]:
            col[side & (b > 0.25) & (b < 0.75) & (np.abs(a) < 0.65)] *= 0.5  # window band
        if label == _BARRIER:
            col[(axis == 0) & (np.mod((a + b) * 2.5, 1.0) < 0.45)] = 45.0  # stripes
        # Dark outline within max(3 cm, ~1.2 px) of a face edge.
        ha = np.where(axis == 0, half[1], half[0])
        hb = np.where(axis == 2, half[1], half[2])
        edge_w = np.maximum(0.03, 1.2 * z / self.cam.K[0, 0])
        col[(ha * (1 - np.abs(a)) < edge_w) | (hb * (1 - np.abs(b)) < edge_w)] *= 0.55
        # Lambertian shading with the global normal of each face (+-x, +-y, +-z of the yawed box).
        c, s = np.cos(yaw), np.sin(yaw)
        lam = np.array([c * sun[0] + s * sun[1], -s * sun[0] + c * sun[1], sun[2]], dtype=np.float32)
        lam = np.stack([-lam, lam], axis=1).ravel()  # index = code = 2 * axis + plus
        shade = 0.55 + 0.45 * np.clip(lam[code], 0.0, 1.0)
        return col * shade[:, None]


def _noise(shape, rng: np.random.Generator, std: float) -> np.ndarray:
    """Mild Gaussian pixel noise: a random crop of a fixed per-process noise bank (fast and deterministic)."""
    H, W, C = shape
    key = (H, W, C, std)
    if key not in _NOISE_BANK:
        bank_rng = np.random.default_rng(20260101)
        _NOISE_BANK[key] = (bank_rng.standard_normal((H + 64, W + 64, C), dtype=np.float32) * std)
    oy, ox = rng.integers(0, 64, size=2)
    return _NOISE_BANK[key][oy:oy + H, ox:ox + W]


def _ray_box_grid(origin, Rc, half, dx, dy):
    """Slab test of the camera rays (dx[u], dy[v], 1) against one box.

    Args: origin (3,) camera centre in the box frame; Rc (3, 3) box->camera rotation; half (3,) half extents;
    dx (w,), dy (h,) float32 ray coordinates at camera z = 1.
    Returns: t_in (h, w) float32 entry depth (camera z, m; -inf on a miss), code (h, w) int8 entry face
    (2 * axis + 1 if the face is on the + side of that axis).
    """
    t_in = None
    t_out = None
    code = None
    for i in range(3):
        di = (Rc[0, i] * dx[None, :] + Rc[1, i] * dy[:, None] + np.float32(Rc[2, i])).astype(np.float32)
        di[np.abs(di) < 1e-12] = 1e-12
        inv = 1.0 / di
        t1 = (-half[i] - origin[i]) * inv
        t2 = (half[i] - origin[i]) * inv
        tmin = np.minimum(t1, t2)
        tmax = np.maximum(t1, t2)
        ci = np.where(di > 0, 2 * i, 2 * i + 1).astype(np.int8)  # entering through the -side if d > 0
        if t_in is None:
            t_in, t_out, code = tmin, tmax, ci
        else:
            better = tmin > t_in
            t_in = np.where(better, tmin, t_in)
            code = np.where(better, ci, code)
            t_out = np.minimum(t_out, tmax)
    t_in[t_out < t_in] = -np.inf
    return t_in, code


def _clipped_rect(corners: np.ndarray, K: np.ndarray, W: int, H: int):
    """Pixel rectangle (u0, u1, v0, v1) inclusive, covering the projection of the part of the box in front of
    the near plane (camera-frame ``corners`` (8, 3)), clipped to the image; None if empty."""
    z = corners[:, 2]
    if (z < NEAR_PLANE).all():
        return None
    pts = [corners[z >= NEAR_PLANE]]
    for i, j in _EDGES:
        if (z[i] - NEAR_PLANE) * (z[j] - NEAR_PLANE) < 0:
            f = (NEAR_PLANE - z[i]) / (z[j] - z[i])
            pts.append((corners[i] + f * (corners[j] - corners[i]))[None])
    pts = np.concatenate(pts)
    uv = pts[:, :2] / pts[:, 2:3] * K[[0, 1], [0, 1]] + K[[0, 1], [2, 2]]
    u0 = max(int(np.floor(uv[:, 0].min())), 0)
    u1 = min(int(np.ceil(uv[:, 0].max())), W - 1)
    v0 = max(int(np.floor(uv[:, 1].min())), 0)
    v1 = min(int(np.ceil(uv[:, 1].max())), H - 1)
    if u0 > u1 or v0 > v1:
        return None
    return u0, u1, v0, v1
