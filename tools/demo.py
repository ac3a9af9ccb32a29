"""EPro-PnP-Det on your own images: any size, any pinhole camera, images, folders or videos.

    python tools/demo.py CONFIG CHECKPOINT INPUT... (--intrinsics FX FY CX CY | --calib FILE) [--pitch P --roll R]
                         [--out-dir DIR]
                         [--device cpu|cuda] [--score-thr 0.3] [--views 3d,bev,orient,points,depth]
                         [--batch-size 1] [--video-fps 2] [--mc-samples 64] [--seed 0] [--cfg-options k=v ...]

INPUT: image files, folders (their images) or videos (one frame every 1/--video-fps s). Intrinsics: pixels of the
images as given (``--intrinsics`` for all inputs, or ``--calib`` a JSON ``{"cam2img": K}`` /
``{"images": {"<file>": {"cam2img": K}}}`` or a KITTI calib .txt; see ``epropnp_det/apis/calib.py``). Images are
resized and cropped to the model's training input scale with the intrinsics carried exactly
(``epropnp_det/apis/inference.py``).

Writes per input ``<out-dir>/<name>.json`` (every box with score >= --score-thr in the camera frame, with its
pose uncertainty; fields in the README, "Inference on your own images") and ``<name>_<view>.png`` for each view:
``3d`` projected boxes, ``bev`` bird's-eye view with 2-sigma position ellipses, ``orient`` orientation-density
roses of --mc-samples Monte-Carlo pose samples, ``points`` the deformable 2D-3D correspondences coloured by
weight, ``depth`` the v2 dense depth (models with a depth branch).

A camera that is not level (``--pitch/--roll`` degrees, or ``cam2level`` / ``pitch_deg`` / ``roll_deg`` in the
calibration JSON): the image is warped to a level virtual camera with the same centre (a homography), predicted
there, and the boxes are rotated back into the real camera frame (``epropnp_det/apis/level.py``).
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

VIEWS = ('3d', 'bev', 'orient', 'points', 'depth')


class DemoError(Exception):
    """A user error: printed as one line, exit status 2."""


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image files, folders of images, videos')
    cam = parser.add_mutually_exclusive_group()
    cam.add_argument('--intrinsics', nargs=4, type=float, metavar=('FX', 'FY', 'CX', 'CY'),
                     help='pinhole intrinsics (pixels of the input images) for every input')
    cam.add_argument('--calib', metavar='FILE', help='calibration file: JSON (per image or one K) or KITTI .txt')
    parser.add_argument('--pitch', type=float, default=None, metavar='DEG',
                        help='camera pitch (degrees, > 0 looking down) for every input: the image is warped to a '
                             'level virtual camera and the boxes rotated back')
    parser.add_argument('--roll', type=float, default=None, metavar='DEG',
                        help='camera roll about the optical axis (degrees), like --pitch')
    parser.add_argument('--rectify-border', default='replicate', choices=('replicate', 'constant', 'reflect'),
                        help='fill of the band a level virtual camera sees outside a tilted image (constant: black)')
    parser.add_argument('--out-dir', default='work_dirs/demo')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--score-thr', type=float, default=0.3, help='boxes below this score are not written')
    parser.add_argument('--views', default='3d,bev', help=f'comma-separated subset of {",".join(VIEWS)}, or none')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--video-fps', type=float, default=2.0, help='frames per second sampled from videos (0: all)')
    parser.add_argument('--mc-samples', type=int, default=64, help='Monte-Carlo pose samples per box (orient view)')
    parser.add_argument('--rose-bins', type=int, default=24, help='bins of the orientation roses')
    parser.add_argument('--n-std', type=float, default=2.0, help='size of the BEV uncertainty ellipses (sigmas)')
    parser.add_argument('--max-objects', type=int, default=6, help='objects shown in the points view')
    parser.add_argument('--seed', type=int, default=0, help='seed of the Monte-Carlo draws')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def parse_views(text: str) -> list:
    if text.strip().lower() in ('', 'none'):
        return []
    views = [v.strip().lower() for v in text.split(',') if v.strip()]
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise DemoError(f'--views: unknown {unknown}; choose from {",".join(VIEWS)}')
    return list(dict.fromkeys(views))


def draw_views(pred, img, views, args) -> dict:
    """``{view: image}`` for one image's kept detections (:mod:`epropnp_det.visualization.views`)."""
    from epropnp_det.visualization import view_bev, view_boxes_3d, view_correspondences, view_depth, view_orientation
    out = {}
    W = pred.image_size[0]
    to_img = pred.meta.get('level_to_image')  # boxes of a camera that is not level are drawn through the homography
    if '3d' in views:
        out['3d'] = view_boxes_3d(img, pred.boxes, pred.cam2img, pred.labels, pred.scores, pred.class_names,
                                  convention=pred.pixel_convention, img_transform=to_img)
    if 'bev' in views:
        out['bev'] = view_bev(pred.boxes, pred.cam2img, W, pred.labels, pred.scores, pred.class_names,
                              pose_cov=pred.pose_cov, n_std=args.n_std)
    if 'orient' in views:
        out['orient'] = view_orientation(pred.boxes, pred.pose_samples, pred.pose_sample_weights, pred.cam2img, W,
                                         rose_bins=args.rose_bins, scores_2d=pred.scores_2d)
    if 'points' in views:
        out['points'] = view_correspondences(img, pred.x2d, pred.w2d, pred.x3d, pred.boxes, pred.cam2img,
                                             pred.labels, pred.scores, pred.class_names,
                                             convention=pred.pixel_convention, max_objects=args.max_objects,
                                             img_transform=to_img)
    if 'depth' in views and pred.depth_map is not None:
        out['depth'] = view_depth(pred.depth_map, pred.img_transform, pred.image_size, pred.meta['output_stride'])
    return out


