"""MVDGaussianMixtureNLLLoss vs the mixture density written out directly (quadratic and Huber), adaptive weight
buffer, shared / learnable σ, cross-RoI mixture, reductions."""
import math

import pytest
import torch

from epropnp_det.models.losses import MVDGaussianMixtureNLLLoss, logsumexp_across_rois


def _direct_nll(pred, target, logstd, mix, delta=None):
    """−log Σ_m π_m · Π_d σ_md⁻¹ · exp(−ρ(‖(pred_m − target)/σ_m‖)) (no 2π), element by element in float64."""
    n, M = pred.shape[:2]
    S = pred.shape[2:-1]
    D = pred.shape[-1]
    pred, target, logstd = (torch.broadcast_to(t, pred.shape).double() for t in (pred, target, logstd))
    out = torch.empty((n,) + S, dtype=torch.float64)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in (n,) + S)).reshape(-1, 1 + len(S)).tolist():
        b, rest = idx[0], tuple(idx[1:])
        dens = 0.0
        for m in range(M):
            sq, det = 0.0, 1.0
            for d in range(D):
                sigma = math.exp(float(logstd[(b, m) + rest + (d,)]))
                sq += ((float(pred[(b, m) + rest + (d,)]) - float(target[(b, m) + rest + (d,)])) / sigma) ** 2
                det *= sigma
            q = math.sqrt(sq)
            rho = 0.5 * q * q if delta is None or q <= delta else delta * q - 0.5 * delta * delta
            dens += float(mix[(b, m) + rest]) * math.exp(-rho) / det
        out[(b,) + rest] = -math.log(dens)
    return out


@pytest.mark.parametrize('delta', [None, 1.0])
def test_nll_matches_direct_mixture_density(delta):
    gen = torch.Generator().manual_seed(0)
    n, M, h, w, D = 2, 3, 2, 3, 2
    pred = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64) * 2
    target = torch.randn(n, 1, h, w, D, generator=gen, dtype=torch.float64)
    logstd = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64) * 0.3
    log_mix = torch.randn(n, M, h, w, generator=gen, dtype=torch.float64).log_softmax(1)
    loss = MVDGaussianMixtureNLLLoss(adaptive_weight=False, delta=delta, reduction='none')
    out = loss(pred, target, logstd=logstd, log_mix=log_mix)
    ref = _direct_nll(pred, target, logstd, log_mix.exp(), delta)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    if delta is not None:  # some residuals are on each side of the Huber threshold
        q = ((pred - target) / logstd.exp()).norm(dim=-1)
        assert (q > delta).any() and (q <= delta).any()


def test_huber_gradient_finite_at_zero_residual_and_matches_fd():
    pred = torch.zeros(1, 2, 1, 3, dtype=torch.float64, requires_grad=True)
    loss = MVDGaussianMixtureNLLLoss(adaptive_weight=False, delta=2.0, sigma=0.5)
    loss(pred).backward()
    assert torch.isfinite(pred.grad).all()
    x = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: loss(t * 3, logstd=None), (x,))


def test_uniform_mixture_arbitrary_last_dim_and_scalar_target():
    """log_mix None = uniform weights; D = 1 (depth) and D = 3 (coordinates) work; target 0 means zero."""
    gen = torch.Generator().manual_seed(1)
    for D in (1, 3):
        pred = torch.randn(4, 5, D, generator=gen, dtype=torch.float64)  # (n, M, D), no spatial dims
        logstd = torch.randn(4, 5, D, generator=gen, dtype=torch.float64) * 0.2
        loss = MVDGaussianMixtureNLLLoss(adaptive_weight=False, reduction='none')
        out = loss(pred, 0, logstd=logstd)
        ref = _direct_nll(pred, torch.zeros(4, 1, D, dtype=torch.float64), logstd,
                          torch.full((4, 5), 0.2, dtype=torch.float64))
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_shared_sigma_fixed_and_learnable():
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn(3, 4, 2, 2, 3, generator=gen)
    log_mix = torch.randn(3, 4, 2, 2, generator=gen).log_softmax(1)
    fixed = MVDGaussianMixtureNLLLoss(adaptive_weight=False, sigma=0.2, delta=2.0, reduction='none')
    learn = MVDGaussianMixtureNLLLoss(adaptive_weight=False, sigma=0.2, freeze_sigma=False, delta=2.0,
                                      reduction='none')
    assert [n for n, _ in learn.named_parameters()] == ['log_sigma'] and not list(fixed.parameters())
    ref = _direct_nll(pred, torch.zeros(1), torch.full((3,), math.log(0.2)), log_mix.exp(), 2.0)
    torch.testing.assert_close(fixed(pred, None, log_mix=log_mix).double(), ref, rtol=1e-5, atol=1e-5)
    out = learn(pred, None, logstd=torch.zeros_like(pred), log_mix=log_mix)  # logstd is overridden by σ
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert learn.log_sigma.grad is not None and torch.isfinite(learn.log_sigma.grad)


