"""Host synchronisations of one training iteration of the embedded default along the code path a GPU takes
(issue: at most 5 per step, each justified at its line). Counted on the CPU with ``OpCounter`` under
:func:`~epropnp_det.utils.device_path.emulate_device_path` (and the PnP solver's GPU sampler), as
``tools/benchmarks/step_overhead.py --device-path`` does; the data preprocessor is outside the counted window."""
import linecache
import os

import pytest
import torch

from epropnp_det.ops.pnp import _native, solver
from epropnp_det.utils.device_path import emulate_device_path, on_device_path
from epropnp_det.utils.op_counter import OpCounter

from ._helpers import build_detector
from .test_epropnp_det import _data
from .test_v2_synthetic import _data as _data_v2


def _justified(site: str) -> bool:
    """The sync's line or the two lines above it carry a comment that says it reads the host on purpose."""
    path, line = site.rsplit(':', 1)
    path = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    text = ' '.join(linecache.getline(path, int(line) - k) for k in range(3)).lower()
    return '#' in text and ('host sync' in text or 'host read' in text)


def test_device_path_switch():
    t = torch.zeros(1)
    assert not on_device_path(t)
    with emulate_device_path():
        assert on_device_path(t)
    assert not on_device_path(t)


@pytest.mark.parametrize('config', ['epropnp_det_r18_synthetic.py', 'epropnp_det_r18_synthetic_v2.py'])
def test_train_step_syncs_on_the_device_path(monkeypatch, config):
    """The embedded default (v1) and v2 (depth branch, LiDAR RoI regression)."""
    model = build_detector('configs/' + config, pretrained=False).train()
    data = (_data_v2 if 'v2' in config else _data)(model, True)
    monkeypatch.setattr(solver, '_use_guide_table', lambda device: False)
    monkeypatch.setattr(solver, '_use_stacked_gn', lambda device: True)
    monkeypatch.setattr(_native, 'enabled', lambda *tensors, backend='default': False)  # CPU-only C++ kernels
    with emulate_device_path(), OpCounter() as c:
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
    sites = [s for _, s in c.syncs]
    assert len(sites) <= 5, c.sync_sites()
    unjustified = [s for s in sites if not _justified(s)]
    assert not unjustified, unjustified
    # the RoI branch ran (its one read is among the sites) and the losses are finite
    assert any('roi_aux_branch.py' in s for s in sites), sites
    assert torch.isfinite(loss)
    # the CPU path of the same step reads more (the CPU-only branches' host reads are free there)
    monkeypatch.undo()
    with OpCounter() as cpu:
        loss_cpu, _ = model.parse_losses(model(**data, mode='loss'))
    assert cpu.num_syncs > len(sites) and torch.isfinite(loss_cpu)


@pytest.mark.gpu
@pytest.mark.parametrize('config', ['epropnp_det_r18_synthetic.py', 'epropnp_det_r18_synthetic_v2.py'])
def test_train_step_syncs_on_cuda(config):
    """The same count on a GPU, where only reads of device tensors synchronise (``host_is_device=False``)."""
    model = build_detector('configs/' + config, pretrained=False).cuda().train()
    data = (_data_v2 if 'v2' in config else _data)(model, True)
    for _ in range(2):  # the first iteration captures the PnP layer's CUDA graphs
        with OpCounter(host_is_device=False) as c:
            loss, _ = model.parse_losses(model(**data, mode='loss'))
            loss.backward()
    sites = [s for _, s in c.syncs]
    assert len(sites) <= 5, c.sync_sites()
    assert not [s for s in sites if not _justified(s)], sites
    assert torch.isfinite(loss)
