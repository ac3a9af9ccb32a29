"""Write a synthetic dataset in the nuScenes v1.0 format (``DIR/v1.0-mini/*.json``, ``DIR/samples/...``).

The unchanged nuscenes-devkit loads the result as ``NuScenes('v1.0-mini', DIR)``; scene names are those of the
devkit's mini split, so ``create_splits_scenes()`` and ``DetectionEval(eval_set='mini_val')`` work unchanged.

Determinism: every random draw comes from ``np.random.default_rng([seed, scene, stream, ...])``; tokens are
MD5 hashes of (seed, kind, key); the same seed gives byte-identical tables and images, for any worker count.

Layout written::

    DIR/v1.0-mini/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,scene,sample,
                   sample_data,sample_annotation,map}.json
    DIR/samples/CAM_*/<log>__CAM_*__<timestamp>.jpg          (RGB JPEG, quality 90, 4:4:4)
    DIR/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin   (float32 x 5: x, y, z, intensity, ring)
    DIR/sweeps/{CAM_*,LIDAR_TOP}/                               (empty: keyframes only)
    DIR/maps/<token>.png                                        (small placeholder semantic prior)
    DIR/synthetic_gt.json                                       (the generator's own ground truth)

Modelling choices (documented because consumers rely on them):

* By default all sensors of a sample share the keyframe timestamp (each has its own ``sample_data`` and
  ``ego_pose`` record, with identical values), so image content and annotations are exactly synchronous.
  ``GeneratorConfig.camera_time_offsets_us`` gives each camera its own capture time instead, as on the real
  vehicle (cameras fire as the LiDAR sweeps past them): camera ``c`` is captured at the keyframe (LiDAR, sample,
  annotation) time plus ``offset[c]``; its ``sample_data`` / ``ego_pose`` records carry that timestamp and the ego
  pose at that time, and its image shows the ego and every object at that time (objects keep moving, so a moving
  object's pixels are displaced by velocity x offset from its annotation, as in nuScenes). Which objects exist is
  still decided at the keyframe time. The default stays synchronous: existing datasets, tests and recorded results
  assume it, and exact image/label agreement is what the synthetic data is for.
* Only objects within ``ANNOTATION_RADIUS`` (55 m, ego xy) and with at least ``min_lidar_pts`` (default 1) LiDAR
  returns exist in a frame: they are annotated, rendered and hit by the LiDAR; the others are none of these (no
  unlabelled objects in the images, and every annotation survives the devkit's zero-point filter).  An instance
  can therefore skip a keyframe (e.g. fully occluded); its prev/next links then span the gap.
* ``num_radar_pts`` is 0 (no radar is simulated); ``num_lidar_pts`` counts the stored LiDAR points in the box.
* Visibility = visible pixels / unoccluded in-image pixels, summed over the 6 cameras (0 if in no image),
  binned into the nuScenes tokens '1'..'4'.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import os.path as osp
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np

from .constants import (
    ATTRIBUTES,
    CAMERA_RIG,
    CAMERAS,
    CATEGORIES,
    CLASS_TO_CATEGORY,
    CLASSES,
    KEYFRAME_INTERVAL_US,
    LIDAR,
    LIDAR_TRANSLATION,
    LIDAR_YAW_DEG,
    LOCATIONS,
    MINI_TRAIN_SCENES,
    MINI_VAL_SCENES,
    RIG_IMAGE_SIZE,
    VISIBILITIES,
    visibility_token,
)
from .geometry import camera_rotation, matrix_to_quaternion, rot_z, yaw_to_quaternion
from .lidar import count_points_in_boxes, lidar_sweep
from .render import Camera, CameraRenderer
from .world import SceneWorld

VERSION = 'v1.0-mini'
# Scene order: alternate train / val first so that a small --scenes count still has both mini splits.
SCENE_ORDER = ('scene-0061', 'scene-0103', 'scene-0553', 'scene-0916', 'scene-0655', 'scene-0757', 'scene-0796',
               'scene-1077', 'scene-1094', 'scene-1100')
assert sorted(SCENE_ORDER) == sorted(MINI_TRAIN_SCENES + MINI_VAL_SCENES)
TIMESTAMP0_US = 1_700_000_000_000_000


@dataclass
class GeneratorConfig:
    """Options of :func:`generate_dataset`.  ``image_size`` is (W, H) px; ``num_scenes`` in 1..10."""
    out_dir: str
    samples_per_scene: int = 10
    seed: int = 0
    image_size: tuple = (1600, 900)
    num_scenes: int = 10
    workers: int = 2
    jpeg_quality: int = 90
    min_lidar_pts: int = 1
    overwrite: bool = False
    #: per-camera capture time minus the keyframe time, microseconds, in ``CAMERAS`` order (6 values); empty or
    #: all zero = synchronous sensors (the default)
    camera_time_offsets_us: tuple = ()

    def validate(self):
        if not 1 <= self.num_scenes <= len(SCENE_ORDER):
            raise ValueError(f'num_scenes must be in 1..{len(SCENE_ORDER)}, got {self.num_scenes}')
        if self.samples_per_scene < 1:
            raise ValueError(f'samples_per_scene must be >= 1, got {self.samples_per_scene}')
        w, h = self.image_size
        if int(w) < 16 or int(h) < 16:
            raise ValueError(f'image_size must be at least 16x16 px, got {self.image_size}')
        if self.min_lidar_pts < 0:
            raise ValueError(f'min_lidar_pts must be >= 0, got {self.min_lidar_pts}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        offs = tuple(self.camera_time_offsets_us)
        if offs and (len(offs) != len(CAMERAS) or any(int(o) != o for o in offs)):
            raise ValueError(f'camera_time_offsets_us must be {len(CAMERAS)} integers (microseconds, in the order '
                             f'{CAMERAS}) or empty, got {self.camera_time_offsets_us}')
        if any(abs(o) >= KEYFRAME_INTERVAL_US // 2 for o in offs):
            raise ValueError(f'camera_time_offsets_us must stay within +-{KEYFRAME_INTERVAL_US // 2} us of the '
                             f'keyframe, got {self.camera_time_offsets_us}')

    def camera_offsets_us(self) -> dict:
        """Channel -> capture-time offset (int microseconds) for every sensor (LiDAR: 0)."""
        offs = tuple(int(o) for o in self.camera_time_offsets_us) or (0,) * len(CAMERAS)
        return dict(zip(CAMERAS, offs), **{LIDAR: 0})


def token(seed: int, *parts) -> str:
    """Deterministic 32-hex nuScenes-style token of (seed, parts)."""
    return hashlib.md5('|'.join(str(p) for p in (seed,) + parts).encode()).hexdigest()


def scene_rng(seed: int, scene_idx: int, stream: int, *more) -> np.random.Generator:
    return np.random.default_rng([seed, scene_idx, stream, *more])


# ---------------------------------------------------------------------------------------------------- scene setup
class SceneSetup:
    """World, sensor rig and renderers of one scene (reconstructed deterministically in every worker)."""

    def __init__(self, cfg: GeneratorConfig, scene_idx: int):
        self.scene_idx = scene_idx
        self.name = SCENE_ORDER[scene_idx]
        self.world = SceneWorld(scene_rng(cfg.seed, scene_idx, 0), cfg.samples_per_scene)
        rig_rng = scene_rng(cfg.seed, scene_idx, 1)
        W, H = (int(v) for v in cfg.image_size)
        sx, sy = W / RIG_IMAGE_SIZE[0], H / RIG_IMAGE_SIZE[1]
        self.cameras = []
        for name in CAMERAS:
            trans, yaw_deg, fx, fy, cx, cy = CAMERA_RIG[name]
            # Small per-vehicle calibration differences (+-2 cm, +-0.5 deg yaw); axes stay horizontal.
            t = np.asarray(trans) + rig_rng.uniform(-0.02, 0.02, size=3)
            yaw = np.deg2rad(yaw_deg + rig_rng.uniform(-0.5, 0.5))
            K = np.array([[fx * sx, 0.0, cx * sx], [0.0, fy * sy, cy * sy], [0.0, 0.0, 1.0]])
            self.cameras.append(Camera(name, K, W, H, camera_rotation(yaw), t))
        self.lidar_rot = rot_z(np.deg2rad(LIDAR_YAW_DEG))
        self.lidar_trans = np.asarray(LIDAR_TRANSLATION, dtype=np.float64)
        self.offsets_us = cfg.camera_offsets_us()
        self.location = LOCATIONS[scene_idx % len(LOCATIONS)]
        self.t0_us = TIMESTAMP0_US + scene_idx * 3_600_000_000
        start = datetime.datetime.fromtimestamp(self.t0_us // 1_000_000, tz=datetime.timezone.utc)
        self.date = start.strftime('%Y-%m-%d')
        self.logfile = f"n900-{start.strftime('%Y-%m-%d-%H-%M-%S')}+0000-s{cfg.seed}"
        self._renderers = None

    def timestamp(self, k: int, channel: str = LIDAR) -> int:
        """Capture time (us) of ``channel`` in keyframe k; the LiDAR's is the keyframe (sample) time."""
        return self.t0_us + k * KEYFRAME_INTERVAL_US + self.offsets_us[channel]

    def time_s(self, k: int, channel: str = LIDAR) -> float:
        """Scene time (s) of ``channel``'s capture in keyframe k (the argument of the world's queries)."""
        return k * self.world.interval_s + self.offsets_us[channel] * 1e-6

    def renderers(self):
        if self._renderers is None:
            self._renderers = [CameraRenderer(c) for c in self.cameras]
        return self._renderers

    def frame(self, k: int) -> dict:
        """Objects existing in keyframe k: ``ids`` (M,) object indices and their boxes (global)."""
        t = k * self.world.interval_s
        st = self.world.object_states(t)
        ids = self.world.visible_ids(t, st)
        ego_t, ego_yaw = self.world.ego_pose(t)
        objs = self.world.objects
        boxes = dict(center=st['center'][ids], yaw=st['yaw'][ids], wlh=st['wlh'][ids],
                     velocity=st['velocity'][ids], label=np.array([CLASSES.index(objs[i].cls) for i in ids],
                                                                  dtype=np.int64),
                     gain=np.stack([objs[i].color_gain for i in ids]) if len(ids) else np.zeros((0, 3)))
        return dict(ids=ids, boxes=boxes, ego_trans=ego_t, ego_yaw=ego_yaw)

    def boxes_at(self, boxes: dict, ids: np.ndarray, t: float) -> dict:
        """``boxes`` (of objects ``ids``) moved to scene time ``t``: centre, yaw and velocity at t."""
        st = self.world.object_states(t)
        return dict(boxes, center=st['center'][ids], yaw=st['yaw'][ids], velocity=st['velocity'][ids])


