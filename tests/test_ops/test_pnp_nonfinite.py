"""``nonfinite='exclude'``: a NaN/Inf object cannot end a training step, and the other objects do not notice it."""
import pytest
import torch

from epropnp_det.ops.pnp import EProPnP4DoF, MonteCarloPoseLoss
from epropnp_det.ops.pnp.testing import make_problems


def _run(layer, p, x3d, w2d, x2d=None, pose_init=None):
    x3d = x3d.clone().requires_grad_()
    w2d = w2d.clone().requires_grad_()
    out = layer.monte_carlo_forward(x3d, p['x2d'] if x2d is None else x2d, w2d, p['camera'],
                                    pose_init=p['pose_gt'] if pose_init is None else pose_init,
                                    generator=torch.Generator().manual_seed(11))
    per_obj = out.cost_init + torch.logsumexp(out.logw, dim=0)
    torch.where(torch.isfinite(per_obj), per_obj, 0.).sum().backward()
    return out, per_obj.detach(), x3d.grad, w2d.grad


@pytest.mark.parametrize('field', ['x3d', 'x2d', 'w2d', 'pose_init'])
def test_nonfinite_object_is_excluded_and_others_unchanged(field):
    p = make_problems(6, 24, generator=torch.Generator().manual_seed(0))
    layer = EProPnP4DoF(mc_samples=32, num_iter=4, cost_backend='eager', nonfinite='exclude')
    inputs = dict(x3d=p['x3d'], x2d=p['x2d'], w2d=p['w2d'], pose_init=p['pose_gt'])
    bad = {k: v.clone() for k, v in inputs.items()}
    bad[field][2] = float('nan') if field != 'w2d' else float('inf')
    ref_out, ref_obj, ref_g3, ref_gw = _run(layer, p, **inputs)
    out, obj, g3, gw = _run(layer, p, **bad)
    assert out.valid.tolist() == [True, True, False, True, True, True]
    assert torch.isnan(obj[2]) and torch.isnan(out.pose_opt[2]).all() and torch.isnan(out.logw[:, 2]).all()
    keep = torch.tensor([0, 1, 3, 4, 5])
    # the objects are independent problems drawn from the same random streams: bitwise the same results
    torch.testing.assert_close(obj[keep], ref_obj[keep], rtol=0, atol=0)
    torch.testing.assert_close(out.pose_opt[keep], ref_out.pose_opt[keep], rtol=0, atol=0)
    torch.testing.assert_close(g3[keep], ref_g3[keep], rtol=0, atol=0)
    assert torch.isfinite(g3).all() and torch.isfinite(gw).all()
    assert (g3[2] == 0).all() and (gw[2] == 0).all()
    loss = MonteCarloPoseLoss()(out.cost_init, out.logw)
    assert torch.isfinite(loss.loss) and int(loss.num_nonfinite) == 1


def test_raise_mode_names_the_field():
    p = make_problems(3, 8, generator=torch.Generator().manual_seed(0))
    x2d = p['x2d'].clone()
    x2d[1, 0, 0] = float('inf')
    with pytest.raises(ValueError, match='x2d'):
        EProPnP4DoF(mc_samples=8, num_iter=4).solve(p['x3d'], x2d, p['w2d'], p['camera'], delta=torch.ones(3))
    sol = EProPnP4DoF(mc_samples=8, num_iter=4, nonfinite='exclude').solve(p['x3d'], x2d, p['w2d'], p['camera'])
    assert torch.isnan(sol.pose[1]).all() and torch.isfinite(sol.pose[[0, 2]]).all()
