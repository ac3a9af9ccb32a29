"""Monte Carlo scoring (docs/method.md §6.2): the score from the PnP layer's samples vs a direct per-sample
computation."""
import math

import pytest
import torch

from epropnp_det.models.utils.mc_scoring import blend_scores, mc_te_score, te_score
from epropnp_det.ops.pnp.epropnp import EProPnP4DoF
from epropnp_det.ops.pnp.types import CameraParams


def test_te_score_values():
    te = torch.tensor([0.1, 2 ** -1.5, 1.0, 2 ** 2.5, 2 ** 5.5, 100.])
    torch.testing.assert_close(te_score(te), torch.tensor([1., 1., 0.625, 0., 0., 0.]))


def test_mc_score_direct_computation_from_samples():
    torch.manual_seed(0)
    K, N = 64, 3
    samples = torch.randn(K, N, 4) * torch.tensor([0.5, 0.1, 2.0, 0.3])
    logw = torch.randn(K, N)
    opt = torch.randn(N, 4) * 0.2
    got = mc_te_score(samples, logw, opt)
    for n in range(N):
        ws = [math.exp(v) for v in logw[:, n].tolist()]
        tot = sum(ws)
        ref = 0.
        for k in range(K):
            te = math.hypot(samples[k, n, 0] - opt[n, 0], samples[k, n, 2] - opt[n, 2])
            ref += ws[k] / tot * min(max((2.5 - math.log2(te)) / 4, 0.), 1.)
        assert abs(got[n].item() - ref) < 1e-5


def test_blend():
    s3, smc = torch.tensor([0.64, 0.2]), torch.tensor([0.25, 0.8])
    torch.testing.assert_close(blend_scores(s3, smc, 0.), s3)
    torch.testing.assert_close(blend_scores(s3, smc, 1.), smc)
    torch.testing.assert_close(blend_scores(s3, smc, 0.5), torch.tensor([0.4, 0.4]))
    with pytest.raises(ValueError):
        blend_scores(s3, smc, 1.5)


def test_mc_score_from_the_pnp_layer_concentrates_with_more_weight():
    """On a real PnP problem, scaling up the 2D weights sharpens the posterior, so the MC score rises."""
    torch.manual_seed(1)
    N, n = 2, 32
    x3d = torch.randn(N, n, 3) * torch.tensor([2., 0.8, 1.])
    pose = torch.tensor([[1., 0.5, 20., 0.3], [-2., 0.7, 35., -1.2]])
    c, s = pose[:, 3].cos()[:, None], pose[:, 3].sin()[:, None]
    X = torch.stack((c * x3d[..., 0] + s * x3d[..., 2], x3d[..., 1], -s * x3d[..., 0] + c * x3d[..., 2]), -1)
    X = X + pose[:, None, :3]
    Kmat = torch.tensor([[1000., 0, 800], [0, 1000, 450], [0, 0, 1]]).expand(N, 3, 3)
    x2d = (X @ Kmat.transpose(1, 2))[..., :2] / X[..., 2:3] + torch.randn(N, n, 2) * 2
    cam = CameraParams.from_image_shape(Kmat, torch.tensor([[900., 1600.]] * N), convention='v2')
    pnp = EProPnP4DoF(mc_samples=128, num_iter=4)
    scores = []
    for wscale in (0.02, 1.0):
        w2d = torch.full((N, n, 2), wscale)
        mc = pnp.monte_carlo_forward(x3d, x2d, w2d, cam, fast_mode=True, num_iter=5,
                                     generator=torch.Generator().manual_seed(0))
        sc = mc_te_score(mc.pose_samples, mc.logw, mc.pose_opt)
        ref = (mc.weights * te_score((mc.pose_samples[..., [0, 2]] - mc.pose_opt[None, :, [0, 2]]).norm(dim=-1))
               ).sum(0)
        torch.testing.assert_close(sc, ref)
        scores.append(sc)
    assert (scores[1] > scores[0]).all() and (scores[1] > 0.5).all()
