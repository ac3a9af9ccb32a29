"""Training hooks.

``EProPnPLossRecorderHook`` writes every training iteration's log variables, averaged over ranks, to a JSON-lines
file. mmengine's logger only shows rank 0's local values; comparing a multi-process run with a single-process one
(``tools/benchmarks/dist_reproduction.py``) needs the cross-rank mean, which equals the single-process value for
every loss normalised by an all-reduced count (DDP averages the gradients the same way).
"""
import json
import os.path as osp
from typing import Optional, Sequence

import torch
from mmdet3d.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook

__all__ = ['EProPnPLossRecorderHook']


@HOOKS.register_module()
class EProPnPLossRecorderHook(Hook):
    """Appends ``{"iter": i, "<key>": mean over ranks, ...}`` per training iteration to ``out_file``.

    Args:
        out_file: path of the JSON-lines file; relative paths are inside the run's ``work_dir``. Truncated when
            training starts.
        keys: log-variable names to record (default: all that the model returned, which must be the same set on
            every rank).
    """

    priority = 'LOW'

    def __init__(self, out_file: str = 'loss_record.jsonl', keys: Optional[Sequence[str]] = None):
        self.out_file, self.keys = out_file, None if keys is None else list(keys)
        self._path = None

    def before_train(self, runner) -> None:
        self._path = self.out_file if osp.isabs(self.out_file) else osp.join(runner.work_dir, self.out_file)
        if is_main_process():
            open(self._path, 'w').close()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        keys = sorted(outputs) if self.keys is None else self.keys
        missing = [k for k in keys if k not in outputs]
        if missing:
            raise KeyError(f'EProPnPLossRecorderHook: log variables {missing} not returned by the model '
                           f'(got {sorted(outputs)})')
        vals = torch.tensor([float(outputs[k]) for k in keys], dtype=torch.float64)
        if get_world_size() > 1:
            all_reduce(vals, op='mean')
        if is_main_process():
            row = dict(iter=runner.iter + 1, **{k: v for k, v in zip(keys, vals.tolist())})
            with open(self._path, 'a') as f:
                f.write(json.dumps(row) + '\n')


@HOOKS.register_module()
class EProPnPRestoreTorchRNGHook(Hook):
    """Saves torch's CPU (and CUDA) RNG state in every checkpoint and restores it before the first training
    iteration after a resume, so that ``--resume`` continues exactly (same losses as an uninterrupted run).

    Why: mmengine's checkpoints restore model, optimizer, schedulers and the dataloader order (the pipeline draws
    from numpy, which mmengine replays), but not torch's RNG, from which the model draws (dropout, the object
    sampler, RSLM and the Monte-Carlo pose samples). Restoring happens after mmengine has replayed the dataloader.
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(cpu=torch.get_rng_state())
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint['torch_rng_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get('torch_rng_state')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            torch.set_rng_state(self._pending['cpu'])
            if 'cuda' in self._pending and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._pending['cuda'])
            self._pending = None