def test_adaptive_weight_buffer_update_and_scaling():
    gen = torch.Generator().manual_seed(3)
    n, M, h, w, D = 2, 4, 3, 3, 2
    pred = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64)
    logstd = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64) * 0.5
    log_mix = torch.randn(n, M, h, w, generator=gen, dtype=torch.float64).log_softmax(1)
    plain = MVDGaussianMixtureNLLLoss(adaptive_weight=False, reduction='none')
    ada = MVDGaussianMixtureNLLLoss(adaptive_weight=True, momentum=0.1, reduction='none').double()
    assert float(ada.mean_inv_std) == 1.0
    raw = plain(pred, None, logstd=logstd, log_mix=log_mix)
    pi, inv = log_mix.exp(), (-logstd).exp()
    batch = float((inv * pi[..., None]).sum() / (D * pi.sum()))
    expected = 0.9 * 1.0 + 0.1 * batch
    ada.train()
    out = ada(pred, None, logstd=logstd, log_mix=log_mix)
    assert float(ada.mean_inv_std) == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(out, raw / expected)  # the freshly updated value is used
    out2 = ada(pred, None, logstd=logstd, log_mix=log_mix)
    expected2 = 0.9 * expected + 0.1 * batch
    assert float(ada.mean_inv_std) == pytest.approx(expected2, rel=1e-12)
    torch.testing.assert_close(out2, raw / expected2)
    ada.eval()  # eval: no update, same scaling
    torch.testing.assert_close(ada(pred, None, logstd=logstd, log_mix=log_mix), raw / expected2)
    assert float(ada.mean_inv_std) == pytest.approx(expected2, rel=1e-12)
    # an empty batch leaves the buffer alone (no decay towards 0)
    ada.train()
    ada(pred[:0], None, logstd=logstd[:0], log_mix=log_mix[:0])
    assert float(ada.mean_inv_std) == pytest.approx(expected2, rel=1e-12)
    # the inverse std is clamped at 1/eps
    huge = MVDGaussianMixtureNLLLoss(adaptive_weight=True, momentum=1.0).double()
    huge(pred, None, logstd=torch.full_like(logstd, -20.), log_mix=log_mix)
    assert float(huge.mean_inv_std) == pytest.approx(1e4, rel=1e-9)


def test_cross_roi_mixture_and_reduction():
    gen = torch.Generator().manual_seed(4)
    rois = torch.tensor([[0, 0., 0., 20., 20.], [0, 10., 5., 30., 25.], [1, 0., 0., 10., 10.]],
                        dtype=torch.float64)
    n, M, h, w, D = 3, 2, 4, 4, 2
    pred = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64, requires_grad=True)
    logstd = torch.randn(n, M, h, w, D, generator=gen, dtype=torch.float64) * 0.3
    log_mix = torch.randn(n, M, h, w, generator=gen, dtype=torch.float64).log_softmax(1)
    loss = MVDGaussianMixtureNLLLoss(adaptive_weight=False, reduction='none')
    out = loss(pred, 0, logstd=logstd, log_mix=log_mix, rois=rois)
    comp = -0.5 * (pred / logstd.exp()).square().sum(-1) - logstd.sum(-1) + log_mix
    ref = -logsumexp_across_rois(comp.logsumexp(1, keepdim=True), rois)[:, 0]
    torch.testing.assert_close(out, ref)
    assert (out[:2] < loss(pred, 0, logstd=logstd, log_mix=log_mix)[:2] + 1e-12).all()  # more mass, lower NLL
    weight = torch.rand(n, h, w, generator=gen, dtype=torch.float64)
    red = MVDGaussianMixtureNLLLoss(adaptive_weight=False, loss_weight=0.5)
    val = red(pred, 0, logstd=logstd, log_mix=log_mix, rois=rois, weight=weight, avg_factor=7.0)
    torch.testing.assert_close(val, 0.5 * (out * weight).sum() / 7.0, rtol=1e-6, atol=0)
    val.backward()
    assert torch.isfinite(pred.grad).all()


def _rank_data(rank):
    gen = torch.Generator().manual_seed(10 + rank)
    n = 2 + rank  # ranks hold different numbers of objects
    pred = torch.randn(n, 3, 2, 2, 2, generator=gen, dtype=torch.float64)
    logstd = torch.randn(n, 3, 2, 2, 2, generator=gen, dtype=torch.float64) * 0.5
    log_mix = torch.randn(n, 3, 2, 2, generator=gen, dtype=torch.float64).log_softmax(1)
    return pred, logstd, log_mix


def _dist_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world_size)
    try:
        loss = MVDGaussianMixtureNLLLoss(adaptive_weight=True, momentum=0.1).double().train()
        pred, logstd, log_mix = _rank_data(rank)
        loss(pred, None, logstd=logstd, log_mix=log_mix)
        torch.save(loss.mean_inv_std.clone(), f'{out_dir}/buf{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import the mm* stack (~30 s)
def test_adaptive_weight_statistics_are_all_reduced(tmp_path):
    """Two gloo processes with different batches end with the same buffer, computed from the rank means of
    Σ inv_std·π and D·Σ π (mmdet reduce_mean), i.e. the pooled ratio."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    bufs = [float(torch.load(tmp_path / f'buf{r}.pt')) for r in range(2)]
    num = den = 0.0
    for r in range(2):
        _, logstd, log_mix = _rank_data(r)
        pi = log_mix.exp()
        num += float((pi[..., None] * (-logstd).exp()).sum())
        den += float(2 * pi.sum())
    assert bufs[0] == bufs[1] == pytest.approx(0.9 + 0.1 * num / den, rel=1e-12)
