"""Draws a trained model's predictions on test-split images: projected 3D boxes and a BEV view per image.

    python tools/draw_predictions.py CONFIG CHECKPOINT [--out-dir DIR] [--num-images 6] [--start 0]
                                     [--score-thr 0.3] [--device cpu] [--orient-hist K [--rose-bins 24]
                                     [--pose-density]] [--depth] [--seed 0]

Writes ``<out-dir>/<camera image stem>_3d.png`` (predictions orange, ground truth green) and ``..._bev.png``
(camera frame seen from above; ground truth green, predictions blue, heading lines) plus one side-by-side
``..._panel.png``. Ground truth comes from the dataset's evaluation annotations (after the dataset's filters).

``--orient-hist K`` (docs/method.md §9 'mc', §10.17): the head draws K Monte-Carlo (AMIS) pose samples per kept
detection (``test_cfg.mc_samples = K``, seeded by ``--seed``; K must be a multiple of the PnP layer's ``num_iter``) and
the BEV view shows, around each predicted box, a polar histogram of the sampled yaw relative to the predicted yaw;
with ``--pose-density`` it is also shaded by the samples' position density (weights × 2D score, as the original).
``--depth`` (v2 models with a depth branch, docs/method.md §10.16): also writes ``..._depth.png``, the dense depth
prediction as ``255·2/max(depth, 2)`` on the network input (after resize / crop).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from tqdm import tqdm  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', default='work_dirs/vis')
    parser.add_argument('--num-images', type=int, default=6, help='how many consecutive test images')
    parser.add_argument('--start', type=int, default=0, help='index of the first test image')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--orient-hist', type=int, default=0, metavar='K',
                        help='Monte-Carlo pose samples per detection for the BEV yaw histograms (0: off)')
    parser.add_argument('--rose-bins', type=int, default=24, help='bins of the yaw histograms')
    parser.add_argument('--pose-density', action='store_true',
                        help='with --orient-hist: also shade the BEV by the sampled positions')
    parser.add_argument('--depth', action='store_true', help='also draw the dense depth view (v2 depth branch)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the Monte-Carlo pose samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def class_names(cfg):
    meta = cfg.test_dataloader.dataset.get('metainfo', {})
    return list(meta.get('classes', []))


def configure_model(cfg, args):
    """Test-time switches of the head from the drawing flags (the config file is not modified)."""
    test_cfg = cfg.model.setdefault('test_cfg', {})
    if args.orient_hist:
        test_cfg['mc_samples'] = int(args.orient_hist)
        test_cfg['mc_seed'] = int(args.seed)
    if args.depth:
        test_cfg['pred_depth'] = True
    return cfg


def draw_item(img, pred, gt_boxes, cam2img, names, score_thr, rose_bins=24, pose_density=False):
    """Returns (image with boxes, BEV) for one camera image; boxes in the model convention. With
    ``pred.pose_samples`` (head ``test_cfg.mc_samples > 0``) the BEV view gets the yaw histograms."""
    from epropnp_det.structures.boxes import cam_boxes_to_model
    from epropnp_det.visualization import draw_bev, draw_boxes_3d
    keep = pred.scores_3d >= score_thr
    boxes, _ = cam_boxes_to_model(pred.bboxes_3d[keep]) if keep.any() else (torch.zeros(0, 7), None)
    samples = weights = scores_2d = None
    if 'pose_samples' in pred:
        samples, weights = pred.pose_samples[keep], pred.pose_sample_weights[keep]
        scores_2d = pred.scores_2d[keep] if 'scores_2d' in pred else None
    labels = pred.labels_3d[keep].tolist()
    scores = pred.scores_3d[keep].tolist()
    texts = [f'{names[label] if label < len(names) else label} {s:.2f}' for label, s in zip(labels, scores)]
    vis = draw_boxes_3d(img, gt_boxes, cam2img, colors=(60, 200, 60), thickness=1)
    vis = draw_boxes_3d(vis, boxes, cam2img, colors=(0, 140, 255), texts=texts, thickness=2)
    bev = draw_bev(pred_boxes=boxes, gt_boxes=gt_boxes, cam2img=cam2img, image_width=img.shape[1],
                   pred_pose_samples=samples, pred_pose_weights=weights, rose_bins=rose_bins,
                   pose_density=pose_density and samples is not None, pred_scores=scores_2d)
    return vis, bev


def main(argv=None):
    args = parse_args(argv)
    from mmdet3d.apis import init_model
    from mmdet3d.registry import DATASETS
    from mmengine.config import Config

    from epropnp_det.structures.boxes import cam_boxes_to_model
    from epropnp_det.utils.runner_cfg import trust_local_checkpoints
    from epropnp_det.visualization import depth_to_image
    trust_local_checkpoints()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    configure_model(cfg, args)
    model = init_model(cfg, args.checkpoint, device=args.device)
    if args.depth and getattr(model.bbox_head, 'depth_branch', None) is None:
        print('--depth: this model has no depth branch (v2 only); no depth view is drawn')
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    names = class_names(cfg)
    os.makedirs(args.out_dir, exist_ok=True)
    end = min(args.start + args.num_images, len(dataset))
    written = 0
    for idx in tqdm(range(args.start, end), desc='drawing'):
        data = dataset[idx]
        with torch.no_grad():
            result = model.test_step(pseudo_collate([data]))[0]
        info = dataset.get_data_info(idx)
        meta = dict(data['data_samples'].metainfo, **result.metainfo)
        img_path = meta.get('img_path') or info['images'][info['cam_name']]['img_path']
        img = cv2.imread(img_path)
        if img is None:
            raise FileNotFoundError(f'cannot read image {img_path}')
        cam2img = np.asarray(meta['cam2img'], dtype=np.float64)[:3, :3]
        gt = info.get('eval_ann_info', {}).get('gt_bboxes_3d')
        gt_boxes = cam_boxes_to_model(gt)[0] if gt is not None and len(gt) else torch.zeros(0, 7)
        vis, bev = draw_item(img, result.pred_instances_3d, gt_boxes, cam2img, names, args.score_thr,
                             args.rose_bins, args.pose_density)
        stem = osp.splitext(osp.basename(img_path))[0]
        cv2.imwrite(osp.join(args.out_dir, f'{stem}_3d.png'), vis)
        cv2.imwrite(osp.join(args.out_dir, f'{stem}_bev.png'), bev)
        depth = result.pred_instances_3d.metainfo.get('depth_map')
        if args.depth and depth is not None:  # value-map cells → network-input pixels (nearest)
            h, w = meta['img_shape'][:2]
            cv2.imwrite(osp.join(args.out_dir, f'{stem}_depth.png'), depth_to_image(depth, size=(w, h)))
            written += 1
        scale = vis.shape[0] / bev.shape[0]
        bev_small = cv2.resize(bev, (int(bev.shape[1] * scale), vis.shape[0]))
        cv2.imwrite(osp.join(args.out_dir, f'{stem}_panel.png'), np.concatenate([vis, bev_small], axis=1))
        written += 3
    print(f'wrote {written} pictures to {args.out_dir}')


if __name__ == '__main__':
    main()
