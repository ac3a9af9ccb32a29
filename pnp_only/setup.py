"""Builds ``epropnp-pnp``: the repository's ``epropnp_det/ops/pnp`` (and the two package ``__init__`` files above
it), nothing else. Metadata is in ``pyproject.toml``; this file only maps the packages to the sources one
directory up, so there is one copy of the code."""
import os.path as osp

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))
SRC = osp.relpath(osp.join(HERE, '..', 'epropnp_det'), HERE)
PACKAGES = ['epropnp_det', 'epropnp_det.ops', 'epropnp_det.ops.pnp']
# modules of the top-level package that the layer needs (the rest of the top level imports OpenMMLab)
TOP_LEVEL = {'__init__', 'version'}


def get_version():
    scope = {}
    with open(osp.join(HERE, SRC, 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


class BuildPyLayerOnly(build_py):
    def find_package_modules(self, package, package_dir):
        mods = super().find_package_modules(package, package_dir)
        if package == 'epropnp_det':
            mods = [m for m in mods if m[1] in TOP_LEVEL]
        return mods


setup(
    version=get_version(),
    packages=PACKAGES,
    package_dir={'epropnp_det': SRC},
    # the native CPU kernels' sources, compiled on first use (epropnp_det/ops/pnp/_native.py)
    package_data={'epropnp_det.ops.pnp': ['csrc/*.cpp', 'csrc/*.h']},
    cmdclass={'build_py': BuildPyLayerOnly},
    zip_safe=False,
)
