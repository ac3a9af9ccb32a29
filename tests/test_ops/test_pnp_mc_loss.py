"""Monte-Carlo KL loss: value (with −log K), reduction, NaN/Inf exclusion and counting, running-norm buffer."""
import math

import pytest
import torch

from epropnp_det.ops.pnp import MonteCarloPoseLoss, monte_carlo_kl, monte_carlo_kl_loss


def _inputs(N=5, K=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    cost = (torch.rand(N, generator=g) * 3).requires_grad_()
    logw = torch.randn(K, N, generator=g).requires_grad_()
    return cost, logw


def test_kl_value_includes_log_k():
    cost, logw = _inputs()
    kl = monte_carlo_kl(cost, logw)
    ref = cost + torch.log(logw.exp().mean(0))  # cost + log(mean of weights)
    torch.testing.assert_close(kl, ref)
    # equal log-weights log Z for all samples: the estimate is exactly cost + log Z, whatever K
    for K in (1, 7, 512):
        torch.testing.assert_close(monte_carlo_kl(torch.zeros(3), torch.full((K, 3), 2.5)), torch.full((3,), 2.5))


def test_reduction_weight_avg_factor_and_gradient():
    cost, logw = _inputs()
    w = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0])
    out = monte_carlo_kl_loss(cost, logw, weight=w, avg_factor=4.0)
    ref = (monte_carlo_kl(cost, logw) * w).sum() / 4.0
    torch.testing.assert_close(out.loss, ref)
    assert out.num_nonfinite.item() == 0
    gc, gl = torch.autograd.grad(out.loss, [cost, logw])
    torch.testing.assert_close(gc, w / 4)
    torch.testing.assert_close(gl, torch.softmax(logw.detach(), 0) * w / 4)  # d logsumexp = softmax
    # mean over objects without avg_factor
    torch.testing.assert_close(monte_carlo_kl_loss(cost, logw).loss, monte_carlo_kl(cost, logw).mean())


@pytest.mark.parametrize('bad', ['cost_nan', 'cost_inf', 'logw_nan', 'logw_posinf', 'all_logw_neginf', 'weight_nan'])
def test_nonfinite_objects_excluded_and_counted(bad):
    cost, logw = _inputs()
    c, lw = cost.detach().clone(), logw.detach().clone()
    w = torch.ones(5)
    if bad == 'cost_nan':
        c[1] = float('nan')
    elif bad == 'cost_inf':
        c[1] = float('inf')
    elif bad == 'logw_nan':
        lw[3, 1] = float('nan')
    elif bad == 'logw_posinf':
        lw[0, 1] = float('inf')
    elif bad == 'all_logw_neginf':
        lw[:, 1] = -float('inf')
    else:
        w[1] = float('nan')
    c.requires_grad_()
    lw.requires_grad_()
    out = monte_carlo_kl_loss(c, lw, weight=w, avg_factor=5.0)
    keep = torch.tensor([True, False, True, True, True])
    ref = monte_carlo_kl(cost.detach()[keep], logw.detach()[:, keep]).sum() / 5.0
    torch.testing.assert_close(out.loss, ref)
    assert out.num_nonfinite.item() == 1
    gc, gl = torch.autograd.grad(out.loss, [c, lw])
    assert torch.isfinite(gc).all() and torch.isfinite(gl).all()
    assert gc[1] == 0 and (gl[:, 1] == 0).all()
    # without avg_factor: mean over the finite objects only
    torch.testing.assert_close(monte_carlo_kl_loss(c, lw, weight=w).loss, ref * 5 / 4)


def test_individual_neginf_logw_is_fine():
    """A single sample with −inf log-weight (zero weight) is a valid input, not a failure."""
    cost, logw = _inputs()
    lw = logw.detach().clone()
    lw[0, 2] = -float('inf')
    out = monte_carlo_kl_loss(cost, lw)
    assert out.num_nonfinite.item() == 0 and torch.isfinite(out.loss)


def test_running_norm_factor_semantics():
    """docs/method.md §2.11: EMA with momentum 0.01 updated before the loss and used in the same step; none in eval
    mode."""
    cost, logw = _inputs()
    m = MonteCarloPoseLoss(loss_weight=0.5, momentum=0.01)
    base = monte_carlo_kl_loss(cost, logw, avg_factor=5.0).loss
    assert m.norm_factor.item() == 1.0
    out = m(cost, logw, batch_norm_factor=torch.tensor(3.0), avg_factor=5.0)
    nf = 0.99 * 1.0 + 0.01 * 3.0
    assert math.isclose(m.norm_factor.item(), nf, rel_tol=1e-6)
    torch.testing.assert_close(out.loss, base * 0.5 / nf)
    out = m(cost, logw, batch_norm_factor=0.0, avg_factor=5.0)  # an empty GPU passes 0: pulls the buffer down
    nf = 0.99 * nf
    assert math.isclose(m.norm_factor.item(), nf, rel_tol=1e-6)
    m.eval()
    out = m(cost, logw, batch_norm_factor=100.0, avg_factor=5.0)
    assert math.isclose(m.norm_factor.item(), nf, rel_tol=1e-6)
    torch.testing.assert_close(out.loss, base * 0.5 / nf)
    m.train()
    m(cost, logw, avg_factor=5.0)  # no batch value: no update
    assert math.isclose(m.norm_factor.item(), nf, rel_tol=1e-6)
    assert 'norm_factor' in m.state_dict()


def test_reduce_fn_is_applied_before_the_ema():
    cost, logw = _inputs()
    calls = []

    def fake_all_reduce_mean(x):
        calls.append(x.clone())
        return (x + 1.0) / 2  # pretend the other rank had 1.0

    m = MonteCarloPoseLoss(momentum=0.5, reduce_fn=fake_all_reduce_mean)
    m(cost, logw, batch_norm_factor=3.0)
    assert len(calls) == 1 and calls[0].item() == 3.0
    assert math.isclose(m.norm_factor.item(), 0.5 * 1.0 + 0.5 * 2.0)


def test_loss_module_counts_nonfinite():
    cost, logw = _inputs()
    c = cost.detach().clone()
    c[0] = float('nan')
    out = MonteCarloPoseLoss()(c, logw)
    assert out.num_nonfinite.item() == 1 and torch.isfinite(out.loss)
    loss, count = out  # NamedTuple unpacking
    assert count.dtype == torch.int64