_SETUP_CACHE: dict = {}


def _get_setup(cfg: GeneratorConfig, scene_idx: int) -> SceneSetup:
    key = (cfg.seed, cfg.samples_per_scene, tuple(cfg.image_size), scene_idx)
    if key not in _SETUP_CACHE:
        if len(_SETUP_CACHE) >= 2:
            _SETUP_CACHE.clear()
        _SETUP_CACHE[key] = SceneSetup(cfg, scene_idx)
    return _SETUP_CACHE[key]


def sensor_filename(setup: SceneSetup, channel: str, k: int) -> str:
    ext = 'pcd.bin' if channel == LIDAR else 'jpg'
    return f'samples/{channel}/{setup.logfile}__{channel}__{setup.timestamp(k, channel)}.{ext}'


def _render_sample(args) -> dict:
    """Worker: render the 6 images and the LiDAR sweep of keyframe k of a scene, write them, return stats."""
    from PIL import Image

    cfg, scene_idx, k = args
    setup = _get_setup(cfg, scene_idx)
    fr = setup.frame(k)
    rng = scene_rng(cfg.seed, scene_idx, 2, k)
    ids, boxes = fr['ids'], fr['boxes']
    lidar_args = (fr['ego_trans'], fr['ego_yaw'], setup.lidar_rot, setup.lidar_trans)
    points = lidar_sweep(boxes, *lidar_args, setup.world.road, rng)
    num_pts = count_points_in_boxes(points, boxes, *lidar_args)
    keep = num_pts >= cfg.min_lidar_pts
    if not keep.all():
        # Objects without LiDAR evidence do not exist in this frame (not annotated, not rendered).  They had no
        # returns, so removing them leaves the other objects' returns unchanged; re-cast for exactness anyway.
        ids = ids[keep]
        boxes = {key: val[keep] for key, val in boxes.items()}
        rng = scene_rng(cfg.seed, scene_idx, 2, k)
        points = lidar_sweep(boxes, *lidar_args, setup.world.road, rng)
    path = osp.join(cfg.out_dir, sensor_filename(setup, LIDAR, k))
    points.tofile(path)
    nbytes = osp.getsize(path)
    # Count on the stored float32 points (what the devkit's points_in_box sees).
    num_pts = count_points_in_boxes(np.fromfile(path, dtype=np.float32).reshape(-1, 5), boxes, *lidar_args)
    n = len(ids)
    footprint = np.zeros(n, dtype=np.int64)
    visible = np.zeros(n, dtype=np.int64)
    per_cam_visible = {}
    for cam, renderer in zip(setup.cameras, setup.renderers()):
        ego_trans, ego_yaw, cam_boxes = fr['ego_trans'], fr['ego_yaw'], boxes
        if setup.offsets_us[cam.name]:  # captured off the keyframe: the ego and the objects at that time
            t_cam = setup.time_s(k, cam.name)
            ego_trans, ego_yaw = setup.world.ego_pose(t_cam)
            cam_boxes = setup.boxes_at(boxes, ids, t_cam)
        img, fp, vis, _ = renderer.render(setup.world.road, ego_trans, ego_yaw, cam_boxes, setup.world.sun, rng)
        footprint += fp
        visible += vis
        per_cam_visible[cam.name] = vis.tolist()
        path = osp.join(cfg.out_dir, sensor_filename(setup, cam.name, k))
        # 4:4:4 chroma: small objects keep their class hue.
        Image.fromarray(img).save(path, quality=cfg.jpeg_quality, subsampling=0)
        nbytes += osp.getsize(path)
    frac = np.where(footprint > 0, visible / np.maximum(footprint, 1), 0.0)
    return dict(scene_idx=scene_idx, k=k, ids=ids.tolist(), visibility=frac.tolist(),
                num_lidar_pts=num_pts.tolist(), cam_visible_px=per_cam_visible, nbytes=nbytes,
                num_points=len(points), num_dropped=int((~keep).sum()))


