"""Exact resume: a CPU training run of the r18 synthetic config killed with SIGKILL after a
checkpoint and restarted with ``tools/train.py --resume`` records, for every iteration after the checkpoint, the
same losses, learning rate and data order (sample indices and flips of every batch) as an uninterrupted run.

mmengine's resume restores the model, optimizer, schedulers, message hub and iteration, and its
``IterBasedTrainLoop`` replays the dataloader up to the checkpoint (so the sampler order and the pipeline's numpy
draws, the random flip, come back). It does not restore torch's RNG, which the model draws from (dropout, object
sampler, Monte-Carlo pose samples): ``EProPnPRestoreTorchRNGHook`` (default runtime config) saves it in the
checkpoint and puts it back before the first iteration after a resume.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'epropnp_det_r18_synthetic.py')


@HOOKS.register_module(force=True)
class ResumeProbeHook(Hook):
    """Appends ``{iter, lr, losses, samples: [(sample_idx, flip)]}`` per training iteration to ``probe.jsonl``."""

    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        samples = [(int(s.sample_idx), bool(s.flip)) for s in data_batch['data_samples']]
        lr = runner.optim_wrapper.get_lr()['lr'][0]
        row = dict(iter=runner.iter + 1, lr=lr, samples=samples,
                   losses={k: float(v) for k, v in sorted(outputs.items())})
        with open(osp.join(runner.work_dir, 'probe.jsonl'), 'a') as f:
            f.write(json.dumps(row) + '\n')


def _write_config(tmp_path, root) -> str:
    """The r18 synthetic config on the tiny generated root: 8 iterations of batch 2, lr warm-up to 3 and decays at
    5 and 7, a checkpoint every 4 iterations, deterministic, data loaded in the main process."""
    cfg = tmp_path / 'resume_cfg.py'
    cfg.write_text(f"""_base_ = [{CONFIG!r}]
custom_imports = dict(imports=['epropnp_det.models', 'epropnp_det.datasets', 'epropnp_det.evaluation',
                               'epropnp_det.engine', 'tests.test_resume'], allow_failed_imports=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=8, milestones=[5, 7], gamma=0.1)]
train_cfg = dict(max_iters=8, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=3), logger=dict(interval=1))
log_processor = dict(window_size=1)
custom_hooks = [dict(type='EProPnPRestoreTorchRNGHook'), dict(type='ResumeProbeHook')]
randomness = dict(seed=0, deterministic=True)
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root={root!r}))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
val_evaluator = dict(data_root={root!r}, ann_file={root + '/nuscenes_infos_val.pkl'!r})
test_evaluator = val_evaluator
""")
    return str(cfg)


def _cmd(cfg, work_dir, resume=False):
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg, '--work-dir', str(work_dir)]
    return cmd + (['--resume'] if resume else [])


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')


def _probe(work_dir):
    return {r['iter']: r for r in map(json.loads, open(osp.join(work_dir, 'probe.jsonl')))}


@pytest.mark.slow
def test_sigkill_and_resume_is_exact(tmp_path):
    from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root
    cfg = _write_config(tmp_path, tiny_nuscenes_root())
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    out = subprocess.run(_cmd(cfg, full), capture_output=True, text=True, env=_env(), cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = _probe(full)
    assert sorted(ref) == list(range(1, 9))

    proc = subprocess.Popen(_cmd(cfg, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            cwd=REPO)
    last = killed / 'last_checkpoint'
    t0 = time.time()
    while not (last.exists() and last.read_text().strip().endswith('iter_4.pth')):
        assert proc.poll() is None, 'the run ended before its first checkpoint'
        assert time.time() - t0 < 900
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _probe(killed)
    assert max(done) < 8, 'killed too late to test anything'

    os.remove(killed / 'probe.jsonl')
    out = subprocess.run(_cmd(cfg, killed, resume=True), capture_output=True, text=True, env=_env(), cwd=REPO,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = _probe(killed)
    assert sorted(resumed) == [5, 6, 7, 8]
    for it in (5, 6, 7, 8):
        assert resumed[it]['samples'] == ref[it]['samples'], it
        assert resumed[it]['lr'] == ref[it]['lr'], it
        assert resumed[it]['losses'] == ref[it]['losses'], (it, resumed[it]['losses'], ref[it]['losses'])
    # the compared steps span both lr decays, and every step drew a different batch
    assert len({ref[it]['lr'] for it in (5, 6, 7, 8)}) >= 2
    assert len({json.dumps(ref[it]['samples']) for it in (5, 6, 7, 8)}) == 4
