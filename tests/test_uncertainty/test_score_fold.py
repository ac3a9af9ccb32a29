"""fold_uncertainty_into_score: the Laplace te score against independent integrals, the exp form by hand."""
import math

import numpy as np
import pytest
import torch

from epropnp_det.models.utils.uncertainty import fold_uncertainty_into_score, te_score_expectation


def _s(r):
    return np.clip((2.5 - np.log2(np.maximum(r, 1e-300))) / 4, 0, 1)


def _rayleigh_expectation(sigma):
    """E[s(r)] for an isotropic 2D Gaussian: r ~ Rayleigh(σ), by a fine trapezoid rule on the radial density."""
    r = np.linspace(0, 60 * sigma, 4_000_001)
    f = _s(r) * r / sigma ** 2 * np.exp(-r * r / (2 * sigma ** 2))
    return float(((f[1:] + f[:-1]) / 2 * np.diff(r)).sum())


@pytest.mark.parametrize('sigma', [0.05, 0.3, 1.0, 2.5, 8.0])
def test_te_expectation_isotropic_matches_rayleigh_quadrature(sigma):
    cov = torch.eye(2, dtype=torch.float64)[None] * sigma ** 2
    got = float(te_score_expectation(cov)[0])
    assert got == pytest.approx(_rayleigh_expectation(sigma), abs=1e-7)


def test_te_expectation_anisotropic_matches_monte_carlo():
    rng = np.random.default_rng(0)
    covs = []
    for sx, sz, rho in [(0.3, 3.0, 0.5), (1.0, 0.2, -0.8), (2.0, 2.0, 0.0), (0.5, 6.0, 0.95), (0.01, 5.0, 0.0)]:
        covs.append([[sx * sx, rho * sx * sz], [rho * sx * sz, sz * sz]])
    covs = np.array(covs)
    got = te_score_expectation(torch.as_tensor(covs)).numpy()
    n = 2_000_000
    for c, g in zip(covs, got):
        e = rng.multivariate_normal(np.zeros(2), c, size=n)
        ref = _s(np.linalg.norm(e, axis=1)).mean()  # MC standard error < 4e-4
        assert g == pytest.approx(ref, abs=1.5e-3)


def test_te_expectation_limits():
    tiny = torch.eye(2, dtype=torch.float64)[None] * 1e-6
    huge = torch.eye(2, dtype=torch.float64)[None] * 1e4
    zero = torch.zeros(1, 2, 2, dtype=torch.float64)
    assert float(te_score_expectation(tiny)) == pytest.approx(1.0, abs=1e-9)
    assert float(te_score_expectation(zero)) == pytest.approx(1.0, abs=1e-9)
    assert float(te_score_expectation(huge)) < 1e-3


def _covs():
    cov = torch.zeros(3, 4, 4, dtype=torch.float64)
    cov[0] = torch.diag(torch.tensor([0.04, 0.01, 0.25, 0.01]))
    cov[1] = torch.diag(torch.tensor([1.0, 0.5, 9.0, 0.2]))
    cov[2] = torch.diag(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    return cov


def test_fold_exp_form_by_hand():
    scores = torch.tensor([0.9, 0.5, 0.7], dtype=torch.float32)
    labels = torch.tensor([0, 1, 1])
    cfg = dict(type='exp', alpha=0.5, ref_std=[2.0, 4.0], alpha_yaw=1.5)
    got = fold_uncertainty_into_score(scores, _covs(), labels, cfg)
    sbev = [math.sqrt(0.04 + 0.25), math.sqrt(1.0 + 9.0), 0.0]
    syaw = [0.1, math.sqrt(0.2), 0.0]
    ref = [2.0, 4.0, 4.0]
    want = [s * math.exp(-0.5 * b / r - 1.5 * y) for s, b, r, y in zip([0.9, 0.5, 0.7], sbev, ref, syaw)]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_fold_te_form_uses_bev_block_and_ratio():
    scores = torch.tensor([0.9, 0.5, 0.7], dtype=torch.float64)
    labels = torch.zeros(3, dtype=torch.long)
    got = fold_uncertainty_into_score(scores, _covs(), labels, dict(type='te', ratio=0.5))
    # independent: box 1 has σx = 1, σz = 3 → 2D MC; box 0: σx 0.2, σz 0.5; box 2: zero spread → factor 1
    rng = np.random.default_rng(1)
    for i, (sx, sz) in enumerate([(0.2, 0.5), (1.0, 3.0)]):
        e = rng.normal(size=(1_000_000, 2)) * [sx, sz]
        want = float(scores[i]) * _s(np.linalg.norm(e, axis=1)).mean() ** 0.5
        assert float(got[i]) == pytest.approx(want, abs=2e-3)
    assert float(got[2]) == pytest.approx(0.7, abs=1e-12)


def test_fold_nonfinite_cov_and_bad_cfg():
    cov = _covs()
    cov[1, 0, 0] = float('nan')
    got = fold_uncertainty_into_score(torch.ones(3), cov, torch.zeros(3, dtype=torch.long), dict(type='te'))
    assert float(got[1]) == 0 and torch.isfinite(got).all()
    with pytest.raises(ValueError):
        fold_uncertainty_into_score(torch.ones(3), _covs(), torch.zeros(3, dtype=torch.long), dict(type='bogus'))
    with pytest.raises(ValueError):
        fold_uncertainty_into_score(torch.ones(3), _covs(), torch.zeros(3, dtype=torch.long), dict(alpha=1.0))
    empty = fold_uncertainty_into_score(torch.ones(0), torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long),
                                        dict(type='exp'))
    assert empty.shape == (0,)