# ---------------------------------------------------------------------------------------------------- tables
def _static_tables(seed: int) -> dict:
    category = [dict(token=token(seed, 'category', name), name=name, description=desc)
                for name, desc in CATEGORIES]
    attribute = [dict(token=token(seed, 'attribute', name), name=name, description=desc)
                 for name, desc in ATTRIBUTES]
    visibility = [dict(token=tok, level=level, description=desc) for tok, level, desc in VISIBILITIES]
    sensor = [dict(token=token(seed, 'sensor', ch), channel=ch, modality='camera') for ch in CAMERAS]
    sensor.append(dict(token=token(seed, 'sensor', LIDAR), channel=LIDAR, modality='lidar'))
    return dict(category=category, attribute=attribute, visibility=visibility, sensor=sensor)


def _build_tables(cfg: GeneratorConfig, setups: list, results: dict) -> tuple:
    """All 13 tables plus the ground-truth side file content, from the scene setups and worker results."""
    seed = cfg.seed
    tables = _static_tables(seed)
    for name in ('instance', 'calibrated_sensor', 'ego_pose', 'log', 'scene', 'sample', 'sample_data',
                 'sample_annotation', 'map'):
        tables[name] = []
    attr_tok = {name: token(seed, 'attribute', name) for name, _ in ATTRIBUTES}
    cat_tok = {name: token(seed, 'category', name) for name, _ in CATEGORIES}
    gt_anns = []
    logs_by_location: dict = {}
    for setup in setups:
        si, nm = setup.scene_idx, setup.name
        n_samples = cfg.samples_per_scene
        log_token = token(seed, 'log', nm)
        logs_by_location.setdefault(setup.location, []).append(log_token)
        tables['log'].append(dict(token=log_token, logfile=setup.logfile, vehicle='n900',
                                  date_captured=setup.date, location=setup.location))
        sample_tokens = [token(seed, 'sample', nm, k) for k in range(n_samples)]
        tables['scene'].append(dict(
            token=token(seed, 'scene', nm), log_token=log_token, nbr_samples=n_samples,
            first_sample_token=sample_tokens[0], last_sample_token=sample_tokens[-1], name=nm,
            description=f'Synthetic curved road, ego speed {setup.world.ego_speed:.1f} m/s, '
                        f'{len(setup.world.objects)} objects'))
        # Calibrated sensors (one per sensor per scene).
        cs_tok = {}
        for cam in setup.cameras:
            cs_tok[cam.name] = token(seed, 'calibrated_sensor', nm, cam.name)
            tables['calibrated_sensor'].append(dict(
                token=cs_tok[cam.name], sensor_token=token(seed, 'sensor', cam.name),
                translation=[float(v) for v in cam.trans], rotation=matrix_to_quaternion(cam.rot),
                camera_intrinsic=[[float(v) for v in row] for row in cam.K]))
        cs_tok[LIDAR] = token(seed, 'calibrated_sensor', nm, LIDAR)
        tables['calibrated_sensor'].append(dict(
            token=cs_tok[LIDAR], sensor_token=token(seed, 'sensor', LIDAR),
            translation=[float(v) for v in setup.lidar_trans], rotation=matrix_to_quaternion(setup.lidar_rot),
            camera_intrinsic=[]))
        # Samples, sample_data, ego poses.
        channels = list(CAMERAS) + [LIDAR]
        for k in range(n_samples):
            ts = setup.timestamp(k)
            tables['sample'].append(dict(token=sample_tokens[k], timestamp=ts, prev=sample_tokens[k - 1] if k else '',
                                         next=sample_tokens[k + 1] if k + 1 < n_samples else '',
                                         scene_token=token(seed, 'scene', nm)))
            for ch in channels:
                ego_t, ego_yaw = setup.world.ego_pose(setup.time_s(k, ch))  # at the sensor's capture time
                ts_ch = setup.timestamp(k, ch)
                ep_tok = token(seed, 'ego_pose', nm, ch, k)
                tables['ego_pose'].append(dict(token=ep_tok, timestamp=ts_ch, rotation=yaw_to_quaternion(ego_yaw),
                                               translation=[float(v) for v in ego_t]))
                is_cam = ch != LIDAR
                tables['sample_data'].append(dict(
                    token=token(seed, 'sample_data', nm, ch, k), sample_token=sample_tokens[k],
                    ego_pose_token=ep_tok, calibrated_sensor_token=cs_tok[ch], timestamp=ts_ch,
                    fileformat='jpg' if is_cam else 'pcd', is_key_frame=True,
                    height=int(cfg.image_size[1]) if is_cam else 0, width=int(cfg.image_size[0]) if is_cam else 0,
                    filename=sensor_filename(setup, ch, k),
                    prev=token(seed, 'sample_data', nm, ch, k - 1) if k else '',
                    next=token(seed, 'sample_data', nm, ch, k + 1) if k + 1 < n_samples else ''))
        # Annotations and instances.
        per_obj: dict = {}
        for k in range(n_samples):
            res = results[(si, k)]
            fr = setup.frame(k)
            full_index = {int(oid): idx for idx, oid in enumerate(fr['ids'])}
            for j, oid in enumerate(res['ids']):
                per_obj.setdefault(oid, []).append((k, j, full_index[oid], fr, res))
        for oid in sorted(per_obj):
            obj = setup.world.objects[oid]
            inst_tok = token(seed, 'instance', nm, oid)
            ann_toks = [token(seed, 'sample_annotation', nm, oid, k) for k, *_ in per_obj[oid]]
            tables['instance'].append(dict(token=inst_tok, category_token=cat_tok[CLASS_TO_CATEGORY[obj.cls]],
                                           nbr_annotations=len(ann_toks), first_annotation_token=ann_toks[0],
                                           last_annotation_token=ann_toks[-1]))
            for a, (k, j, jf, fr, res) in enumerate(per_obj[oid]):
                b = {key: val[jf] for key, val in fr['boxes'].items()}
                vis_frac = res['visibility'][j]
                rec = dict(token=ann_toks[a], sample_token=sample_tokens[k], instance_token=inst_tok,
                           visibility_token=visibility_token(vis_frac),
                           attribute_tokens=[attr_tok[obj.attribute]] if obj.attribute else [],
                           translation=[float(v) for v in b['center']], size=[float(v) for v in b['wlh']],
                           rotation=yaw_to_quaternion(float(b['yaw'])), prev=ann_toks[a - 1] if a else '',
                           next=ann_toks[a + 1] if a + 1 < len(ann_toks) else '',
                           num_lidar_pts=int(res['num_lidar_pts'][j]), num_radar_pts=0)
                tables['sample_annotation'].append(rec)
                gt_anns.append(dict(
                    token=rec['token'], sample_token=rec['sample_token'], instance_token=inst_tok,
                    scene=nm, sample_index=k, object_id=int(oid), detection_name=obj.cls,
                    category_name=CLASS_TO_CATEGORY[obj.cls], attribute_name=obj.attribute or '',
                    translation=rec['translation'], size=rec['size'], yaw=float(b['yaw']),
                    velocity=[float(v) for v in b['velocity']], num_lidar_pts=rec['num_lidar_pts'],
                    visibility=float(vis_frac), visibility_token=rec['visibility_token'],
                    cam_visible_px={c: int(res['cam_visible_px'][c][j]) for c in CAMERAS}))
    for loc, log_tokens in logs_by_location.items():
        map_tok = token(seed, 'map', loc)
        tables['map'].append(dict(token=map_tok, log_tokens=log_tokens, category='semantic_prior',
                                  filename=f'maps/{map_tok}.png'))
    return tables, gt_anns


