"""Test (evaluate) a checkpoint with an mmengine Runner (same interface as mmdet3d 1.4's ``tools/test.py``).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--tta] [--cfg-options k=v ...]
                                          [--launcher none|pytorch|slurm|mpi]

nuScenes metrics (NDS/mAP) come from the config's ``test_evaluator``. For a submission file only:
``--cfg-options test_evaluator.format_only=True test_evaluator.jsonfile_prefix=DIR``.

``--show-dir DIR`` writes every test image with its projected predicted boxes (score > ``--score-thr``) to
``<work_dir>/<timestamp>/DIR/<image name>`` (mmdet3d's ``Det3DVisualizationHook`` with ``--task mono_det``);
``--show`` displays them instead and needs a display. An image without any prediction above the threshold gets no
file (the hook's behaviour).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))  # run from a clone without installing

from mmengine.config import ConfigDict, DictAction  # noqa: E402

from epropnp_det.utils.dist_env import adapt_dist_cfg_for_device, destroy_process_group_if_initialized  # noqa: E402
from epropnp_det.utils.runner_cfg import build_runner, load_runner_cfg  # noqa: E402

VIS_TASKS = ['mono_det', 'multi-view_det', 'lidar_det', 'lidar_seg', 'multi-modality_det']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) an EPro-PnP-Det (or any mmdet3d) model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='directory (inside the timestamped work dir) for drawn predictions')
    parser.add_argument('--score-thr', type=float, default=0.1, help='bbox score threshold for drawing')
    parser.add_argument('--task', type=str, choices=VIS_TASKS, default='mono_det', help='visualisation task')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_evaluator.format_only=True')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (horizontal flip)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError('--show/--show-dir need `default_hooks.visualization` (Det3DVisualizationHook) '
                           f'in {args.config}')
    vis = default_hooks['visualization']
    vis['draw'] = True
    if args.show and sys.platform.startswith('linux') and not (os.environ.get('DISPLAY')
                                                               or os.environ.get('WAYLAND_DISPLAY')):
        raise RuntimeError('--show opens a window but there is no display (DISPLAY is not set); use --show-dir DIR '
                           'to write the drawn images instead')
    if args.show:
        vis['show'] = True
        vis['wait_time'] = args.wait_time
    if args.show_dir:
        vis['test_out_dir'] = args.show_dir
    vis['vis_task'] = args.task
    vis['score_thr'] = args.score_thr
    return cfg


def build_cfg(args):
    cfg = load_runner_cfg(args.config, args.launcher, args.cfg_options, args.work_dir)

    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise RuntimeError(f'--tta needs {missing} in the config {args.config}')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = ConfigDict(cfg.tta_model)

    adapt_dist_cfg_for_device(cfg, args.launcher)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    runner = build_runner(cfg)
    try:
        runner.test()
    finally:
        destroy_process_group_if_initialized()


if __name__ == '__main__':
    main()
