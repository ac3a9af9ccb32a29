"""nuScenes info files: mmdet3d 1.4's standard infos plus ONE documented EPro-PnP step.

``create_nuscenes_infos(root_path, out_dir, version)`` writes ``<out_dir>/<prefix>_infos_{train,val}.pkl`` (or
``_test.pkl``) by running mmdet3d's own converter functions (``tools/dataset_converters/nuscenes_converter.py``
``_fill_trainval_infos`` and ``update_infos_to_v2.update_nuscenes_infos``, loaded from the installed wheel's
``mmdet3d/.mim/tools``) with three of their traps removed:

* no ``tools.`` import path is needed (the modules are loaded by file path, so our own ``tools/`` cannot shadow
  them);
* ``update_nuscenes_infos`` hard-codes ``NuScenes(dataroot='./data/nuscenes')``: we hand it the already loaded
  ``NuScenes`` of ``root_path`` instead (also saves loading the tables twice);
* the first pass writes its intermediate (v1-style) pickles into ``<out_dir>/.mmdet3d_v1_infos/`` instead of
  ``root_path`` (the dataset root may be read-only), and the final files go to ``out_dir``.

The GT database (``nuscenes_gt_database/``) is LiDAR-detector material and is not built.

Then :func:`add_epropnp_fields` adds, in place, what EPro-PnP needs and mmdet3d's ``cam_instances`` lack.
Per image ``images[CAM]``: ``width``, ``height`` (pixels, from ``sample_data``). Per camera instance
``cam_instances[CAM][i]`` (all other keys unchanged):

=================  ============================================================================================
``ann_token``      ``sample_annotation`` token
``instance_token`` the annotation's instance token
``visibility``     int 0..4 (nuScenes visibility token; 0 = '' unknown). 1: 0-40 %, 2: 40-60 %, 3: 60-80 %, 4: >80 %
``truncation``     docs/method.md §4.1: 1 − (fraction of 10×10×10 points spread uniformly in the box that lie in front
                   of the camera and project inside ``(0, W) × (0, H)``)
``num_lidar_pts``  the annotation's LiDAR point count (whole sweep); ``num_radar_pts`` likewise
``bbox_nearclip``  ``[x1, y1, x2, y2]``: docs/method.md §4.1 2D box (corners with z ≥ 0.1 m plus all edge crossings of
                   the plane z = 0.1 m, projected with K, convex hull ∩ ``[0, W] × [0, H]`` of the REAL image size;
                   raw K-projection coordinates); mmdet3d's ``bbox`` does not clip at the near plane and always
                   uses a 1600×900 canvas
=================  ============================================================================================

Camera instances whose near-clipped hull misses the real canvas are dropped (this only happens when images are
not 1600×900, because mmdet3d tests visibility against a 1600×900 canvas). ``metainfo['epropnp_fields']`` records
the step's version. Nothing else changes, so every mmdet3d tool still reads the files.
"""
import importlib.util
import os.path as osp
import shutil
import sys
import warnings
from typing import Dict, List, Optional

import mmengine
import numpy as np

EPROPNP_FIELDS_VERSION = '1.0'
CAMERA_TYPES = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
NEAR_PLANE = 0.1  # metres, docs/method.md §4.1


def load_mmdet3d_tool_module(name: str):
    """Import ``mmdet3d/.mim/tools/dataset_converters/<name>.py`` by file path (as ``_mmdet3d_tools_<name>``)."""
    import mmdet3d
    path = osp.join(osp.dirname(mmdet3d.__file__), '.mim', 'tools', 'dataset_converters', f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'mmdet3d converter module not found: {path} (mmdet3d installed without .mim?)')
    mod_name = f'_mmdet3d_tools_{name}'
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def _split_scene_names(version: str):
    """(train, val) scene names of a devkit version (val is empty for v1.0-test)."""
    from nuscenes.utils import splits
    if version == 'v1.0-trainval':
        return ('train', splits.train), ('val', splits.val)
    if version == 'v1.0-test':
        return ('test', splits.test), ('val', [])
    if version == 'v1.0-mini':
        return ('train', splits.mini_train), ('val', splits.mini_val)
    raise ValueError(f"--version must be one of v1.0-trainval, v1.0-test, v1.0-mini, got '{version}'")


