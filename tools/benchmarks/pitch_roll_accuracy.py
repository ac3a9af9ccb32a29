"""Box accuracy of a model trained on level cameras when the camera is pitched or rolled: level images, tilted
images through the rectification path (``tools/demo.py --pitch/--roll``), and tilted images without it.

    python tools/benchmarks/pitch_roll_accuracy.py CONFIG CHECKPOINT [--num-scenes 2] [--frames 10]
        [--cameras CAM_FRONT ...] [--angles 5,0 -5,0 0,3 0,-3 5,3 -5,-3] [--score-thr 0.1] [--image-size 640 360]
        [--dist-th 2.0] [--json OUT] [--device cpu] [--cfg-options k=v ...]

Scenes: the generator's scenes (``epropnp_det/apis/demo_images.py``, the same worlds as
``tools/create_synthetic_nuscenes.py`` with ``--samples-per-scene 10``, seed 0), by default the two ``mini_val``
scenes (not trained on), keyframes ``0..--frames-1``, every rig camera, each camera with the rig's intrinsics
scaled to ``--image-size`` (the training images' ``K`` at 640×360). Each (scene, frame, camera) is rendered by a
level camera and by the same camera pitched / rolled by each ``--angles PITCH,ROLL`` (degrees, pitch > 0 looks
down, roll > 0 turns the camera from +x towards +y; :func:`epropnp_det.apis.level.tilt_rotation`).

Rows (``path``):

* ``level``: the level images, as in training.
* ``rectified``: the tilted images warped to the level virtual camera (``EProPnPPredictor.predict`` with
  ``cam2levels``, as ``tools/demo.py --pitch/--roll --rectify-border constant``), the band outside the real image
  black; the boxes are rotated back into the real camera frame
  (:func:`~epropnp_det.apis.level.boxes_level_to_camera`, the demo JSON's ``center`` / ``rotation``) and placed in
  the world with the camera's true orientation.
* ``rectified, replicated border``: the same with the band the level camera sees outside the real image filled
  with the nearest edge pixels instead of black (``EProPnPPredictor``'s and the demo's default; up to
  ``f·tan(pitch)`` rows, 44 at 5° for the front camera at 640×360): a model trained without black bands may lose
  the objects near one.
* ``raw``: the tilted images as they are, the model treating the camera as level (its boxes are upright in the
  real camera frame), placed in the world with the camera's true orientation, i.e. the known tilt applied to the
  boxes instead of the image. This isolates what the image warp does.
* ``raw, tilt ignored``: the same predictions taken as level-frame boxes (the tilt not known at all).

Scoring, in the gravity-aligned frame of the camera centre (x forward, y left, z up; the level camera's axes, the
frame the ground truth of ``render_camera_image`` is given in): predictions with score >= ``--score-thr``, ground
truth of the objects with >= 30 visible pixels in that camera's picture, both limited to the devkit's class ranges
(``detection_cvpr_2019``, BEV distance from the camera), matched per class by the devkit's rule (descending score,
nearest unmatched ground truth of the same class within ``--dist-th`` m BEV centre distance;
:func:`epropnp_det.evaluation.error_breakdown.match_and_decompose` on devkit ``DetectionBox`` es). Columns, pooled
over classes: ``recall`` matched / ground truth, ``precision`` matched / predictions, ``centre`` BEV centre error of
the matched pairs (m, the devkit's ATE; mean and median), ``depth`` |error along the line of sight| (m, median),
``yaw`` |yaw error| (degrees, median, the devkit's periods; cones excluded), ``centre / level`` and
``recall / level`` the ratios of the mean centre error and the recall to the level row.
"""
import argparse
import json
import os.path as osp
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, format_table  # noqa: E402

sys.path.insert(0, REPO)

