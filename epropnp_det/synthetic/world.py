"""Scene layout of the synthetic generator: a curved road, the ego trajectory and tracked objects.

The road is a circular arc (:class:`~epropnp_det.synthetic.geometry.Road`).  Across it, parallel *strips*
(lanes, bike lanes, parking lanes, a kerb strip, sidewalk sub-lanes, construction areas) hold objects that move
with one common speed per strip along the road (so objects in a strip never collide, and strips are laterally
disjoint).  Right-hand traffic: the ego drives in the right inner lane (l = -1.75 m) towards +s.

Times ``t`` are seconds since the first keyframe of the scene.  Positions are global (x, y, z) metres on the flat
ground z = 0; a box centre sits at z = h / 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .constants import ANNOTATION_RADIUS, CLASSES, SIZE_MEAN_LHW, SIZE_STD_LHW
from .geometry import Road, wrap_angle

LANE_WIDTH = 3.5
EGO_LATERAL = -1.75
KERB_L = 11.9          # |l| of the kerb line (road surface inside)
SIDEWALK_L = (12.6, 17.6)


@dataclass
class Strip:
    """A band of the road parallel to the centreline.  ``direction`` +1 = travel towards +s."""
    name: str
    lateral: float            # centre l (m)
    width: float              # m
    direction: int
    speed: float              # m/s along the centreline (>= 0)
    pool: dict                # class -> probability
    gap: tuple                # (min, max) free space between consecutive objects (m)
    yaw_mode: str             # 'travel' | 'perp' | 'random' | 'mixed'
    kind: str                 # 'lane' | 'bike' | 'parking' | 'kerb' | 'sidewalk' | 'construction'
    ego_lane: bool = False
    active: tuple = (-np.inf, np.inf)  # s interval that the random fill may use


@dataclass
class SceneObject:
    """One tracked object.  ``wlh`` metres; ``yaw_rel`` rad relative to the road heading at the object."""
    obj_id: int
    cls: str
    wlh: np.ndarray
    lateral: float
    s0: float                 # arc length at t = 0
    ds_dt: float              # signed m/s along the centreline
    yaw_rel: float
    attribute: str | None
    color_gain: np.ndarray = field(default_factory=lambda: np.ones(3))
    strip: str = ''
    ext_long: float = 0.0     # footprint extent along the road (m), for spacing


def _attribute(cls: str, kind: str, moving: bool):
    if cls in ('car', 'truck', 'trailer', 'bus', 'construction_vehicle'):
        if moving:
            return 'vehicle.moving'
        return 'vehicle.stopped' if kind == 'lane' else 'vehicle.parked'
    if cls in ('bicycle', 'motorcycle'):
        return 'cycle.with_rider' if moving or kind in ('lane', 'bike') else 'cycle.without_rider'
    if cls == 'pedestrian':
        return 'pedestrian.moving' if moving else 'pedestrian.standing'
    return None


def _sample_lhw(rng: np.random.Generator, cls: str) -> np.ndarray:
    mean = np.asarray(SIZE_MEAN_LHW[cls])
    std = np.asarray(SIZE_STD_LHW[cls])
    lhw = mean + std * np.clip(rng.standard_normal(3), -1.5, 1.5)
    return np.maximum(lhw, 0.3 * mean)


class SceneWorld:
    """Everything that happens in one scene, as analytic functions of time.

    Attributes: ``road``, ``ego_speed`` (m/s), ``objects`` (list of :class:`SceneObject`), ``sun`` (3,) unit vector
    towards the sun (global), ``num_samples``.
    """

    def __init__(self, rng: np.random.Generator, num_samples: int, interval_s: float = 0.5):
        self.num_samples = num_samples
        self.interval_s = interval_s
        duration = interval_s * (num_samples - 1)
        origin = rng.uniform(300.0, 1800.0, size=2)
        curvature = rng.choice([-1.0, 1.0]) * rng.uniform(1.0 / 700.0, 1.0 / 180.0)
        self.road = Road(origin, rng.uniform(-np.pi, np.pi), curvature)
        self.ego_speed = float(rng.uniform(3.0, 9.0))
        self.ego_s0 = 0.0
        elev = np.deg2rad(rng.uniform(35.0, 60.0))
        azim = rng.uniform(-np.pi, np.pi)
        self.sun = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
        s_end = self.ego_s0 + self.ego_speed * duration
        margin = ANNOTATION_RADIUS + 15.0 * duration + 10.0
        self.s_range = (self.ego_s0 - margin, s_end + margin)
        self.strips = self._make_strips(rng)
        self.strip_by_name = {st.name: st for st in self.strips}
        self.objects: list[SceneObject] = []
        for strip in self.strips:
            self._fill_strip(rng, strip)
        self._ensure_all_classes(rng, duration)
        for i, obj in enumerate(self.objects):
            obj.obj_id = i

    # ------------------------------------------------------------------ layout
    def _make_strips(self, rng: np.random.Generator) -> list:
        strips = []
        lane_pool = {'car': 0.62, 'truck': 0.15, 'bus': 0.12, 'trailer': 0.04, 'motorcycle': 0.07}
        for side in (-1, 1):  # -1: right side (ego direction, +s); +1: left side (oncoming, -s)
            direction = -side
            tag = 'R' if side < 0 else 'L'
            for k, lat in enumerate((1.75, 5.25)):
                ego_lane = side < 0 and k == 0
                if ego_lane:
                    speed = self.ego_speed
                else:
                    speed = float(rng.uniform(4.0, 12.0)) if rng.random() < 0.75 else 0.0
                strips.append(Strip(f'lane{tag}{k}', side * lat, LANE_WIDTH, direction, speed, lane_pool,
                                    (30.0, 110.0), 'travel', 'lane', ego_lane=ego_lane))
            strips.append(Strip(f'bike{tag}', side * 7.75, 1.5, direction, float(rng.uniform(3.0, 6.0)),
                                {'bicycle': 0.6, 'motorcycle': 0.4}, (60.0, 200.0), 'travel', 'bike'))
            strips.append(Strip(f'parking{tag}', side * 10.2, 3.4, direction, 0.0,
                                {'car': 0.6, 'truck': 0.13, 'trailer': 0.07, 'motorcycle': 0.1, 'bus': 0.04,
                                 'construction_vehicle': 0.03, 'bicycle': 0.03},
                                (8.0, 60.0), 'travel', 'parking'))
            strips.append(Strip(f'kerb{tag}', side * 12.25, 0.7, direction, 0.0,
                                {'traffic_cone': 0.45, 'barrier': 0.35, 'bicycle': 0.2}, (35.0, 110.0), 'mixed',
                                'kerb'))
            for k, lat in enumerate((13.3, 14.7, 16.1)):
                walking = rng.random() < 0.6
                strips.append(Strip(f'walk{tag}{k}', side * lat, 1.3, int(rng.choice([-1, 1])),
                                    float(rng.uniform(0.8, 1.6)) if walking else 0.0, {'pedestrian': 1.0},
                                    (40.0, 140.0), 'travel' if walking else 'perp', 'sidewalk'))
            s_site = rng.uniform(*self.s_range)
            active = (s_site - 20.0, s_site + 20.0) if rng.random() < 0.6 else (0.0, -1.0)
            strips.append(Strip(f'site{tag}', side * 21.5, 4.0, direction, 0.0,
                                {'construction_vehicle': 0.45, 'trailer': 0.2, 'truck': 0.15, 'barrier': 0.1,
                                 'traffic_cone': 0.1}, (2.0, 10.0), 'mixed', 'construction', active=active))
        return strips

    def _new_object(self, rng: np.random.Generator, strip: Strip, cls: str, s_center: float):
        if strip.yaw_mode == 'travel':
            yaw_rel = 0.0 if strip.direction > 0 else np.pi
            if strip.kind == 'parking':
                yaw_rel += rng.uniform(-0.05, 0.05)
        elif strip.yaw_mode == 'perp':
            yaw_rel = rng.choice([-0.5, 0.5]) * np.pi + rng.uniform(-0.3, 0.3)
        elif cls == 'barrier':  # long side (w) along the road
            yaw_rel = rng.choice([-0.5, 0.5]) * np.pi + rng.uniform(-0.05, 0.05)
        elif cls in ('traffic_cone',):
            yaw_rel = rng.uniform(-np.pi, np.pi)
        else:
            yaw_rel = rng.choice([0.0, np.pi]) + rng.uniform(-0.1, 0.1)
        lhw = _sample_lhw(rng, cls)
        c, s = abs(np.cos(yaw_rel)), abs(np.sin(yaw_rel))
        ext_lat = lhw[0] * s + lhw[2] * c
        limit = 0.92 * strip.width
        if ext_lat > limit:  # too wide for the strip: shrink the footprint, keep the height
            lhw[[0, 2]] *= limit / ext_lat
            ext_lat = limit
        ext_long = lhw[0] * c + lhw[2] * s
        slack = 0.4 * (strip.width - ext_lat)  # lateral jitter that keeps the footprint inside the strip
        moving = strip.speed > 0
        return SceneObject(
            obj_id=-1, cls=cls, wlh=np.array([lhw[2], lhw[0], lhw[1]]),
            lateral=strip.lateral + (rng.uniform(-slack, slack) if strip.kind != 'lane' else 0.0),
            s0=float(s_center), ds_dt=float(strip.direction * strip.speed), yaw_rel=float(yaw_rel),
            attribute=_attribute(cls, strip.kind, moving),
            # Mostly a brightness change: the hue must stay close to the class colour (learnable class).
            color_gain=rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, size=3),
            strip=strip.name, ext_long=float(ext_long))

    def _fill_strip(self, rng: np.random.Generator, strip: Strip):
        lo = max(self.s_range[0], strip.active[0])
        hi = min(self.s_range[1], strip.active[1])
        classes = list(strip.pool)
        probs = np.array([strip.pool[c] for c in classes])
        probs = probs / probs.sum()
        cursor = lo + rng.uniform(0.0, strip.gap[1])
        while cursor < hi:
            cls = classes[rng.choice(len(classes), p=probs)]
            obj = self._new_object(rng, strip, cls, 0.0)
            ext = obj.ext_long
            obj.s0 = cursor + ext / 2.0
            gap = rng.uniform(*strip.gap)
            # Cones and barriers come in rows: a cluster of 1-6 equal-class objects with small spacing.
            n_cluster = int(rng.integers(2, 7)) if cls == 'traffic_cone' else (
                int(rng.integers(1, 5)) if cls == 'barrier' else 1)
            for j in range(n_cluster):
                if j > 0:
                    obj = self._new_object(rng, strip, cls, 0.0)
                    obj.s0 = cursor + obj.ext_long / 2.0
                ext = obj.ext_long
                ok = obj.s0 + ext / 2.0 < hi
                if strip.ego_lane and abs(obj.s0 - self.ego_s0) < ext / 2.0 + 8.0:
                    ok = False  # keep the ego's own slot free (same speed as the ego, so it stays free)
                if ok:
                    self.objects.append(obj)
                cursor += ext + (rng.uniform(1.0, 3.0) if cls == 'traffic_cone' else rng.uniform(0.1, 0.4))
            cursor += gap

    def _ensure_all_classes(self, rng: np.random.Generator, duration: float):
        """Place one object of every class close to the ego at mid-sequence, with a clear line of sight
        (static objects between it and the road are removed), so each scene shows all 10 classes.

        The 10 objects are laid out along the road on both sides, small classes nearest to the ego (their
        evaluation range is shorter), each in its own s slot, so they never block one another."""
        homes = {'car': ['parking'], 'truck': ['parking'], 'trailer': ['parking', 'construction'],
                 'bus': ['parking'], 'construction_vehicle': ['construction'], 'bicycle': ['kerb'],
                 'motorcycle': ['parking'], 'pedestrian': ['sidewalk'], 'traffic_cone': ['kerb'],
                 'barrier': ['kerb']}
        t_mid = duration / 2.0
        s_mid = self.ego_s0 + self.ego_speed * t_mid
        small = ['pedestrian', 'traffic_cone', 'barrier', 'bicycle', 'motorcycle']
        large = ['car', 'truck', 'bus', 'construction_vehicle', 'trailer']
        assert sorted(small + large) == sorted(CLASSES)
        order = list(rng.permutation(small)) + list(rng.permutation(large))
        first_side = rng.choice([-1.0, 1.0])
        cursor = {-1.0: s_mid - 12.0, 1.0: s_mid - 12.0}
        guaranteed = []
        for i, cls in enumerate(order):
            side = first_side if i % 2 == 0 else -first_side
            cands = [st for st in self.strips if st.kind in homes[cls] and np.sign(st.lateral) == side]
            static = [st for st in cands if st.speed == 0.0]
            cands = static or cands  # e.g. all sidewalk sub-lanes of that side may be walking
            strip = cands[rng.integers(len(cands))]
            obj = self._new_object(rng, strip, cls, 0.0)
            s_target = cursor[side] + obj.ext_long / 2.0
            cursor[side] += obj.ext_long + 3.0
            obj.s0 = float(s_target - obj.ds_dt * t_mid)

            def blocks(o, strip=strip, obj=obj, s_target=s_target):
                st = self.strip_by_name[o.strip]
                same = o.strip == strip.name
                between = (st.speed == 0.0 and np.sign(st.lateral) == np.sign(strip.lateral)
                           and abs(st.lateral) < abs(strip.lateral))
                if same:
                    s_ref, margin = s_target, 0.5
                else:  # where the ego->object line of sight (at t_mid) crosses that strip
                    frac = (st.lateral - EGO_LATERAL) / (obj.lateral - EGO_LATERAL)
                    s_ref, margin = s_mid + frac * (s_target - s_mid), 3.0
                ds = o.s0 + o.ds_dt * t_mid - s_ref
                return (same or between) and abs(ds) < (o.ext_long + obj.ext_long) / 2.0 + margin

            self.objects = [o for o in self.objects if any(o is g for g in guaranteed) or not blocks(o)]
            self.objects.append(obj)
            guaranteed.append(obj)

    # ------------------------------------------------------------------ queries
    def ego_pose(self, t: float):
        """Ego pose at time t -> (translation (3,) global m, yaw rad)."""
        s = self.ego_s0 + self.ego_speed * t
        xy = self.road.point(s, EGO_LATERAL)
        return np.array([xy[0], xy[1], 0.0]), float(self.road.heading(s))

    def object_states(self, t: float) -> dict:
        """All objects at time t: dict of arrays ``center`` (N, 3) global m, ``yaw`` (N,) rad (global, about z),
        ``wlh`` (N, 3) m, ``velocity`` (N, 2) global m/s, ``cls`` list of str."""
        lat = np.array([o.lateral for o in self.objects])
        s = np.array([o.s0 + o.ds_dt * t for o in self.objects])
        ds = np.array([o.ds_dt for o in self.objects])
        xy = self.road.point(s, lat)
        wlh = np.stack([o.wlh for o in self.objects])
        center = np.concatenate([xy, wlh[:, 2:3] / 2.0], axis=1)
        yaw = wrap_angle(self.road.heading(s) + np.array([o.yaw_rel for o in self.objects]))
        vel = self.road.velocity(s, lat, ds)
        return dict(center=center, yaw=yaw, wlh=wlh, velocity=vel, cls=[o.cls for o in self.objects])

    def visible_ids(self, t: float, states: dict | None = None) -> np.ndarray:
        """Indices of objects within ANNOTATION_RADIUS (xy, of the ego origin) at time t: these are annotated,
        rendered and hit by the LiDAR; the others do not exist in that frame."""
        states = self.object_states(t) if states is None else states
        ego_t, _ = self.ego_pose(t)
        d = np.linalg.norm(states['center'][:, :2] - ego_t[:2], axis=1)
        return np.nonzero(d < ANNOTATION_RADIUS)[0]