def _split_scenes(nusc, version: str, converter):
    """(train, val) scene-token sets of the scenes that the root has (mmdet3d's ``get_available_scenes``), and the
    names of all those scenes."""
    (_, train), (_, val) = _split_scene_names(version)
    available = converter.get_available_scenes(nusc)
    name2token = {s['name']: s['token'] for s in available}
    return ({name2token[s] for s in train if s in name2token}, {name2token[s] for s in val if s in name2token},
            list(name2token))


class EmptySplitWarning(UserWarning):
    """A split of the version has none of its scenes in the root; its info file is not written."""


def empty_split_message(root_path: str, version: str, split: str, expected, present, out_name: str) -> str:
    """The message for a split none of whose devkit scenes is in the root (mmdet3d's converter crashes on it with
    ``UnboundLocalError: ignore_class_name``)."""
    exp = ', '.join(sorted(expected)[:6]) + (', ...' if len(expected) > 6 else '')
    have = ', '.join(sorted(present)[:6]) + (', ...' if len(present) > 6 else '')
    return (f"split '{split}' of {version} is empty under {root_path}: none of its {len(expected)} scenes "
            f'({exp}) is in the root (with LiDAR files present); the root has {len(present)} scene(s): {have}. '
            f'{out_name} is not written, so this root cannot be used for {split}.')


