"""A tiny model/dataset/hook used by the foundation tests to exercise the distributed tool path.

Registered into mmengine's root registries under names that cannot clash with the package's own modules.
"""
import json
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS


@MODELS.register_module()
class ToyDistProbeModel(BaseModel):
    """Linear regression y = x @ w; loss = MSE."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor', **kwargs):
        inputs = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        pred = self.linear(inputs)[:, 0]
        if mode == 'loss':
            targets = torch.stack(targets) if isinstance(targets, (list, tuple)) else targets
            return dict(loss=((pred - targets) ** 2).mean())
        return pred


@DATASETS.register_module()
class ToyDistProbeDataset(BaseDataset):
    """16 deterministic samples."""

    def __init__(self, **kwargs):
        super().__init__(serialize_data=False, lazy_init=False, **kwargs)

    def load_data_list(self):
        gen = torch.Generator().manual_seed(0)
        xs = torch.randn(16, 4, generator=gen)
        ys = xs @ torch.tensor([1., -2., 0.5, 3.])
        return [dict(inputs=x, targets=y) for x, y in zip(xs, ys)]


def process_group_info() -> dict:
    """``initialized``, ``rank``, ``world_size`` and ``backend`` of the process group this process runs in
    (rank 0 of 1 and backend None without one)."""
    info = dict(initialized=dist.is_available() and dist.is_initialized())
    if info['initialized']:
        info.update(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend())
    else:
        info.update(rank=0, world_size=1, backend=None)
    return info


@HOOKS.register_module()
class ToyDistProbeHook(Hook):
    """Writes, per rank, what the process group looked like and the final parameters (DDP keeps them equal)."""

    def after_train(self, runner):
        info = process_group_info()
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        info['weight'] = model.linear.weight.detach().flatten().tolist()
        info['wrapper'] = type(runner.model).__name__
        with open(osp.join(runner.work_dir, f'probe_rank{info["rank"]}.json'), 'w') as f:
            json.dump(info, f)
