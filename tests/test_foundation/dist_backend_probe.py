"""A hook for the distributed detector test: every rank writes the process group it actually runs in.

``torch.distributed.get_backend()`` is what mmengine's ``init_dist`` initialised (gloo on CPU, NCCL with CUDA),
not the config value; the hook is registered in mmengine's root ``HOOKS`` (found from the mmdet3d scope too).
"""
import json
import os.path as osp

import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DistBackendProbeHook(Hook):
    """After training, writes ``<work_dir>/backend_rank<r>.json``: initialised, rank, world size, backend,
    wrapper class and the device of the first parameter."""

    def after_train(self, runner):
        info = dict(initialized=dist.is_available() and dist.is_initialized())
        if info['initialized']:
            info.update(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend())
        else:
            info.update(rank=0, world_size=1, backend=None)
        info['wrapper'] = type(runner.model).__name__
        info['param_device'] = str(next(runner.model.parameters()).device)
        with open(osp.join(runner.work_dir, f'backend_rank{info["rank"]}.json'), 'w') as f:
            json.dump(info, f)
