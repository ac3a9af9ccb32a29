"""Installs the ``epropnp_det`` plugin package (``pip install -e .`` works).

torch is deliberately not a hard requirement here: ``tools/install.sh`` installs the right build for the
machine (CPU wheel here, never replacing an existing CUDA torch), and mmcv must be compiled against it.
"""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def parse_requirements(fname):
    """Reads ``requirements/<fname>`` and returns its requirement lines (comments and ``-r`` skipped)."""
    reqs = []
    with open(osp.join(HERE, 'requirements', fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def get_version():
    scope = {}
    with open(osp.join(HERE, 'epropnp_det', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='epropnp_det',
    version=get_version(),
    description='EPro-PnP-Det (CVPR 2022) re-implemented as an mmdetection3d 1.x plugin',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    package_data={'epropnp_det.ops.pnp': ['csrc/*.cpp', 'csrc/*.h']},  # native CPU kernels, built on first use
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'mim': parse_requirements('mminstall.txt'),
        'tests': parse_requirements('tests.txt'),
        'all': parse_requirements('mminstall.txt') + parse_requirements('tests.txt'),
    },
    zip_safe=False,
)