#: pitch, roll (degrees) of the default tilted cameras: pitch ±5°, roll ±3°, combined
DEFAULT_ANGLES = ((5.0, 0.0), (-5.0, 0.0), (0.0, 3.0), (0.0, -3.0), (5.0, 3.0), (-5.0, -3.0))
#: level camera frame (x right, y down, z forward) → gravity-aligned z-up frame (x forward, y left, z up)
LEVEL_TO_GROUND = np.array([[0., 0., 1.], [-1., 0., 0.], [0., -1., 0.]])
PATHS = ('rectified', 'rectified, replicated border', 'raw', 'raw, tilt ignored')
HEADER = ('camera', 'path', 'images', 'gt', 'preds', 'matched', 'recall', 'precision', 'centre mean (m)',
          'centre median (m)', 'depth median (m)', 'yaw median (°)', 'centre / level', 'recall / level')


def parse_angles(text: str) -> Tuple[float, float]:
    try:
        pitch, roll = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected PITCH,ROLL in degrees, got {text!r}') from None
    return pitch, roll


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="mmengine checkpoint; 'random' for randomly initialised weights")
    parser.add_argument('--scenes', type=int, nargs='+', default=None,
                        help='generator scene indices (default: the mini_val scenes)')
    parser.add_argument('--num-scenes', type=int, default=None, help='the first N of --scenes')
    parser.add_argument('--frames', type=int, default=10, help='keyframes 0..F-1 of each scene')
    parser.add_argument('--samples-per-scene', type=int, default=10,
                        help="keyframes of the generated scenes (the generator's --samples-per-scene)")
    parser.add_argument('--cameras', nargs='+', default=None, help='rig cameras (default: all six)')
    parser.add_argument('--angles', type=parse_angles, nargs='+', default=list(DEFAULT_ANGLES),
                        metavar='PITCH,ROLL', help='tilted cameras, degrees')
    parser.add_argument('--image-size', type=int, nargs=2, default=[640, 360], metavar=('W', 'H'))
    parser.add_argument('--seed', type=int, default=0, help="the generator's seed")
    parser.add_argument('--score-thr', type=float, default=0.1)
    parser.add_argument('--dist-th', type=float, default=2.0, help='BEV centre distance of a match (m)')
    parser.add_argument('--paths', nargs='+', default=list(PATHS), choices=PATHS, metavar='PATH',
                        help=f'rows per tilted camera, of {list(PATHS)}')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--json', default=None, help='also write the rows (and the settings) to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    argv = sys.argv[1:] if argv is None else list(argv)
    # '-5,0' is an angle pair, not an option: a leading space keeps argparse from reading it as one
    argv = [f' {a}' if re.fullmatch(r'-[\d.]+,-?[\d.]+', a) else a for a in argv]
    args = parser.parse_args(argv)
    if args.frames < 1 or args.frames > args.samples_per_scene:
        parser.error(f'--frames must be in 1..{args.samples_per_scene} (--samples-per-scene)')
    return args


# ------------------------------------------------------------------------------------------------------ scenes
def default_scenes() -> List[int]:
    """Generator scene indices of the ``mini_val`` split (not trained on)."""
    from epropnp_det.synthetic.constants import MINI_VAL_SCENES
    from epropnp_det.synthetic.generator import SCENE_ORDER
    return [SCENE_ORDER.index(s) for s in MINI_VAL_SCENES]


def rig_intrinsics(camera: str, width: int, height: int) -> Tuple[float, float, float, float]:
    """``fx, fy, cx, cy`` of a rig camera at ``width × height`` (the generator's scaling of its 1600×900 rig)."""
    from epropnp_det.synthetic.constants import CAMERA_RIG, RIG_IMAGE_SIZE
    _, _, fx, fy, cx, cy = CAMERA_RIG[camera]
    sx, sy = width / RIG_IMAGE_SIZE[0], height / RIG_IMAGE_SIZE[1]
    return fx * sx, fy * sy, cx * sx, cy * sy