# ---------------------------------------------------------------------------------------------------- driver
def _prepare_out_dir(cfg: GeneratorConfig):
    root = cfg.out_dir
    owned = [osp.join(root, p) for p in (VERSION, 'samples', 'sweeps', 'maps', 'synthetic_gt.json')]
    existing = [p for p in owned if osp.exists(p)]
    if existing and not cfg.overwrite:
        raise FileExistsError(f'{root} already holds a dataset ({existing[0]}); pass overwrite=True / --overwrite')
    for p in existing:
        shutil.rmtree(p) if osp.isdir(p) else os.remove(p)
    for ch in list(CAMERAS) + [LIDAR]:
        os.makedirs(osp.join(root, 'samples', ch), exist_ok=True)
        os.makedirs(osp.join(root, 'sweeps', ch), exist_ok=True)
    os.makedirs(osp.join(root, VERSION), exist_ok=True)
    os.makedirs(osp.join(root, 'maps'), exist_ok=True)


def _dir_size(root: str) -> int:
    total = 0
    for d, _, files in os.walk(root):
        total += sum(osp.getsize(osp.join(d, f)) for f in files)
    return total


def generate_dataset(cfg: GeneratorConfig, progress: bool = True) -> dict:
    """Generate the dataset described by ``cfg``.  Returns a summary dict (time_s, size_bytes, counts)."""
    from PIL import Image
    from tqdm import tqdm

    cfg.validate()
    t_start = time.time()
    _prepare_out_dir(cfg)
    setups = [SceneSetup(cfg, i) for i in range(cfg.num_scenes)]
    tasks = [(cfg, i, k) for i in range(cfg.num_scenes) for k in range(cfg.samples_per_scene)]
    results = {}
    bar = tqdm(total=len(tasks), desc='synthetic nuScenes samples', unit='sample', disable=not progress)
    if cfg.workers > 1:
        import multiprocessing as mp
        ctx = mp.get_context('fork') if 'fork' in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(cfg.workers) as pool:
            for res in pool.imap_unordered(_render_sample, tasks, chunksize=1):
                results[(res['scene_idx'], res['k'])] = res
                bar.update(1)
    else:
        for task in tasks:
            res = _render_sample(task)
            results[(res['scene_idx'], res['k'])] = res
            bar.update(1)
    bar.close()
    tables, gt_anns = _build_tables(cfg, setups, results)
    table_dir = osp.join(cfg.out_dir, VERSION)
    for name, rows in tables.items():
        with open(osp.join(table_dir, f'{name}.json'), 'w') as f:
            json.dump(rows, f, indent=0)
    for rec in tables['map']:
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(osp.join(cfg.out_dir, rec['filename']))
    meta = dict(asdict(cfg), version=VERSION, generator='epropnp_det.synthetic', classes=list(CLASSES),
                scenes=[s.name for s in setups])
    meta.pop('out_dir')
    meta.pop('overwrite')
    meta.pop('workers')
    if not any(meta['camera_time_offsets_us']):  # synchronous: the side file reads as before the option existed
        meta.pop('camera_time_offsets_us')
    with open(osp.join(cfg.out_dir, 'synthetic_gt.json'), 'w') as f:
        json.dump(dict(meta=meta, annotations=gt_anns), f)
    elapsed = time.time() - t_start
    n_per_sample = [len(r['ids']) for r in results.values()]
    summary = dict(time_s=elapsed, size_bytes=_dir_size(cfg.out_dir), num_samples=len(tasks),
                   num_annotations=len(gt_anns), objects_per_sample_mean=float(np.mean(n_per_sample)),
                   objects_per_sample_min=int(np.min(n_per_sample)), objects_per_sample_max=int(np.max(n_per_sample)),
                   class_histogram={c: sum(a['detection_name'] == c for a in gt_anns) for c in CLASSES},
                   frac_with_lidar_pts=float(np.mean([a['num_lidar_pts'] > 0 for a in gt_anns])) if gt_anns else 0.0,
                   lidar_points_per_sweep=float(np.mean([r['num_points'] for r in results.values()])))
    return summary
