"""Training iterations on devices and in mixed precision.

Default suite (CPU): one bf16-autocast iteration of the embedded default through ``EProPnPAmpOptimWrapper``
(losses within 5 % of float32 where they are deterministic, every gradient finite, the PnP layer in float32).
``@pytest.mark.gpu``: one CUDA iteration of every EPro-PnP-Det config, an fp16 AMP iteration, mmcv's CUDA RoIAlign
backward against the project's CPU path and a 1-process NCCL run of ``tools/dist_train.sh``.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from ._helpers import ROOT, backward_and_check_grads, build_detector
from .test_v2_synthetic import _data as _data_v2
from .test_variant_configs import _data as _data_v1


def _data(model, training, path=''):
    """v2 configs need the LiDAR depth points (``cam_pts_uvz``) of the v2 tests; v1 configs the RoI targets of the
    variant tests."""
    return _data_v2(model, training) if '_v2' in path else _data_v1(model, training)

EPROPNP_CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs', 'epropnp_det_*.py')))
# losses without Monte-Carlo draws or RSLM (FCOS classification / centre-ness / 2D box and the deterministic heads):
# float32 and mixed precision must agree on these within the rounding of half-precision convolutions
DETERMINISTIC = ('loss_cls', 'loss_centerness', 'loss_bbox', 'loss_dim', 'loss_depth', 'loss_velo', 'loss_attr')


def _amp_iteration(model, dtype, device):
    """One float32 and one mixed-precision loss + backward (lr 0, so both see the same weights). bf16 needs no
    loss scale: every gradient must be finite. fp16 starts at GradScaler's scale 2^16, at which a randomly
    initialised model's gradients can overflow: there the wrapper's step must skip the update (weights unchanged
    and finite, the step counted), and the unscaled gradients must be finite once the scale is low enough."""
    from epropnp_det.engine import EProPnPAmpOptimWrapper, EProPnPOptimWrapper
    results = {}
    for name, amp in (('fp32', None), ('amp', dtype)):
        model.zero_grad()
        torch.manual_seed(0)
        data = _data(model, True)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        wrapper = EProPnPAmpOptimWrapper(opt, dtype=amp) if amp else EProPnPOptimWrapper(opt)
        with wrapper.optim_context(model):
            losses = model(**data, mode='loss')
        results[name] = {k: float(v.detach().float().sum()) for k, v in losses.items() if 'loss' in k}
        loss, _ = model.parse_losses(losses)
        wrapper.backward(loss)
        scaler = getattr(wrapper, 'loss_scaler', None)
        if scaler is not None:  # fp16: the scaler's own overflow handling, then a low fixed scale
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            wrapper.step()
            assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # lr 0 or skipped
            model.zero_grad()
            scaler.update(1.0)
            with wrapper.optim_context(model):
                loss, _ = model.parse_losses(model(**data, mode='loss'))
            wrapper.backward(loss)
            scaler.unscale_(opt)
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, (name, bad)
    for k, v in results['fp32'].items():
        assert k in results['amp'] and abs(results['amp'][k]) < 1e6, k
        if k in DETERMINISTIC:
            assert abs(results['amp'][k] - v) <= 0.05 * abs(v) + 1e-3, (k, v, results['amp'][k])
    return results


def test_bf16_amp_iteration_on_cpu():
    model = build_detector('configs/epropnp_det_r18_synthetic.py')
    model.train()
    res = _amp_iteration(model, 'bfloat16', 'cpu')
    assert any(k in res['fp32'] for k in DETERMINISTIC)


@pytest.mark.gpu
@pytest.mark.parametrize('path', EPROPNP_CONFIGS)
def test_one_cuda_training_iteration(path):
    model = build_detector(path, pretrained=False).cuda()
    model.train()
    data = _data(model, True, path)
    losses = model(**data, mode='loss')
    for k, v in losses.items():
        assert v.device.type == 'cuda' and torch.isfinite(v).all(), k
    backward_and_check_grads(model, losses)


@pytest.mark.gpu
def test_fp16_amp_iteration_on_cuda():
    model = build_detector('configs/epropnp_det_r18_synthetic.py').cuda()
    model.train()
    _amp_iteration(model, 'float16', 'cuda')


@pytest.mark.gpu
def test_mmcv_cuda_roi_align_backward_equals_cpu_path():
    from mmcv.ops import roi_align

    from epropnp_det.models.utils.roi_align import roi_align_grid_sample
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 24, 32, generator=gen, dtype=torch.float64)
    xy = torch.rand(12, 2, generator=gen, dtype=torch.float64) * torch.tensor([40., 30.]) - 4
    wh = torch.rand(12, 2, generator=gen, dtype=torch.float64) * 20
    rois = torch.cat([torch.randint(0, 2, (12, 1), generator=gen).double(), xy, xy + wh], 1)
    g = torch.randn(12, 8, 7, 5, generator=gen, dtype=torch.float64)
    xc = x.clone().requires_grad_()
    (roi_align_grid_sample(xc, rois, (7, 5), 0.5) * g).sum().backward()
    xg = x.cuda().float().requires_grad_()
    out = roi_align(xg, rois.cuda().float(), (7, 5), 0.5, 0, 'avg', True)
    (out * g.cuda().float()).sum().backward()
    torch.testing.assert_close(out.double().cpu(), roi_align_grid_sample(x, rois, (7, 5), 0.5), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xg.grad.double().cpu(), xc.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_dist_train_one_nccl_process(tmp_path):
    from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root
    root = tiny_nuscenes_root().rstrip('/') + '/'
    opts = ['train_cfg.max_iters=4', 'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=1',
            'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            f'train_dataloader.dataset.data_root={root}', 'custom_hooks=[]']
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), PYTHON=sys.executable)
    env.pop('PORT', None)
    cmd = ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), os.path.join(ROOT, 'configs',
           'epropnp_det_r18_synthetic.py'), '1', '--work-dir', str(tmp_path), '--cfg-options'] + opts
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'nccl' in (out.stdout + out.stderr).lower()
    logs = glob.glob(str(tmp_path / '*' / 'vis_data' / 'scalars.json'))
    rows = [json.loads(line) for line in open(logs[0]) if 'loss' in line]
    assert len(rows) == 4 and all(abs(r['loss']) < 1e4 for r in rows)
