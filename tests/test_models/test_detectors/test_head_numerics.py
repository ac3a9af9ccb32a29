"""The pose stage left the head without changing a number: losses, gradient norms of every head parameter, and
every prediction field (plain, with Monte-Carlo samples, with Monte-Carlo scoring for v2, flip TTA) of a fixed-seed
forward of each variant config (v1, v1b, v2) equal the values recorded at the commit before the refactoring
(``tests/data/golden/head_numerics.pt``, written by ``python -m tests.test_models.test_detectors._numerics``).

The tolerance (rtol 1e-5 on values, 1e-4 on gradient norms) only absorbs summation-order noise of float32 on other
CPUs; a changed detach policy or pixel offset moves these numbers by far more (measured: the v1 detach policies
in the v2 model change head gradient norms by up to 43 %; projecting v1's 2D boxes without the 0.5-px offset moves
them by 0.5 px, 5e-3 relative)."""
import os

import pytest
import torch

from ._helpers import ROOT
from ._numerics import VARIANTS, record

GOLDEN = os.path.join(ROOT, 'tests', 'data', 'golden', 'head_numerics.pt')


@pytest.fixture(scope='module')
def golden():
    return torch.load(GOLDEN)


def _record_one_thread(variant):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded: one summation order
    try:
        return record(variant)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_numerics_unchanged(golden, variant, monkeypatch):
    # the torch implementation of the PnP layer, as recorded (the native CPU kernels sum in another order: see
    # test_native_pnp_kernels_change_only_rounding)
    monkeypatch.setenv('EPROPNP_DISABLE_NATIVE', '1')
    ref = golden['numbers'][variant]
    got = _record_one_thread(variant)
    assert sorted(got) == sorted(ref), (sorted(set(got) ^ set(ref)))
    for k, r in ref.items():
        g = got[k]
        assert g.shape == r.shape, (k, g.shape, r.shape)
        rtol = 1e-4 if k.startswith('grad/') else 1e-5
        torch.testing.assert_close(g, r, rtol=rtol, atol=1e-6, msg=lambda m: f'{variant} {k}: {m}')


# Monte-Carlo outputs of AMIS: a rounding-level change of a sample's cost moves the proposal re-estimated from the
# importance weights, and with it every later draw (measured with the torch implementation alone: 2 threads instead
# of 1 change pose_samples by up to 14x their value and the weights by orders of magnitude on these untrained
# models, and loss_pose / v2's gradients by 0.2 %, as the native kernels do)
CHAOTIC = ('pose_samples', 'pose_sample_weights')
# v2's Monte-Carlo scoring (16 AMIS samples per object): one sample crossing the score's threshold moves an object
# from 0 to 1.5e-4 (measured, native kernels on an AVX-512 Xeon), which reorders the score-sorted predictions; the
# scores (score3d: the Monte-Carlo estimate, scores_3d: blended with it) are not compared, the other fields in an
# order independent of them (by box x)
CHAOTIC_KEYS = tuple(f'pred_mc/{i}/{k}' for i in (0, 1) for k in ('scores_3d', 'score3d'))


def _order_mc_by_box(d):
    out = dict(d)
    for i in (0, 1):
        boxes = d.get(f'pred_mc/{i}/bboxes_3d')
        if boxes is None:
            continue
        order = torch.argsort(boxes[:, 0])
        for k, v in d.items():
            if k.startswith(f'pred_mc/{i}/') and v.dim() and v.shape[0] == order.numel():
                out[k] = v[order]
    return out


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_native_pnp_kernels_change_only_rounding(golden, variant):
    """With the native CPU kernels (the default on the CPU) every loss, gradient norm and deterministic prediction
    stays within 0.5 % of the recorded torch numbers, as with a different thread count; only the Monte-Carlo
    samples and weights, which a different summation order changes as much, are not compared."""
    from epropnp_det.ops.pnp import _native
    if _native.lib() is None:
        pytest.skip('no C++ compiler for the native kernels')
    ref = _order_mc_by_box(golden['numbers'][variant])
    got = _order_mc_by_box(_record_one_thread(variant))
    compared = 0
    for k, r in ref.items():
        if k.endswith(CHAOTIC) or k in CHAOTIC_KEYS or not r.is_floating_point():
            continue
        torch.testing.assert_close(got[k], r, rtol=5e-3, atol=1e-4, msg=lambda m: f'{variant} {k}: {m}')
        compared += 1
    assert compared >= len(ref) - 10


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_old_state_dict_layout_loads(golden, variant):
    """A checkpoint written with the key layout of the old head (pose layer, norm factor and learnable δ directly
    under ``bbox_head``) loads strictly into the new model, and its values land in the pose stage."""
    from ._helpers import build_detector
    old = golden['state_dict_layout'][variant]
    gen = torch.Generator().manual_seed(0)
    # integer-valued floats: exact after the copy into integer buffers (``num_batches_tracked``) too
    sd = {k: (torch.rand(s, generator=gen) * 100).round() for k, s in old.items()}
    model = build_detector(VARIANTS[variant])
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    new = model.state_dict()
    moved = {k: k.replace('bbox_head.', 'bbox_head.pose_stage.', 1) for k in old
             if k.startswith(('bbox_head.loss_pose.', 'bbox_head.pnp.')) or k == 'bbox_head.log_rel_delta'}
    assert 'bbox_head.loss_pose.norm_factor' in moved
    for k_old, k_new in moved.items():
        assert k_new in new and k_old not in new
        torch.testing.assert_close(new[k_new].double(), sd[k_old].double(), rtol=0, atol=0)
    for k in set(old) - set(moved):
        torch.testing.assert_close(new[k].double(), sd[k].double(), rtol=0, atol=0)
    assert len(new) == len(old)
