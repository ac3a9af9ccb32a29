"""Every module the package registers into the mm registries builds from a minimal config.

A registered name builds from ``dict(type=name, **MINIMAL_CFGS.get(name, {}))``; entries in ``MINIMAL_CFGS`` may
also be callables ``f(registry, name) -> object`` for modules that need live objects (e.g. optim wrappers).
Adding a registered module without a working minimal config fails this test on purpose.
"""
import importlib
import pkgutil

import pytest

import epropnp_det

# Subpackages that must not need mm* (torch-only ops, data generator): not scanned for registrations.
NON_MM_SUBPACKAGES = {'ops', 'synthetic', 'version'}


def _optim_wrapper_builder(registry, name):
    import torch
    model = torch.nn.Linear(2, 1)
    return registry.build(dict(type=name, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))


def _small_detector_cfg():
    import os

    from mmengine.config import Config
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    model = Config.fromfile(os.path.join(repo, 'configs', '_base_', 'models', 'epropnp_det_r18_cpu.py')).model
    model.pop('type')
    return model


def _detector_builder(registry, name):
    return registry.build(dict(type=name, **_small_detector_cfg()))


def _tta_builder(registry, name):
    return registry.build(dict(type=name, module=dict(type='EProPnPDet', **_small_detector_cfg())))


# name -> extra kwargs (dict) or builder callable. Keep entries minimal.
MINIMAL_CFGS = {
    'EProPnPOptimWrapper': _optim_wrapper_builder,
    'EProPnPAmpOptimWrapper': _optim_wrapper_builder,
    'EProPnPNuScenesDataset': dict(lazy_init=True),
    'EProPnPDet': _detector_builder,
    'EProPnPFlipTTAModel': _tta_builder,
}


def import_all_subpackages():
    """Imports every mm-dependent subpackage (which registers its modules) and returns the registered names."""
    names = []
    for info in pkgutil.iter_modules(epropnp_det.__path__):
        if info.name in NON_MM_SUBPACKAGES:
            continue
        names.append(importlib.import_module(f'epropnp_det.{info.name}').__name__)
    return names


def _registries():
    from mmdet3d import registry as r3d
    from mmengine import registry as reng
    regs = {}
    for mod in (r3d, reng):
        for attr in dir(mod):
            obj = getattr(mod, attr)
            if isinstance(obj, reng.Registry):
                regs[f'{mod.__name__}.{attr}'] = obj
    return regs


def collect_registered():
    """Returns sorted ``[(registry key, registry, name)]`` of all modules defined in ``epropnp_det``."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')  # as every config does (default_scope = 'mmdet3d')
    import_all_subpackages()
    found = {}
    for key, reg in _registries().items():
        for name, cls in reg.module_dict.items():
            if getattr(cls, '__module__', '').startswith('epropnp_det'):
                found[(reg.scope, reg.name, name)] = (key, reg, name)
    return sorted(found.values(), key=lambda item: item[0] + item[2])


REGISTERED = collect_registered()


def test_registrations_found_or_package_empty():
    # Sanity check of the discovery itself: each entry names a class defined inside the package.
    for key, reg, name in REGISTERED:
        assert reg.get(name) is not None, f'{key}: {name} is listed but cannot be resolved'


@pytest.mark.parametrize('key,registry,name', REGISTERED, ids=[f'{k.split(".")[-1]}:{n}' for k, _, n in REGISTERED])
def test_registered_module_builds(key, registry, name):
    spec = MINIMAL_CFGS.get(name, {})
    if callable(spec):
        obj = spec(registry, name)
    else:
        obj = registry.build(dict(type=name, **spec))
    assert obj is not None
    assert type(obj).__name__ == name or isinstance(obj, registry.get(name))
