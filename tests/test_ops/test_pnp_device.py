"""The PnP layer on devices: mixed precision boundary, no host synchronisation on the GPU code path, CUDA graphs.

CPU tests run everywhere; ``@pytest.mark.gpu`` tests need CUDA (skipped without it; run by ``tools/gpu_check.sh``).
"""
import math

import pytest
import torch

from epropnp_det.ops.pnp import EProPnP4DoF, MonteCarloPoseLoss, _graphs, derivative_regularization, solve_pnp, solver
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.utils.op_counter import OpCounter


def _problems(N=8, n=32, seed=0, **kw):
    return make_problems(N, n, generator=torch.Generator().manual_seed(seed), **kw)


def _cuda(p):
    """The problem dict on the GPU (tensors and the CameraParams)."""
    return {k: (v.to('cuda') if hasattr(v, 'to') else v) for k, v in p.items()}


def _mc_loss(layer, p, dtype, autocast, device_type='cpu', backend_seed=3):
    # clone: .to() of a float32 tensor to float32 returns the problem's own tensor, whose .grad would accumulate
    x3d = p['x3d'].to(dtype).clone().requires_grad_()
    w2d = p['w2d'].to(dtype).clone().requires_grad_()
    gen = torch.Generator(device=p['x3d'].device).manual_seed(backend_seed)
    with torch.autocast(device_type, dtype=dtype if dtype != torch.float32 else torch.bfloat16, enabled=autocast):
        out = layer.monte_carlo_forward(x3d, p['x2d'].to(dtype), w2d, p['camera'], pose_init=p['pose_gt'],
                                        generator=gen)
        loss, _ = MonteCarloPoseLoss()(out.cost_init, out.logw)
    loss.backward()
    return loss.detach(), out, x3d.grad, w2d.grad


def test_bf16_autocast_runs_the_layer_in_fp32():
    """Under CPU bf16 autocast with bf16 inputs, the layer must compute exactly what float32 computes on the same
    (bf16-rounded) inputs: autocast is off inside and the inputs are cast (in half precision the Cholesky would
    fail and the costs would differ by far more than rounding)."""
    p = _problems()
    layer = EProPnP4DoF(mc_samples=64, num_iter=4, cost_backend='eager')
    loss_h, out_h, gx_h, gw_h = _mc_loss(layer, p, torch.bfloat16, True)
    q = dict(p, x3d=p['x3d'].bfloat16().float(), x2d=p['x2d'].bfloat16().float(), w2d=p['w2d'].bfloat16().float())
    loss_f, out_f, gx_f, gw_f = _mc_loss(layer, q, torch.float32, False)
    assert out_h.pose_opt.dtype == torch.float32 and out_h.logw.dtype == torch.float32
    assert gx_h.dtype == torch.bfloat16  # gradients flow back through the cast to the half-precision producer
    torch.testing.assert_close(loss_h, loss_f, rtol=0, atol=0)
    torch.testing.assert_close(out_h.pose_opt, out_f.pose_opt, rtol=0, atol=0)
    torch.testing.assert_close(gw_h, gw_f.bfloat16(), rtol=0, atol=0)


def test_op_counter_finds_syncs_and_their_lines():
    x = torch.arange(6.)
    with OpCounter() as c:
        x.sum().item()  # line A
        x[x > 2].sum()  # line B
        torch.nonzero(x)  # line C
        x.tolist()  # line D
        y = x * 2 + 1  # no sync
    assert c.ops >= 8 and y.shape == (6,)
    reasons = [r for r, _ in c.syncs]
    assert reasons == ['aten::_local_scalar_dense', 'aten::index with a boolean mask', 'aten::nonzero',
                       'Tensor.tolist']
    lines = [int(site.rsplit(':', 1)[1]) for _, site in c.syncs]
    assert lines == sorted(lines) and len(set(lines)) == 4 and all('test_pnp_device.py' in s for _, s in c.syncs)
    with OpCounter(host_is_device=False) as c2:  # GPU runs: reads of CPU tensors are no synchronisation
        x.sum().item()
        x.tolist()
    assert c2.num_syncs == 0


