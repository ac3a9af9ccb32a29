"""Images per second of ``tools/demo.py`` at several batch sizes, on the CPU and (when available) a GPU.

    python tools/benchmarks/demo_speed.py [--config CONFIG] [--checkpoint CKPT] [--num-images 16]
                                          [--batch-sizes 1 8] [--devices cpu cuda] [--image-size 640 360]
                                          [--views 3d,bev] [--threads N]

Inputs are generated pictures (``epropnp_det/apis/demo_images.py``) written as PNG files, so the timed loop is the
demo's own (``tools/demo.py``'s ``process_batch``): read the files, resize/crop, batch, forward, PnP, post-process,
write the JSON and the chosen views. Two columns: ``model`` (``EProPnPPredictor.predict`` alone: preprocessing,
network, PnP, post-processing) and ``demo`` (the whole loop), each the fastest of ``--repeats`` interleaved passes
over all images after one untimed warm-up batch (on a shared machine the fastest pass is the least disturbed).
Without ``--checkpoint`` the model is randomly initialised and run with ``score_thr=0`` and ``max_per_img=30`` (a
random model scores every candidate below the default threshold; 30 candidates per image stand in for the
detections of a trained model, so the PnP and drawing work is realistic).
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, add_json_option, format_table, write_json  # noqa: E402

sys.path.insert(0, REPO)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=osp.join(REPO, 'configs/epropnp_det_r18_synthetic.py'))
    parser.add_argument('--checkpoint', default=None, help='default: random weights (see the module docstring)')
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--devices', nargs='+', default=None, help="default: cpu, plus cuda when available")
    parser.add_argument('--image-size', type=int, nargs=2, default=[640, 360], metavar=('W', 'H'))
    parser.add_argument('--views', default='3d,bev', help="views drawn in the 'demo' column (tools/demo.py)")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--repeats', type=int, default=3, help='timed passes per row (the fastest is reported)')
    add_json_option(parser)
    return parser.parse_args(argv)


def make_inputs(out_dir: str, num: int, size) -> dict:
    """``num`` generated PNGs (scenes/frames cycled) → ``{name: K}``."""
    import cv2

    from epropnp_det.apis.demo_images import render_camera_image
    cams = {}
    for i in range(num):
        r = render_camera_image(size[0], size[1], 0.79 * size[0], scene=i % 10, frame=(i // 10) % 2)
        name = f'bench_{i:03d}.png'
        cv2.imwrite(osp.join(out_dir, name), r['img'])
        cams[name] = r['cam2img']
    return cams


def time_device(args, device: str, ckpt: str, cfg_options: dict, folder: str, cams: dict) -> list:
    import torch

    from epropnp_det.apis import EProPnPPredictor, collect_inputs, iter_batches, read_input
    from tools.demo import parse_views, process_batch
    views = parse_views(args.views)
    predictor = EProPnPPredictor(args.config, ckpt, device=device, cfg_options=cfg_options)
    items = collect_inputs([folder])
    demo_args = argparse.Namespace(score_thr=0.3 if args.checkpoint else 0.0, out_dir=tempfile.mkdtemp(),
                                   config=args.config, checkpoint=ckpt, n_std=2.0, rose_bins=24, max_objects=6)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    rows = []
    for bs in args.batch_sizes:
        batches = list(iter_batches(items, bs))
        imgs = [[read_input(it) for it in b] for b in batches]
        ks = [[cams[it.calib_name] for it in b] for b in batches]

        def model_loop():
            for im, k in zip(imgs, ks):
                predictor.predict(im, k)

        def demo_loop():
            for b in batches:
                process_batch(predictor, b, cams, views, demo_args)

        predictor.predict(imgs[0], ks[0])                            # warm-up (not timed)
        process_batch(predictor, batches[0], cams, views, demo_args)
        best = {}
        for _ in range(args.repeats):                                # interleaved; best of the repeats
            for name, loop in (('model', model_loop), ('demo', demo_loop)):
                sync()
                t0 = time.perf_counter()
                loop()
                sync()
                best[name] = min(best.get(name, float('inf')), time.perf_counter() - t0)
        n = len(items)
        rows.append([device, bs, n, f'{n / best["model"]:.2f}', f'{n / best["demo"]:.2f}',
                     f'{1000 * best["demo"] / n:.0f}'])
    shutil.rmtree(demo_args.out_dir, ignore_errors=True)
    return rows


def main(argv=None):
    args = parse_args(argv)
    import torch

    from epropnp_det.utils.runner_cfg import trust_local_checkpoints
    trust_local_checkpoints()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    tmp = tempfile.mkdtemp(prefix='demo_speed_')
    try:
        ckpt, cfg_options = args.checkpoint, None
        if ckpt is None:
            from mmdet3d.registry import MODELS
            from mmengine.config import Config
            from mmengine.registry import init_default_scope

            import epropnp_det.models  # noqa: F401
            init_default_scope('mmdet3d')
            cfg = Config.fromfile(args.config)
            torch.manual_seed(0)
            model = MODELS.build(cfg.model)
            model.init_weights()
            ckpt = osp.join(tmp, 'random.pth')
            torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=cfg.class_names))),
                       ckpt)
            cfg_options = {'model.test_cfg.score_thr': 0.0, 'model.test_cfg.max_per_img': 30}
        folder = osp.join(tmp, 'images')
        os.makedirs(folder)
        cams = make_inputs(folder, args.num_images, args.image_size)
        rows = []
        for device in devices:
            rows += time_device(args, device, ckpt, cfg_options, folder, cams)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    w, h = args.image_size
    print(format_table(['device', 'batch', 'images', 'model img/s', 'demo img/s', 'demo ms/img'], rows,
                       title=f'tools/demo.py speed: {osp.basename(args.config)}, {w}x{h} inputs, views '
                             f'{args.views or "none"}, torch threads {torch.get_num_threads()}, '
                             f'load average {os.getloadavg()[0]:.1f} at the end'
                             + ('' if args.checkpoint else ', random weights, 30 boxes/img')))
    # same row fields as docs/results/demo_speed_*.json (read by tools/make_readme_tables.py)
    write_json(args.json, [dict(device=r[0], batch=int(r[1]), images=int(r[2]), model_img_s=float(r[3]),
                                demo_img_s=float(r[4]), demo_ms_per_img=float(r[5])) for r in rows], argv,
               config=args.config, image_size=list(args.image_size), views=args.views,
               random_weights=not args.checkpoint)
    return rows


if __name__ == '__main__':
    main()