def process_batch(predictor, batch, cams: dict, views, args) -> list:
    """Reads, predicts and writes one batch of :class:`~epropnp_det.apis.InputItem`; returns the written files."""
    import cv2

    from epropnp_det.apis import InputError, read_input, write_json
    try:
        imgs = [read_input(it) for it in batch]
    except InputError as exc:
        raise DemoError(str(exc)) from None
    levels = getattr(args, 'levels', {})
    preds = predictor.predict(imgs, [cams[it.calib_name] for it in batch], [it.name for it in batch],
                              [levels.get(it.calib_name) for it in batch])
    written = []
    for it, img, pred in zip(batch, imgs, preds):
        kept = pred.above(args.score_thr)
        path = osp.join(args.out_dir, f'{it.name}.json')
        write_json(kept, path, image=osp.abspath(it.path), frame=it.frame,
                   extra=dict(score_thr=args.score_thr, config=args.config, checkpoint=args.checkpoint))
        written.append(path)
        for view, pic in draw_views(kept, img, views, args).items():
            path = osp.join(args.out_dir, f'{it.name}_{view}.png')
            cv2.imwrite(path, pic)
            written.append(path)
    return written


def run(argv=None) -> list:
    """Runs the demo; returns the list of written files. Raises :class:`DemoError` for user errors."""
    args = parse_args(argv)
    from epropnp_det.apis import CalibError, Calibration, InputError, collect_inputs, iter_batches, load_calibration
    views = parse_views(args.views)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise DemoError(f'{path}: {what} file not found')
    if args.batch_size < 1:
        raise DemoError(f'--batch-size must be >= 1, got {args.batch_size}')
    try:
        if args.calib:
            calib = load_calibration(args.calib)
        elif args.intrinsics:
            calib = Calibration.from_intrinsics(args.intrinsics)
        else:
            raise DemoError('missing intrinsics: give --intrinsics FX FY CX CY (pixels of the input images) or '
                            '--calib FILE')
        items = collect_inputs(args.inputs, args.video_fps or None)
        cams = {it.calib_name: calib.lookup(it.calib_name) for it in items}  # every input has K before loading
        if args.pitch is not None or args.roll is not None:
            from epropnp_det.apis.level import tilt_rotation
            tilt = tilt_rotation(args.pitch or 0.0, args.roll or 0.0)
            args.levels = {name: tilt for name in cams}
        else:
            args.levels = {name: calib.lookup_level(name) for name in cams}
    except (CalibError, InputError) as exc:
        raise DemoError(str(exc)) from None

    from tqdm import tqdm

    from epropnp_det.apis import EProPnPPredictor
    predictor = EProPnPPredictor(args.config, args.checkpoint, device=args.device,
                                 mc_samples=args.mc_samples if 'orient' in views else 0,
                                 pred_depth='depth' in views, with_points='points' in views, seed=args.seed,
                                 cfg_options=args.cfg_options, rectify_border=args.rectify_border)
    if 'depth' in views and not predictor.has_depth:
        print(f'--views depth: {args.config} has no depth branch (v2 models only); no depth view is drawn')
        views.remove('depth')
    os.makedirs(args.out_dir, exist_ok=True)
    written, t0 = [], time.perf_counter()
    bar = tqdm(total=len(items), desc='demo', unit='img', disable=args.no_progress or len(items) < 2)
    for batch in iter_batches(items, args.batch_size):
        written += process_batch(predictor, batch, cams, views, args)
        bar.update(len(batch))
    bar.close()
    dt = time.perf_counter() - t0
    print(f'{len(items)} images in {dt:.1f} s ({len(items) / max(dt, 1e-9):.2f} img/s); wrote {len(written)} files '
          f'to {args.out_dir}')
    return written


def main(argv=None):
    try:
        return run(argv)
    except DemoError as exc:
        sys.exit(f'error: {exc}')


if __name__ == '__main__':
    main()
