"""Statistics of epropnp_det.evaluation.uncertainty against scipy and closed forms."""

import numpy as np
import pytest
from scipy import stats

from epropnp_det.evaluation.uncertainty import (
    central_z,
    gaussian_nll,
    match_by_center_distance,
    sample_interval_coverage,
    spearman,
    weighted_quantile,
)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    b[::7] = 1.0  # ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 4, 4))
    cov = A @ A.transpose(0, 2, 1) + np.eye(4)
    err = rng.normal(size=(5, 4))
    want = [-stats.multivariate_normal(np.zeros(4), c).logpdf(e) for e, c in zip(err, cov)]
    np.testing.assert_allclose(gaussian_nll(err, cov), want, rtol=1e-12)


def test_central_z():
    assert central_z(0.6827) == pytest.approx(1.0, abs=1e-4)
    assert central_z(0.95) == pytest.approx(stats.norm.ppf(0.975), abs=1e-12)


def test_weighted_sample_intervals_of_a_reweighted_normal():
    """Uniform samples on [-6, 6] weighted by the N(0, 1) density are N(0, 1) samples: quantiles and coverage."""
    rng = np.random.default_rng(2)
    K, m = 4000, 3000
    s = rng.uniform(-6, 6, size=(m, K))
    w = np.exp(-0.5 * s ** 2)
    q = weighted_quantile(s[:2], w[:2], [0.025, 0.5, 0.975])
    np.testing.assert_allclose(q, [[-1.96] * 2, [0] * 2, [1.96] * 2], atol=0.08)
    truth = rng.normal(size=m)
    cov = sample_interval_coverage(truth, s, w, [0.5, 0.9])
    np.testing.assert_allclose(cov, [0.5, 0.9], atol=0.03)


def test_matching_is_greedy_by_score_like_the_devkit():
    gt = [dict(sample_token='a', translation=[0, 0, 0]), dict(sample_token='a', translation=[1.5, 0, 0]),
          dict(sample_token='b', translation=[0, 0, 0])]
    pred = [dict(sample_token='a', translation=[1.0, 0, 0], detection_score=0.5),   # nearest: gt 1 (0.5 m)
            dict(sample_token='a', translation=[1.2, 0, 0], detection_score=0.9),   # first: takes gt 1 (0.3 m)
            dict(sample_token='b', translation=[0, 2.5, 0], detection_score=0.7)]   # 2.5 m: no match
    pairs = match_by_center_distance(pred, gt, 2.0)
    assert sorted(pairs) == [(0, 0), (1, 1)]