def render_views(scenes: Sequence[int], frames: int, cameras: Sequence[str], angles: Sequence[Tuple[float, float]],
                 size=(640, 360), seed: int = 0, samples_per_scene: int = 10) -> Dict[Tuple[float, float], list]:
    """``{(pitch, roll): [render_camera_image(...) + token]}`` for ``(0, 0)`` and each of ``angles``, the same
    (scene, frame, camera) list for each."""
    from epropnp_det.apis.demo_images import render_camera_image
    out = {}
    for ang in [(0.0, 0.0)] + [tuple(a) for a in angles if tuple(a) != (0.0, 0.0)]:
        views = []
        for scene in scenes:
            for frame in range(frames):
                for cam in cameras:
                    fx, fy, cx, cy = rig_intrinsics(cam, *size)
                    r = render_camera_image(size[0], size[1], fx, fy, cx, cy, scene=scene, frame=frame, seed=seed,
                                            camera=cam, pitch_deg=ang[0], roll_deg=ang[1],
                                            samples_per_scene=samples_per_scene)
                    r['token'] = f'{scene}_{frame}_{cam}'
                    views.append(r)
        out[ang] = views
    return out


# ------------------------------------------------------------------------------------------------- predictions
#: ``predict(imgs, cam2imgs, cam2levels, border) -> [(boxes (n, 7), labels (n,), scores (n,))]``: boxes in the level
#: frame where ``cam2levels[i]`` is given (the rectification path, filling by ``border``), else in the camera frame
#: (``EProPnPPredictor``'s convention)
PredictFn = Callable[[list, list, list, str], List[Tuple[np.ndarray, np.ndarray, np.ndarray]]]


def model_predict_fn(predictor, batch_size: int = 4) -> PredictFn:
    def predict(imgs, cam2imgs, cam2levels, border='constant'):
        predictor.rectify_border = border
        out = []
        for i in range(0, len(imgs), batch_size):
            sl = slice(i, i + batch_size)
            for p in predictor.predict(imgs[sl], cam2imgs[sl], cam2levels=cam2levels[sl]):
                out.append((p.boxes, p.labels, p.scores))
        return out
    return predict


# ---------------------------------------------------------------------------------------------------- scoring
def eval_boxes(token: str, centres: np.ndarray, rots: np.ndarray, boxes: np.ndarray, labels, scores,
               cam2world: np.ndarray, class_names: Sequence[str]) -> list:
    """Devkit ``DetectionBox`` es of boxes given in a camera frame by centres (n, 3) and orientations (n, 3, 3)
    (object KITTI-local → camera, :func:`~epropnp_det.apis.level.boxes_level_to_camera`), sizes from the model
    boxes (n, 7), placed in the gravity-aligned frame by ``cam2world`` (3, 3: camera → level camera, then
    :data:`LEVEL_TO_GROUND`). The camera centre is the origin (``ego_translation`` = ``translation``)."""
    import torch
    from nuscenes.eval.detection.data_classes import DetectionBox

    from epropnp_det.structures.boxes import KITTI2NUS_ROT, rot_mat_to_quaternion
    to_ground = LEVEL_TO_GROUND @ np.asarray(cam2world, dtype=np.float64)
    c = centres @ to_ground.T
    rot = to_ground[None] @ rots @ np.asarray(KITTI2NUS_ROT).T[None]                 # nuScenes-local → ground
    quat = rot_mat_to_quaternion(torch.from_numpy(rot)).numpy() if len(rot) else np.zeros((0, 4))
    wlh = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)[:, [2, 0, 1]]
    return [DetectionBox(sample_token=token, translation=tuple(c[i]), size=tuple(wlh[i]), rotation=tuple(quat[i]),
                         velocity=(0.0, 0.0), ego_translation=tuple(c[i]), detection_name=class_names[int(lab)],
                         detection_score=float(s), attribute_name='')
            for i, (lab, s) in enumerate(zip(labels, scores))]


