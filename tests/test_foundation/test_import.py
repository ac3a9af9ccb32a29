"""The package imports quickly, and the PnP layer imports with torch alone."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MM_PACKAGES = ('mmcv', 'mmdet', 'mmdet3d', 'mmengine')


def _run(code):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_pnp_ops_import_torch_only():
    code = ('import sys, json; import epropnp_det.ops.pnp; '
            f'print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {MM_PACKAGES!r})))')
    loaded = json.loads(_run(code).strip().splitlines()[-1])
    assert loaded == [], f'import epropnp_det.ops.pnp pulled in {loaded}'


def test_top_level_import_is_light():
    code = ('import sys, json; import epropnp_det; '
            f'print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {MM_PACKAGES + ("torch",)!r})))')
    loaded = json.loads(_run(code).strip().splitlines()[-1])
    assert loaded == []


def test_full_package_imports():
    """Every mm-dependent subpackage imports in a fresh interpreter (registering its modules). The import *time*
    is measured by ``tools/benchmarks/import_time.py`` (timed assertions are flaky on shared CI machines)."""
    code = ('from tests.test_foundation.test_registry_build import import_all_subpackages; '
            'names = import_all_subpackages(); print(len(names))')
    n = int(_run(code).strip().splitlines()[-1])
    assert n >= 5  # datasets, engine, evaluation, models, structures, utils, visualization
