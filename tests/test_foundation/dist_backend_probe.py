"""A hook for the distributed detector test: every rank writes the process group it actually runs in.

``torch.distributed.get_backend()`` is what mmengine's ``init_dist`` initialised (gloo on CPU, NCCL with CUDA),
not the config value; the hook is registered in mmengine's root ``HOOKS`` (found from the mmdet3d scope too).
"""
import json
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from tests.helpers.toy_dist import process_group_info


@HOOKS.register_module()
class DistBackendProbeHook(Hook):
    """After training, writes ``<work_dir>/backend_rank<r>.json``: initialised, rank, world size, backend,
    wrapper class and the device of the first parameter."""

    def after_train(self, runner):
        info = process_group_info()
        info['wrapper'] = type(runner.model).__name__
        info['param_device'] = str(next(runner.model.parameters()).device)
        with open(osp.join(runner.work_dir, f'backend_rank{info["rank"]}.json'), 'w') as f:
            json.dump(info, f)
