"""Public API of ``epropnp_det.ops.pnp``: torch-only import, exports, and the README snippet executes."""
import os
import re
import subprocess
import sys

import torch

import epropnp_det.ops.pnp as pnp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, 'docs', 'pnp_layer.md')


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def test_import_loads_torch_only():
    res = _run('import sys, epropnp_det.ops.pnp\n'
               'top = {m.split(".")[0] for m in sys.modules}\n'
               'print(sorted(top & {"mmcv", "mmdet", "mmdet3d", "mmengine", "pyro"}))')
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == '[]'


def test_public_names():
    for name in pnp.__all__:
        assert hasattr(pnp, name), name
    for name in ('solve_pnp', 'CameraParams', 'project', 'evaluate_pnp', 'adaptive_huber_delta',
                 'derivative_regularization', 'EProPnP4DoF', 'EProPnP6DoF', 'PoseSamples', 'monte_carlo_kl_loss',
                 'MonteCarloPoseLoss'):
        assert name in pnp.__all__, name


def test_modules_hold_config_only():
    layer = pnp.EProPnP4DoF(mc_samples=64)
    assert list(layer.parameters()) == [] and list(layer.buffers()) == []
    loss = pnp.MonteCarloPoseLoss()
    assert [n for n, _ in loss.named_buffers()] == ['norm_factor']


def test_solve_forwards_to_solve_pnp():
    from epropnp_det.ops.pnp.testing import make_problems
    p = make_problems(4, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = pnp.EProPnP4DoF()
    delta = pnp.adaptive_huber_delta(p['x2d'], p['w2d'])
    a = layer.solve(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=p['pose_gt'], with_cov=True)
    b = pnp.solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], delta, pose_init=p['pose_gt'], with_cov=True,
                      num_iter=10, normalize=True)
    torch.testing.assert_close(a.pose, b.pose)
    torch.testing.assert_close(a.cov, b.cov)


def test_readme_snippet_runs():
    with open(DOC) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    assert len(blocks) == 1
    res = _run(blocks[0])
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'median translation error (m):' in res.stdout
