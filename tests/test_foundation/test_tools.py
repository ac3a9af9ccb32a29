"""tools/train.py, tools/test.py and tools/dist_train.sh: interface and a real (toy) multi-process run."""
import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, 'tests', 'data', 'configs', 'toy_dist.py')


def _env():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), PYTHON=sys.executable)
    env.pop('PORT', None)
    return env


def _help(script):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', script), '--help'], capture_output=True,
                         text=True, env=_env(), cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_train_help_lists_flags():
    text = _help('train.py')
    for flag in ('--work-dir', '--amp', '--auto-scale-lr', '--resume', '--cfg-options', '--launcher'):
        assert flag in text, flag
    for launcher in ('none', 'pytorch', 'slurm', 'mpi'):
        assert launcher in text


def test_test_help_lists_flags():
    text = _help('test.py')
    for flag in ('--work-dir', '--show-dir', '--tta', '--cfg-options', '--launcher'):
        assert flag in text, flag


def _load_tool(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', os.path.join(REPO, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_cfg_options(tmp_path):
    train = _load_tool('train')
    args = train.parse_args([TOY_CFG, '--resume', '--cfg-options', 'train_dataloader.batch_size=4'])
    cfg = train.build_cfg(args)
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.work_dir == os.path.join('./work_dirs', 'toy_dist')
    args = train.parse_args([TOY_CFG, '--resume', 'x.pth', '--work-dir', str(tmp_path), '--launcher', 'pytorch'])
    cfg = train.build_cfg(args)
    assert cfg.load_from == 'x.pth' and cfg.work_dir == str(tmp_path)
    import torch
    if not torch.cuda.is_available():
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg.device_ids is None
    with pytest.raises(RuntimeError, match='auto_scale_lr'):
        train.build_cfg(train.parse_args([TOY_CFG, '--auto-scale-lr']))


def test_test_cfg_tta_and_show(tmp_path):
    test = _load_tool('test')
    with pytest.raises(RuntimeError, match='tta_model'):
        test.build_cfg(test.parse_args([TOY_CFG, 'ckpt.pth', '--tta']))
    args = test.parse_args([TOY_CFG, 'ckpt.pth', '--work-dir', str(tmp_path)])
    cfg = test.build_cfg(args)
    assert cfg.load_from == 'ckpt.pth'


def test_train_single_process(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'train.py'), TOY_CFG, '--work-dir',
                          str(tmp_path)], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.load(open(tmp_path / 'probe_rank0.json'))
    assert info['world_size'] == 1
    assert os.path.exists(tmp_path / 'epoch_1.pth')


def test_dist_train_two_cpu_processes(tmp_path):
    """torchrun + mmengine initialise a 2-process gloo group (NCCL with CUDA) and DDP keeps ranks in sync."""
    env = _env()
    env['OMP_NUM_THREADS'] = '1'
    out = subprocess.run(['bash', os.path.join(REPO, 'tools', 'dist_train.sh'), TOY_CFG, '2', '--work-dir',
                          str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    infos = [json.load(open(p)) for p in sorted(glob.glob(str(tmp_path / 'probe_rank*.json')))]
    assert [i['rank'] for i in infos] == [0, 1]
    import torch
    expected_backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    for info in infos:
        assert info['initialized'] and info['world_size'] == 2 and info['backend'] == expected_backend
        assert info['wrapper'] == 'MMDistributedDataParallel'
    assert infos[0]['weight'] == pytest.approx(infos[1]['weight'], abs=0)


def test_dist_train_reproduces_single_process_losses(tmp_path):
    """Same total batch, same seed: 2 gloo processes x batch 2 record the same per-iteration loss (mean over ranks,
    ``EProPnPLossRecorderHook``) as 1 process x batch 4, to float rounding (the toy model has no random draws)."""
    env = _env()
    env['OMP_NUM_THREADS'] = '1'
    cfg = tmp_path / 'toy_record.py'
    cfg.write_text(f"_base_ = [{TOY_CFG!r}]\n"
                   "custom_imports = dict(imports=['tests.helpers.toy_dist', 'epropnp_det.engine'])\n"
                   "custom_hooks = [dict(type='mmdet3d.EProPnPLossRecorderHook', out_file='rec.jsonl')]\n")
    records = {}
    for name, cmd, batch in (
            ('single', [sys.executable, os.path.join(REPO, 'tools', 'train.py'), str(cfg)], 4),
            ('dist', ['bash', os.path.join(REPO, 'tools', 'dist_train.sh'), str(cfg), '2'], 2)):
        wd = tmp_path / name
        opts = [f'train_dataloader.batch_size={batch}']
        out = subprocess.run(cmd + ['--work-dir', str(wd), '--cfg-options'] + opts, capture_output=True,
                             text=True, env=env, cwd=REPO, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        records[name] = [json.loads(line) for line in open(wd / 'rec.jsonl')]
    assert [r['iter'] for r in records['single']] == [1, 2, 3, 4]
    assert [r['iter'] for r in records['dist']] == [1, 2, 3, 4]
    single = [r['loss'] for r in records['single']]
    dist = [r['loss'] for r in records['dist']]
    assert len(set(single)) == 4  # a different batch (and weights) each iteration
    assert dist == pytest.approx(single, rel=1e-5)
