"""EProPnPSmoothL1Loss equals mmdet's SmoothL1Loss (values and gradients, incl. all-zero weights) without its host
synchronisation."""
import pytest
import torch
from mmdet.models.losses import SmoothL1Loss

from epropnp_det.models.losses import EProPnPSmoothL1Loss
from epropnp_det.utils.op_counter import OpCounter


@pytest.mark.parametrize('zero_weights', [False, True])
@pytest.mark.parametrize('avg_factor', [None, 7.0])
def test_equals_mmdet(zero_weights, avg_factor):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    weight = torch.rand(12, 3, generator=gen, dtype=torch.float64) * (0 if zero_weights else 1)
    out = []
    for cls in (SmoothL1Loss, EProPnPSmoothL1Loss):
        p = pred.clone().requires_grad_()
        with OpCounter() as c:
            loss = cls(beta=0.5, loss_weight=2.0)(p, target, weight=weight, avg_factor=avg_factor)
        loss.backward()
        out.append((loss.detach(), p.grad, c.num_syncs))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-12, atol=0)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-12, atol=0)
    assert out[0][2] == 1 and out[1][2] == 0  # mmdet reads torch.any(weight > 0) on the host; ours does not
