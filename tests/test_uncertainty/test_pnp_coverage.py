"""The PnP layer's Laplace intervals cover the true pose at their nominal rate on problems with known Gaussian
pixel noise.

With per-point, per-axis noise ``σ`` and weights ``w2d = 1/σ`` (and a Huber threshold far above every residual,
so the cost is quadratic), ``cost(y) = ½ Σ ((proj(y) − x2d) / σ)²`` is the negative log-likelihood of the pose, and
the layer's ``inv(J̃ᵀJ̃)`` at the solution is the covariance of the estimate to first order. Over many independent
problems the fraction of true poses inside the central ``p`` interval of each component must be ``p``; with
N problems the binomial standard deviation is ``sqrt(p(1−p)/N)`` (≤ 0.5 points for N = 10 000), so ±3 points
separates a miscalibrated covariance (e.g. one off by a factor 1.2 in σ: 68 % → 59 %) from sampling noise.
"""
import math
from statistics import NormalDist

import pytest
import torch

from epropnp_det.ops.pnp import CameraParams, project, solve_pnp, wrap_angle

LEVELS = (0.5, 0.68, 0.9, 0.95)


def _problems(N, n, gen):
    """Objects like the detector's (a 4 × 1.6 × 1.9 m point cloud, nuScenes front camera), noise σ per point
    and axis uniform in [0.5, 3] px, depths 5–40 m."""
    g = dict(generator=gen, dtype=torch.float64)
    K = torch.tensor([[1266.4, 0., 816.3], [0., 1266.4, 491.5], [0., 0., 1.]], dtype=torch.float64).expand(N, 3, 3)
    x3d = (torch.rand(N, n, 3, **g) - 0.5) * torch.tensor([4.0, 1.6, 1.9], dtype=torch.float64)
    z = torch.rand(N, **g) * 35 + 5
    x = (torch.rand(N, **g) - 0.5) * 0.8 * z * 1600 / 1266.4
    y = torch.rand(N, **g) * 1.5 + 0.5
    yaw = (torch.rand(N, **g) * 2 - 1) * math.pi
    pose = torch.stack((x, y, z, yaw), -1)
    # clamp bounds far outside the image: the projection is never clamped, the likelihood stays Gaussian
    camera = CameraParams(K.contiguous(), torch.full((N, 2), -1e5, dtype=torch.float64),
                          torch.full((N, 2), 1e5, dtype=torch.float64))
    x2d_true, _ = project(x3d, pose, camera)
    sigma = torch.rand(N, n, 2, **g) * 2.5 + 0.5
    x2d = x2d_true + torch.randn(N, n, 2, **g) * sigma
    return x3d, x2d, 1 / sigma, camera, pose


@pytest.mark.slow
def test_laplace_intervals_cover_true_pose_at_nominal_rate():
    gen = torch.Generator().manual_seed(2026)
    N, n = 10_000, 48
    x3d, x2d, w2d, camera, pose_gt = _problems(N, n, gen)
    delta = torch.full((N,), 1e8, dtype=torch.float64)  # quadratic cost: the exact Gaussian log-likelihood
    # start at the truth: the estimate is the cost minimum, wherever the iterations start
    sol = solve_pnp(x3d, x2d, w2d, camera, delta, pose_init=pose_gt, with_cov=True, num_iter=20, eps=1e-12,
                    normalize=True)
    err = pose_gt - sol.pose
    err[:, 3] = wrap_angle(err[:, 3])
    std = sol.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert torch.isfinite(std).all()
    for comp, name in ((0, 'lateral x'), (1, 'height y'), (2, 'depth z'), (3, 'yaw')):
        r = err[:, comp].abs() / std[:, comp]
        for p in LEVELS:
            cov = float((r <= NormalDist().inv_cdf((1 + p) / 2)).double().mean())
            assert abs(cov - p) < 0.03, f'{name}: {100 * cov:.1f} % inside the {100 * p:.0f} % interval'
    # the full 4D covariance too: the squared Mahalanobis distance is chi-square(4); P(χ²₄ ≤ c) = p at these c
    maha = torch.einsum('ni,ni->n', err, torch.linalg.solve(sol.cov, err[..., None])[..., 0])
    for c, p in ((3.3567, 0.5), (7.7794, 0.9), (9.4877, 0.95)):
        assert abs(float((maha <= c).double().mean()) - p) < 0.03


def test_misscaled_weights_are_detected():
    """The same check fails for weights that overstate the pixel precision by 25 % (σ too small by 1/1.25):
    the coverage test has the power to see a miscalibration of that size with 2 000 problems."""
    gen = torch.Generator().manual_seed(7)
    N, n = 2_000, 32
    x3d, x2d, w2d, camera, pose_gt = _problems(N, n, gen)
    delta = torch.full((N,), 1e8, dtype=torch.float64)
    sol = solve_pnp(x3d, x2d, w2d * 1.25, camera, delta, pose_init=pose_gt, with_cov=True, num_iter=20, eps=1e-12)
    err = (pose_gt - sol.pose)[:, 2].abs()
    std = sol.cov[:, 2, 2].sqrt()
    cov68 = float((err <= std * NormalDist().inv_cdf(0.84)).double().mean())
    # expected P(|Z| ≤ 1/1.25) = 0.576, far outside 0.68 ± 0.03
    assert abs(cov68 - 0.576) < 0.035 and cov68 < 0.65
