"""Train a detector with an mmengine Runner (same interface as mmdet3d 1.4's ``tools/train.py``).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr] [--resume [CKPT]]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Multi-process: ``bash tools/dist_train.sh CONFIG N`` (torchrun; gloo on CPU, NCCL on GPUs).
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))  # run from a clone without installing

from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from epropnp_det.utils.dist_env import adapt_dist_cfg_for_device, destroy_process_group_if_initialized  # noqa: E402
from epropnp_det.utils.runner_cfg import build_runner, load_runner_cfg  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an EPro-PnP-Det (or any mmdet3d) model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (the PnP layer always runs in fp32)')
    parser.add_argument('--sync_bn', choices=['none', 'torch', 'mmcv'], default='none',
                        help='convert all BatchNorm layers in the model to SyncBatchNorm')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT; without a value, from the latest checkpoint in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    """Loads the config and applies the command-line options (kept separate so tests can check it)."""
    cfg = load_runner_cfg(args.config, args.launcher, args.cfg_options, args.work_dir)

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'EProPnPAmpOptimWrapper'):
            print_log('AMP training is already enabled in your config.', logger='current', level=logging.WARNING)
        else:
            # the NaN-safe wrapper's AMP twin (mmengine's AmpOptimWrapper would drop the NaN-safe update);
            # fp16 with a dynamic loss scale on CUDA, bf16 on the CPU; `--cfg-options optim_wrapper.dtype=bfloat16`
            # switches CUDA to bf16
            import torch
            cfg.optim_wrapper.type = 'EProPnPAmpOptimWrapper'
            cfg.optim_wrapper.setdefault('dtype', 'float16' if torch.cuda.is_available() else 'bfloat16')
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.sync_bn != 'none':
        cfg.sync_bn = args.sync_bn

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, base_batch_size=...)` '
                               f'in the config {args.config}')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    adapt_dist_cfg_for_device(cfg, args.launcher)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    runner = build_runner(cfg)
    try:
        runner.train()
    finally:
        destroy_process_group_if_initialized()


if __name__ == '__main__':
    main()