def test_gpu_code_path_is_sync_free(monkeypatch):
    """The training call (MC loss with the shared regularisation solve, then the derivative regularisation) and
    the inference solve, along the code path taken on a GPU, make no host synchronisation and copy no host data
    to the device: the precondition of CUDA-graph capture and of a train step without stalls."""
    monkeypatch.setattr(solver, '_use_guide_table', lambda device: False)  # the GPU branch of the RSLM sampler
    monkeypatch.setattr(solver, '_use_stacked_gn', lambda device: True)  # the GPU form of the GN step
    p = _problems(12, 48)
    layer = EProPnP4DoF(mc_samples=64, num_iter=4, cost_backend='eager')
    x3d, w2d = p['x3d'].clone().requires_grad_(), p['w2d'].clone().requires_grad_()
    loss_fn = MonteCarloPoseLoss()
    with OpCounter() as c:
        out = layer.monte_carlo_forward(x3d, p['x2d'], w2d, p['camera'], pose_init=p['pose_gt'],
                                        check_finite=False, with_free_solution=True)
        loss, _ = loss_fn(out.cost_init, out.logw, batch_norm_factor=w2d.detach().mean())
        reg = derivative_regularization(x3d, p['x2d'], w2d, p['camera'], out.cost_opt.new_ones(12), p['pose_gt'],
                                        pose_opt=out.pose_free, backend='eager')
        (loss + reg['loss_pos'].mean()).backward()
        with torch.no_grad():
            solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], fast_mode=True, num_iter=5, check_finite=False,
                      backend='eager')
    assert c.syncs == [] and c.h2d == []
    assert torch.isfinite(x3d.grad).all()


def test_graph_buckets():
    assert [_graphs.bucket(n) for n in (1, 2, 3, 5, 64, 65, 128, 129, 1000)] == [1, 2, 4, 8, 64, 128, 128, 192, 1024]
    assert not _graphs.enabled('auto', torch.device('cpu'))


# --------------------------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_lm_from_true_pose_cpu_equals_cuda_float64():
    p = _problems(64, 64, dtype=torch.float64)
    q = _cuda(p)
    kw = dict(pose_init=p['pose_gt'], num_iter=10, backend='eager')
    a = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], **kw).pose
    b = solve_pnp(q['x3d'], q['x2d'], q['w2d'], q['camera'], **dict(kw, pose_init=q['pose_gt'])).pose.cpu()
    assert (a[:, :3] - b[:, :3]).norm(dim=-1).max() <= 1e-6
    assert (a[:, 3] - b[:, 3]).abs().max() <= 1e-7  # radians (measured on an H200: 1.0e-8)


@pytest.mark.gpu
@pytest.mark.parametrize('N', [5, 100])
def test_cuda_graph_equals_eager_without_randomness(N):
    """From the true pose without RSLM nothing is random: the graph replay (N padded to a bucket) must give the
    eager result up to float32 reduction order, on the first (capture) and on later (replay) calls."""
    _graphs.clear()
    p = _cuda(_problems(N, 96, seed=N))
    kw = dict(pose_init=p['pose_gt'], num_iter=10, with_cov=True)
    ref = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='eager', **kw)
    for _ in range(3):
        got = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='auto', **kw)
        assert (got.pose[:, :3] - ref.pose[:, :3]).norm(dim=-1).max() < 1e-4
        assert (got.pose[:, 3] - ref.pose[:, 3]).abs().max() < 1e-5
        torch.testing.assert_close(got.cov, ref.cov, rtol=1e-3, atol=1e-6)
    assert len(_graphs._CACHE) == 1 and not _graphs._STATE['failed']