def create_nuscenes_infos(root_path: str, out_dir: Optional[str] = None, version: str = 'v1.0-trainval',
                          info_prefix: str = 'nuscenes', max_sweeps: int = 10, nusc=None,
                          with_epropnp_fields: bool = True) -> List[str]:
    """Write mmdet3d 1.4 nuScenes infos (+ the EPro-PnP fields) for ``version``; return the written paths.

    Args:
        root_path: nuScenes root (holds ``<version>/``, ``samples/``, ``sweeps/``).
        out_dir: where the info files go (default ``root_path``).
        version: 'v1.0-trainval' (train + val), 'v1.0-test' (test), 'v1.0-mini' (mini_train + mini_val).
        max_sweeps: LiDAR sweeps listed per sample (mmdet3d default 10; EPro-PnP does not use them).
        nusc: an already loaded ``NuScenes(version, root_path)`` (optional).

    A split none of whose devkit scenes is in the root (e.g. a generated root of one scene has no mini_val scene)
    is not written and gives an ``EmptySplitWarning`` naming the expected and present scenes; if every split is
    empty, ``ValueError``.
    """
    out_dir = out_dir or root_path
    if not osp.isdir(osp.join(root_path, version)):
        raise FileNotFoundError(f'nuScenes tables not found: {osp.join(root_path, version)} (check --root-path '
                                f'and --version)')
    from nuscenes.nuscenes import NuScenes
    if nusc is None:
        nusc = NuScenes(version=version, dataroot=root_path, verbose=True)
    converter = load_mmdet3d_tool_module('nuscenes_converter')
    updater = load_mmdet3d_tool_module('update_infos_to_v2')

    train_scenes, val_scenes, present = _split_scenes(nusc, version, converter)
    test = 'test' in version
    (train_name, train_names), (_, val_names) = _split_scene_names(version)
    empty = [(split, names) for split, names, tokens in ((train_name, train_names, train_scenes),
                                                         ('val', val_names, val_scenes)) if names and not tokens]
    if len(empty) == (1 if test else 2):
        raise ValueError(' '.join(empty_split_message(root_path, version, split, names, present,
                                                      f'{info_prefix}_infos_{split}.pkl') for split, names in empty))
    for split, names in empty:
        warnings.warn(empty_split_message(root_path, version, split, names, present,
                                          f'{info_prefix}_infos_{split}.pkl'), EmptySplitWarning, stacklevel=2)
    train_infos, val_infos = converter._fill_trainval_infos(nusc, train_scenes, val_scenes, test,
                                                            max_sweeps=max_sweeps)
    tmp_dir = osp.join(out_dir, '.mmdet3d_v1_infos')
    mmengine.mkdir_or_exist(tmp_dir)
    splits_out = {'test': train_infos} if test else {'train': train_infos, 'val': val_infos}
    splits_out = {k: v for k, v in splits_out.items() if k not in dict(empty)}

    # update_nuscenes_infos builds NuScenes(version=..., dataroot='./data/nuscenes'): give it ours instead.
    def _loaded_nusc(version=None, dataroot=None, verbose=True):
        if version != nusc.version:
            raise ValueError(f'info version {version} != loaded NuScenes version {nusc.version}')
        return nusc

    updater.NuScenes = _loaded_nusc
    written = []
    try:
        for split, infos in splits_out.items():
            name = f'{info_prefix}_infos_{split}.pkl'
            mmengine.dump(dict(infos=infos, metadata=dict(version=version)), osp.join(tmp_dir, name))
            updater.update_nuscenes_infos(pkl_path=osp.join(tmp_dir, name), out_dir=out_dir)
            out_path = osp.join(out_dir, name)
            if with_epropnp_fields:
                data = mmengine.load(out_path)
                add_epropnp_fields(data, nusc)
                mmengine.dump(data, out_path)
            written.append(out_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return written


def _box_to_camera(box, pose_rec, cs_rec):
    """A devkit ``Box`` (global frame) moved to the camera frame (same transform chain as mmdet3d's
    ``get_nuscenes_2d_boxes``), in place."""
    from pyquaternion import Quaternion
    box.translate(-np.array(pose_rec['translation']))
    box.rotate(Quaternion(pose_rec['rotation']).inverse)
    box.translate(-np.array(cs_rec['translation']))
    box.rotate(Quaternion(cs_rec['rotation']).inverse)
    return box


def _centres_camera(ann_recs, pose_rec, cs_rec) -> np.ndarray:
    """(A, 3) camera-frame centres of the annotations: the translation part of :func:`_box_to_camera`, for all
    annotations at once (only the matched ones become ``Box`` objects)."""
    from pyquaternion import Quaternion
    c = np.array([r['translation'] for r in ann_recs], dtype=np.float64).reshape(-1, 3)
    c = (c - np.array(pose_rec['translation'])) @ Quaternion(pose_rec['rotation']).rotation_matrix
    return (c - np.array(cs_rec['translation'])) @ Quaternion(cs_rec['rotation']).rotation_matrix


def truncation_of_box(corners_fn_box, cam2img: np.ndarray, width: int, height: int) -> float:
    """docs/method.md §4.1: ``1 − #(10³ grid points with z > 0 projecting inside (0,W)×(0,H)) / 1000`` for a devkit
    ``Box`` in the camera frame."""
    lin = np.linspace(-0.5, 0.5, 10)
    grid = np.stack(np.meshgrid(lin, lin, lin, indexing='ij'), -1).reshape(-1, 3)       # nuScenes-local, unit
    wlh = corners_fn_box.wlh                                                               # x: l, y: w, z: h
    local = grid * np.array([wlh[1], wlh[0], wlh[2]])
    pts = local @ corners_fn_box.rotation_matrix.T + corners_fn_box.center
    z = pts[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = (pts @ np.asarray(cam2img).T)[:, :2] / z[:, None]
    inside = (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < width) & (uv[:, 1] > 0) & (uv[:, 1] < height)
    return float(1.0 - inside.sum() / len(pts))


def nearclip_bbox_of_box(box, cam2img: np.ndarray, width: int, height: int, near: float = NEAR_PLANE):
    """docs/method.md §4.1 2D box of a camera-frame devkit ``Box`` (see module docstring); None if it misses the
    canvas."""
    from shapely.geometry import MultiPoint
    from shapely.geometry import box as shp_box

    from epropnp_det.structures.boxes import _CORNER_SIGNS, nearclip_box_points
    corners = box.corners().T                                                              # (8, 3), devkit order
    # reorder to our corner-sign order so that box_edges() applies: devkit corners are (l, w, h) signs
    # (+,+,+), (+,−,+), (+,−,−), (+,+,−), (−,+,+), (−,−,+), (−,−,−), (−,+,−); our signs are (l, h, w) with h down.
    signs_devkit = [(1, 1, 1), (1, -1, 1), (1, -1, -1), (1, 1, -1), (-1, 1, 1), (-1, -1, 1), (-1, -1, -1), (-1, 1, -1)]
    order = [signs_devkit.index((sl, sw, -sh)) for sl, sh, sw in _CORNER_SIGNS]
    pts = nearclip_box_points(corners[order], near)
    if len(pts) == 0:
        return None
    uvw = pts @ np.asarray(cam2img, dtype=np.float64).T
    uv = uvw[:, :2] / np.maximum(uvw[:, 2:3], near)
    hull = MultiPoint([tuple(p) for p in uv]).convex_hull
    canvas = shp_box(0, 0, width, height)
    if not hull.intersects(canvas):
        return None
    inter = hull.intersection(canvas)
    if inter.is_empty:
        return None
    return [float(v) for v in inter.bounds]


def add_epropnp_fields(data: Dict, nusc, match_tol: float = 1e-3) -> Dict:
    """Add the EPro-PnP fields (module docstring) to a loaded mmdet3d info dict ``{metainfo, data_list}``."""
    for info in mmengine.track_iter_progress(data['data_list']):
        sample = nusc.get('sample', info['token'])
        ann_recs = [nusc.get('sample_annotation', t) for t in sample['anns']]
        for cam, img in info['images'].items():
            sd = nusc.get('sample_data', img['sample_data_token'])
            img['width'], img['height'] = int(sd['width']), int(sd['height'])
            if 'cam_instances' not in info or cam not in info['cam_instances']:
                continue
            cam_insts = info['cam_instances'][cam]
            if not cam_insts:
                continue
            cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
            pose = nusc.get('ego_pose', sd['ego_pose_token'])
            k = np.array(cs['camera_intrinsic'], dtype=np.float64)
            centres = _centres_camera(ann_recs, pose, cs)
            kept = []
            for inst in cam_insts:
                dist = np.linalg.norm(centres - np.asarray(inst['bbox_3d'][:3]), axis=1)
                j = int(dist.argmin())
                if dist[j] > match_tol:
                    raise ValueError(f"sample {info['token']} {cam}: cam instance at {inst['bbox_3d'][:3]} matches no "
                                     f'annotation (closest {dist[j]:.3g} m)')
                rec = ann_recs[j]
                box = _box_to_camera(nusc.get_box(rec['token']), pose, cs)
                bbox = nearclip_bbox_of_box(box, k, img['width'], img['height'])
                if bbox is None:
                    continue
                vis = rec['visibility_token']
                inst.update(ann_token=rec['token'], instance_token=rec['instance_token'],
                            visibility=int(vis) if vis else 0,
                            truncation=truncation_of_box(box, k, img['width'], img['height']),
                            num_lidar_pts=int(rec['num_lidar_pts']), num_radar_pts=int(rec['num_radar_pts']),
                            bbox_nearclip=bbox)
                kept.append(inst)
            info['cam_instances'][cam] = kept
    data['metainfo']['epropnp_fields'] = EPROPNP_FIELDS_VERSION
    return data


def check_epropnp_infos(data: Dict, path: str = '<infos>', data_root: str = ''):
    """Raise ``InfoValidationError`` if an info dict lacks the EPro-PnP fields (built by plain mmdet3d); the
    message gives the ``tools/create_data.py`` command. ``EProPnPNuScenesDataset`` runs this and the per-sample
    checks of ``epropnp_det/datasets/validation.py`` when it is built."""
    from .validation import check_epropnp_metainfo, fix_command
    metainfo = data.get('metainfo', {})
    check_epropnp_metainfo(metainfo, path, fix_command(path, data_root, metainfo.get('version')))


__all__ = ['create_nuscenes_infos', 'EmptySplitWarning', 'add_epropnp_fields', 'load_mmdet3d_tool_module',
           'check_epropnp_infos', 'truncation_of_box', 'nearclip_bbox_of_box', 'CAMERA_TYPES', 'EPROPNP_FIELDS_VERSION']
