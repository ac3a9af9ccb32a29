import math

import pytest
import torch
from mmengine.logging import MessageHub

from epropnp_det.engine import EProPnPOptimWrapper


def _model_and_wrapper(lr=0.1, weight_decay=0.1, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return model, EProPnPOptimWrapper(opt, **kw)


def test_clips_like_clip_grad_norm():
    model, wrapper = _model_and_wrapper(clip_grad=dict(max_norm=0.01, norm_type=2))
    loss = model(torch.randn(8, 3)).pow(2).sum() * 100
    loss.backward()
    ref_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    expected = [p.grad * 0.01 / (ref_norm + 1e-6) for p in model.parameters()]
    saved = [p.grad.clone() for p in model.parameters()]
    wrapper.optimizer.step = lambda **kw: None  # inspect the clipped gradients only
    wrapper.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
    assert abs(MessageHub.get_current_instance().get_scalar('train/grad_norm').current() - ref_norm) < 1e-3 * ref_norm
    assert any((s != p.grad).any() for s, p in zip(saved, model.parameters()))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_nonfinite_gradients_zeroed_counted_and_optimizer_steps(bad):
    model, wrapper = _model_and_wrapper(clip_grad=dict(max_norm=5.0, norm_type=2))
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(8, 3)).sum() * bad
    wrapper.update_params(loss)
    # gradients were zeroed, then the optimizer stepped: only weight decay moved the weights (first AdamW step
    # with zero gradient has a zero update), so p_new = p * (1 - lr * wd)
    for p, b in zip(model.parameters(), before):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.detach(), b * (1 - 0.1 * 0.1))
    assert wrapper.num_nonfinite_steps == 1
    assert MessageHub.get_current_instance().get_scalar('train/nonfinite_grad_steps').current() == 1
    # a finite step afterwards is applied and not counted
    wrapper.update_params(model(torch.randn(8, 3)).sum())
    assert wrapper.num_nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_builds_from_registry_and_rejects_value_clipping():
    from mmdet3d.registry import OPTIM_WRAPPERS
    model = torch.nn.Linear(2, 1)
    w = OPTIM_WRAPPERS.build(dict(type='EProPnPOptimWrapper', optimizer=torch.optim.SGD(model.parameters(), lr=1)))
    assert w.clip_grad_kwargs == dict(max_norm=5.0, norm_type=2)
    with pytest.raises(ValueError, match='norm'):
        EProPnPOptimWrapper(torch.optim.SGD(model.parameters(), lr=1), clip_grad=dict(type='value', clip_value=1))