@pytest.mark.gpu
def test_cuda_graph_rslm_draws_fresh_numbers_and_keeps_accuracy():
    """RSLM inside a graph: every replay draws new proposals from the generator (two calls differ somewhere), and
    the inference accuracy equals eager's (median translation error within 5 %)."""
    _graphs.clear()
    p = _cuda(_problems(256, 128, seed=7))
    gen = torch.Generator(device='cuda').manual_seed(0)
    kw = dict(fast_mode=True, num_iter=5, generator=gen)
    g1 = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='auto', init_num_iter=0, num_iter=0,
                   generator=gen).pose
    g2 = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend='auto', init_num_iter=0, num_iter=0,
                   generator=gen).pose
    assert not torch.equal(g1, g2)
    err = {}
    for backend in ('eager', 'auto'):
        pose = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], backend=backend, **kw).pose
        err[backend] = (pose[:, :3] - p['pose_gt'][:, :3]).norm(dim=-1).median().item()
    assert abs(err['auto'] - err['eager']) <= 0.05 * err['eager'] + 1e-3
    assert not _graphs._STATE['failed']


@pytest.mark.gpu
def test_mc_loss_cuda_graph_vs_eager_and_cpu():
    """Monte-Carlo KL loss and its gradient on CUDA (graphs) vs CUDA eager vs CPU: the same estimator, so the mean
    over seeds agrees within Monte-Carlo noise and every gradient is finite with equal norm within noise."""
    _graphs.clear()
    p = _problems(32, 64, seed=3)
    q = _cuda(p)
    stats = {}
    for name, prob, backend in (('cpu', p, 'eager'), ('cuda_eager', q, 'eager'), ('cuda_graph', q, 'auto')):
        layer = EProPnP4DoF(mc_samples=128, num_iter=4, cost_backend=backend)
        losses, norms = [], []
        for seed in range(8):
            loss, _, gx, gw = _mc_loss(layer, prob, torch.float32, False, backend_seed=seed)
            assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
            losses.append(loss.item())
            norms.append(gw.norm().item())
        stats[name] = (sum(losses) / 8, sum(norms) / 8, max(losses) - min(losses))
    ref_loss, ref_norm, spread = stats['cpu']
    for name in ('cuda_eager', 'cuda_graph'):
        loss, norm, _ = stats[name]
        assert abs(loss - ref_loss) <= max(spread, 0.05 * abs(ref_loss)), (name, stats)
        assert 0.8 <= norm / ref_norm <= 1.25, (name, stats)
    assert not _graphs._STATE['failed']


@pytest.mark.gpu
def test_fp16_autocast_on_cuda_runs_the_layer_in_fp32():
    p = _cuda(_problems(16, 48, seed=5))
    layer = EProPnP4DoF(mc_samples=64, num_iter=4, cost_backend='eager')
    x3d = p['x3d'].half().requires_grad_()
    w2d = p['w2d'].half().requires_grad_()
    with torch.autocast('cuda', dtype=torch.float16):
        out = layer.monte_carlo_forward(x3d, p['x2d'].half(), w2d, p['camera'], pose_init=p['pose_gt'])
        loss, _ = MonteCarloPoseLoss()(out.cost_init, out.logw)
    loss.backward()
    assert out.logw.dtype == torch.float32 and math.isfinite(loss.item())
    assert torch.isfinite(x3d.grad).all() and x3d.grad.dtype == torch.float16


@pytest.mark.gpu
def test_sampled_cost_compiled_equals_eager_on_cuda():
    """The torch.compile-fused sampled-cost kernels (forward and the one-pass backward) against the eager chunked
    ones on CUDA: same costs and gradients up to float32 rounding."""
    from epropnp_det.ops.pnp import adaptive_huber_delta, sampled_pnp_cost
    p = _cuda(_problems(24, 64, seed=9))
    gen = torch.Generator(device='cuda').manual_seed(0)
    poses = p['pose_gt'] + torch.randn(96, 24, 4, device='cuda', generator=gen) * torch.tensor(
        [0.5, 0.2, 1.0, 0.3], device='cuda')
    res = []
    for backend in ('eager', 'compile'):
        x3d, w2d = p['x3d'].clone().requires_grad_(), p['w2d'].clone().requires_grad_()
        delta = adaptive_huber_delta(p['x2d'], w2d)
        cost = sampled_pnp_cost(x3d, p['x2d'], w2d, poses, p['camera'], delta, backend=backend)
        (cost * torch.linspace(0.1, 1, 96, device='cuda')[:, None]).sum().backward()
        res.append((cost.detach(), x3d.grad, w2d.grad))
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
