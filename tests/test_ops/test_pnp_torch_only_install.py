"""The PnP layer installs and runs in an environment that has only torch (``pnp_only``).

The test builds the layer's wheel from a copy of the sources laid out as in the repository (the documented
command is ``pip install ./pnp_only``; here the build and the install are split so that nothing is
downloaded and nothing is written into the checkout), creates a virtual environment **without** system site
packages, makes the main environment's torch (and only torch with its own requirements: sympy, networkx, jinja2,
...) visible through a ``.pth`` file pointing at a directory of symbolic links, installs the wheel there with pip
(which must find torch already installed), checks that numpy and the OpenMMLab stack cannot be imported, and runs
the Python snippets of ``docs/pnp_layer.md`` and of the README's PnP-layer section in that environment.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = ('numpy', 'mmcv', 'mmengine', 'mmdet', 'mmdet3d', 'nuscenes')


def _requirement_closure(name: str) -> set:
    seen, todo = {}, [name]
    while todo:
        n = todo.pop()
        key = n.lower().replace('_', '-')
        if key in seen:
            continue
        dist = metadata.distribution(n)
        seen[key] = dist
        for req in dist.requires or []:
            if 'extra ==' not in req:
                todo.append(re.split(r'[ ;<>=!~\[(]', req, maxsplit=1)[0])
    return set(seen.values())


def _torch_only_site(dest: str) -> None:
    """Symbolic links to torch, its requirements and their metadata (top-level entries of each RECORD)."""
    os.makedirs(dest)
    for dist in _requirement_closure('torch'):
        base = str(dist.locate_file(''))
        tops = {str(f).split('/')[0] for f in dist.files or [] if not str(f).startswith('..')}
        for top in tops:
            src = os.path.join(base, top)
            if os.path.exists(src) and not top.endswith('.pth') and top != '__pycache__' \
                    and not os.path.exists(os.path.join(dest, top)):
                os.symlink(src, os.path.join(dest, top))


def _python_blocks(path: str, heading: str = None) -> list:
    with open(path) as f:
        text = f.read()
    if heading is not None:  # only the section under this heading (up to the next heading of its level)
        start = text.index(heading)
        level = heading.split(' ')[0]
        nxt = re.search(rf'^{level} ', text[start + len(heading):], flags=re.M)
        text = text[start:start + len(heading) + (nxt.start() if nxt else len(text))]
    return re.findall(r'```python\n(.*?)```', text, flags=re.S)


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope='module')
def torch_only_env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('torch_only'))
    # 1. the sources as laid out in the repository: the layer, the two __init__ above it, pnp_only/
    src = os.path.join(tmp, 'src')
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', 'build', '*.egg-info')
    shutil.copytree(os.path.join(REPO, 'epropnp_det', 'ops'), os.path.join(src, 'epropnp_det', 'ops'), ignore=ignore)
    for name in ('__init__.py', 'version.py'):
        shutil.copy(os.path.join(REPO, 'epropnp_det', name), os.path.join(src, 'epropnp_det', name))
    shutil.copytree(os.path.join(REPO, 'pnp_only'), os.path.join(src, 'pnp_only'), ignore=ignore)
    wheels = os.path.join(tmp, 'wheels')
    res = _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q',
                '-w', wheels, os.path.join(src, 'pnp_only')])
    assert res.returncode == 0, res.stdout + res.stderr
    # 2. a fresh venv without system site packages; torch (and its requirements) only, through a .pth file
    venv = os.path.join(tmp, 'venv')
    res = _run([sys.executable, '-m', 'venv', '--without-pip', venv])
    assert res.returncode == 0, res.stderr
    py = os.path.join(venv, 'bin', 'python')
    purelib = _run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip()
    _torch_only_site(os.path.join(tmp, 'torch_site'))
    with open(os.path.join(purelib, 'torch_only.pth'), 'w') as f:
        f.write(os.path.join(tmp, 'torch_site') + '\n')
    # 3. install the layer with pip into that environment. --no-deps: torch is there, but the main environment's
    # torch itself does not satisfy its own metadata (tools/install.sh keeps setuptools<70 for mmcv's build, torch
    # asks for >=77), so pip's resolver would refuse; the wheel's only requirement is checked below instead
    res = _run([sys.executable, '-m', 'pip', '--python', py, 'install', '--no-index', '--no-deps', '--find-links',
                wheels, '-q', 'epropnp-pnp'])
    assert res.returncode == 0, res.stdout + res.stderr
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    return py, env, os.path.join(tmp, 'work')


def test_only_torch_is_there(torch_only_env):
    py, env, cwd = torch_only_env
    os.makedirs(cwd, exist_ok=True)
    code = ('import importlib.util, importlib.metadata as md, epropnp_det.ops.pnp as pnp, torch\n'
            'print(md.requires("epropnp-pnp"))\n'
            f'print([m for m in {FORBIDDEN!r} if importlib.util.find_spec(m) is not None])\n'
            'print(pnp.__file__)\n'
            'print(importlib.util.find_spec("epropnp_det.models"))')
    res = _run([py, '-c', code], env=env, cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    requires, forbidden, pnp_file, models = res.stdout.strip().splitlines()[-4:]
    assert requires == "['torch>=1.13']", requires  # torch is the only dependency
    assert forbidden == '[]', forbidden
    assert pnp_file.startswith(os.path.dirname(os.path.dirname(py))), pnp_file  # installed, not the checkout
    assert models == 'None'  # only the layer was installed
    assert sysconfig.get_paths()['purelib'] not in res.stdout


@pytest.mark.parametrize('doc,heading', [('docs/pnp_layer.md', None),
                                         ('README.md', '## Use the EPro-PnP layer in your own model')])
def test_snippets_run_in_the_torch_only_env(torch_only_env, doc, heading):
    py, env, cwd = torch_only_env
    os.makedirs(cwd, exist_ok=True)
    blocks = _python_blocks(os.path.join(REPO, doc), heading)
    assert len(blocks) == 1
    res = _run([py, '-c', blocks[0]], env=env, cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr


def test_native_kernels_build_in_the_torch_only_env(torch_only_env, tmp_path):
    """The wheel carries the native kernels' sources; they compile into a fresh cache there and serve a solve."""
    py, env, cwd = torch_only_env
    os.makedirs(cwd, exist_ok=True)
    code = ('import torch\n'
            'from epropnp_det.ops.pnp import _native, solve_pnp, CameraParams\n'
            'from epropnp_det.ops.pnp.testing import make_problems\n'
            'assert _native.lib() is not None\n'
            'p = make_problems(N=4, n=32, generator=torch.Generator().manual_seed(0))\n'
            'cam = CameraParams.from_image_shape(p["cam_mats"], p["img_hw"])\n'
            'g = torch.Generator().manual_seed(0)\n'
            'sol = solve_pnp(p["x3d"], p["x2d"], torch.ones_like(p["x2d"]), cam, generator=g)\n'
            'print(float((sol.pose[:, :3] - p["pose_gt"][:, :3]).norm(dim=-1).median()))\n'
            'import os; print(sorted(os.listdir(os.environ["EPROPNP_NATIVE_CACHE"])))')
    res = _run([py, '-c', code], env={**env, 'EPROPNP_NATIVE_CACHE': str(tmp_path / 'cache')}, cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    err, files = res.stdout.strip().splitlines()[-2:]
    assert float(err) < 0.5
    assert files.startswith("['epropnp_pnp_cpu_") and files.endswith(".so']"), files