def to_eval_boxes(items: Sequence[tuple], class_names: Sequence[str], class_range: Dict[str, float]):
    """``items``: ``(token, centres, rots, boxes, labels, scores, cam2world)`` → devkit ``EvalBoxes``, limited to
    the class ranges (as ``filter_eval_boxes``; unknown classes dropped)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    out = EvalBoxes()
    for token, centres, rots, boxes, labels, scores, cam2world in items:
        keep = [i for i, lab in enumerate(labels) if 0 <= int(lab) < len(class_names)
                and class_names[int(lab)] in class_range]
        boxes_i = eval_boxes(token, centres[keep], rots[keep], np.asarray(boxes)[keep], np.asarray(labels)[keep],
                             np.asarray(scores)[keep], cam2world, class_names)
        out.add_boxes(token, [b for b in boxes_i if b.ego_dist <= class_range[b.detection_name]])
    return out


def score(gt, pred, class_names: Sequence[str], dist_th: float = 2.0) -> dict:
    """Pooled matching statistics of devkit ``EvalBoxes`` (see the module docstring)."""
    from epropnp_det.evaluation.error_breakdown import match_and_decompose
    errs = match_and_decompose(gt, pred, class_names, dist_th=dist_th)
    rad = np.concatenate([np.asarray(e.radial, dtype=np.float64) for e in errs.values()] + [np.zeros(0)])
    tan = np.concatenate([np.asarray(e.tangential, dtype=np.float64) for e in errs.values()] + [np.zeros(0)])
    yaw = np.concatenate([np.asarray(e.yaw, dtype=np.float64) for e in errs.values()] + [np.zeros(0)])
    centre = np.hypot(rad, tan)
    n_gt, n_pred, m = len(gt.all), len(pred.all), len(centre)
    nan = float('nan')
    return dict(gt=n_gt, preds=n_pred, matched=m, recall=m / n_gt if n_gt else nan,
                precision=m / n_pred if n_pred else nan,
                centre_mean=float(centre.mean()) if m else nan, centre_median=float(np.median(centre)) if m else nan,
                depth_median=float(np.median(np.abs(rad))) if m else nan,
                yaw_median_deg=float(np.degrees(np.median(np.abs(yaw)))) if len(yaw) else nan)


def evaluate(views: Dict[Tuple[float, float], list], predict: PredictFn, class_names: Sequence[str],
             score_thr: float = 0.1, dist_th: float = 2.0, eval_version: str = 'detection_cvpr_2019',
             paths: Sequence[str] = PATHS) -> List[dict]:
    """One row per (camera, path in ``paths``) (the module docstring): ``dict(camera, pitch, roll, path, images,
    **score)`` plus the ratios to the level row."""
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f'unknown paths {unknown}; choose from {PATHS}')
    from nuscenes.eval.detection.config import config_factory

    from epropnp_det.apis.level import boxes_level_to_camera
    class_range = dict(config_factory(eval_version).class_range)
    eye = np.eye(3)

    def gt_items(renders):  # ground truth: level-frame boxes
        return [(r['token'], *boxes_level_to_camera(r['boxes'], eye), r['boxes'], r['labels'],
                 np.ones(len(r['labels'])), eye) for r in renders]

    def pred_items(renders, preds, frame_of_boxes, cam2world):
        items = []
        for r, (boxes, labels, scores) in zip(renders, preds):
            keep = np.asarray(scores) >= score_thr
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)[keep]
            centres, rots = boxes_level_to_camera(boxes, frame_of_boxes(r))       # real camera frame
            items.append((r['token'], centres, rots, boxes, np.asarray(labels)[keep], np.asarray(scores)[keep],
                          cam2world(r)))
        return items

    def run(renders, rectify: bool, border: str = 'constant'):
        imgs = [r['img'] for r in renders]
        ks = [r['cam2img'] for r in renders]
        return predict(imgs, ks, [r['cam2level'] if rectify else None for r in renders], border)

    rows = []
    level = views[(0.0, 0.0)]
    gt = to_eval_boxes(gt_items(level), class_names, class_range)
    preds = run(level, False)
    rows.append(dict(camera='level', pitch=0.0, roll=0.0, path='level', images=len(level),
                     **score(gt, to_eval_boxes(pred_items(level, preds, lambda r: eye, lambda r: eye), class_names,
                                               class_range), class_names, dist_th)))
    for ang, renders in views.items():
        if ang == (0.0, 0.0):
            continue
        gt = to_eval_boxes(gt_items(renders), class_names, class_range)
        cases = {}
        for path, border in (('rectified', 'constant'), ('rectified, replicated border', 'replicate')):
            if path in paths:       # boxes in the level frame → real frame by cam2level → world by the tilt
                cases[path] = pred_items(renders, run(renders, True, border), lambda r: r['cam2level'],
                                         lambda r: r['cam2level'])
        if 'raw' in paths or 'raw, tilt ignored' in paths:
            raw = run(renders, False)   # boxes in the real camera frame, upright there
            cases['raw'] = pred_items(renders, raw, lambda r: eye, lambda r: r['cam2level'])
            cases['raw, tilt ignored'] = pred_items(renders, raw, lambda r: eye, lambda r: eye)
        name = f'pitch {ang[0]:+g}°, roll {ang[1]:+g}°'
        for path in [p for p in PATHS if p in paths]:
            rows.append(dict(camera=name, pitch=ang[0], roll=ang[1], path=path, images=len(renders),
                             **score(gt, to_eval_boxes(cases[path], class_names, class_range), class_names, dist_th)))
    ref = rows[0]
    for r in rows:
        r['centre_ratio'] = r['centre_mean'] / ref['centre_mean'] if ref['centre_mean'] > 0 else float('nan')
        r['recall_ratio'] = r['recall'] / ref['recall'] if ref['recall'] > 0 else float('nan')
    return rows


def format_rows(rows: List[dict], title: Optional[str] = None) -> str:
    def f(v, fmt):
        return '–' if v != v else format(v, fmt)
    body = [[r['camera'], r['path'], r['images'], r['gt'], r['preds'], r['matched'], f(r['recall'], '.3f'),
             f(r['precision'], '.3f'), f(r['centre_mean'], '.3f'), f(r['centre_median'], '.3f'),
             f(r['depth_median'], '.3f'), f(r['yaw_median_deg'], '.1f'), f(r['centre_ratio'], '.2f'),
             f(r['recall_ratio'], '.2f')] for r in rows]
    return format_table(HEADER, body, title)


# ------------------------------------------------------------------------------------------------------- main
def main(argv=None, predict: Optional[PredictFn] = None) -> List[dict]:
    """Runs the benchmark and prints the table; returns the rows. ``predict`` replaces the model (tests)."""
    args = parse_args(argv)
    from epropnp_det.synthetic import CAMERAS, CLASSES
    scenes = args.scenes if args.scenes is not None else default_scenes()
    if args.num_scenes is not None:
        scenes = scenes[:args.num_scenes]
    cameras = args.cameras or list(CAMERAS)
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        sys.exit(f'error: unknown cameras {unknown}; choose from {list(CAMERAS)}')
    t0 = time.perf_counter()
    class_names = list(CLASSES)
    if predict is None:
        from epropnp_det.apis import EProPnPPredictor
        ckpt = None if args.checkpoint == 'random' else args.checkpoint
        if ckpt is not None and not osp.isfile(ckpt):
            sys.exit(f'error: {ckpt}: checkpoint file not found')
        predictor = EProPnPPredictor(args.config, ckpt, device=args.device, cfg_options=args.cfg_options)
        class_names = predictor.class_names
        predict = model_predict_fn(predictor, args.batch_size)
    views = render_views(scenes, args.frames, cameras, args.angles, tuple(args.image_size), args.seed,
                         args.samples_per_scene)
    rows = evaluate(views, predict, class_names, args.score_thr, args.dist_th, paths=args.paths)
    dt = time.perf_counter() - t0
    title = (f'{osp.basename(args.config)} {args.checkpoint}: scenes {scenes}, frames 0..{args.frames - 1}, '
             f'{len(cameras)} camera(s), {args.image_size[0]}x{args.image_size[1]}, score >= {args.score_thr}, '
             f'match {args.dist_th} m ({dt:.0f} s)')
    print(format_rows(rows, title))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(settings={k: v for k, v in vars(args).items() if k != 'cfg_options'}, scenes=scenes,
                           cameras=cameras, rows=rows), fh, indent=1)
    return rows


if __name__ == '__main__':
    main()
