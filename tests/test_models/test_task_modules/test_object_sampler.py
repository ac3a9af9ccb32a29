import torch

from epropnp_det.models.task_modules import EProPnPObjectSampler


def _points(seed=0):
    gen = torch.Generator().manual_seed(seed)
    M = 200
    fg = torch.rand(M, generator=gen) < 0.3
    ctr = torch.rand(M, generator=gen, dtype=torch.float64) * fg
    gt = torch.randint(0, 5, (M,), generator=gen)
    return fg, ctr, gt


def test_counts_and_equal_per_gt_totals():
    fg, ctr, gt = _points()
    out = EProPnPObjectSampler(num_per_img=48)(fg, ctr, gt, num_imgs=2, generator=torch.Generator().manual_seed(1))
    assert out.point_inds.shape == (96,) and fg[out.point_inds].all()
    assert torch.equal(out.gt_inds, gt[out.point_inds])
    torch.testing.assert_close(out.weights.mean(), torch.tensor(1., dtype=torch.float64))
    totals = [out.weights[out.gt_inds == g].sum() for g in out.gt_inds.unique()]
    totals_u = [out.uniform_weights[out.gt_inds == g].sum() for g in out.gt_inds.unique()]
    torch.testing.assert_close(torch.stack(totals), totals[0].expand(len(totals)))
    torch.testing.assert_close(torch.stack(totals_u), totals_u[0].expand(len(totals_u)))
    # the first half are distinct uniform draws
    assert out.point_inds[:48].unique().numel() == 48


def test_importance_weights_are_unbiased():
    """E[(1/N) Σ_k w_imp(x_k) f(x_k)] = Σ_x prob(x) f(x), prob ∝ centerness (uniform part without replacement)."""
    fg, ctr, gt = _points(3)
    # f correlated with the centerness, so that uniform sampling alone would be visibly biased
    f = 3 * ctr + torch.randn(len(fg), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.2
    prob = ctr / ctr.sum()
    expect = (prob * f).sum()
    sampler = EProPnPObjectSampler(num_per_img=16)
    gen = torch.Generator().manual_seed(5)
    draws = 3000
    est = torch.stack([(lambda o: (o.importance * f[o.point_inds]).mean())(sampler(fg, ctr, gt, 1, gen))
                       for _ in range(draws)])
    # unbiased: the Monte-Carlo mean is within 4 standard errors of the exact expectation
    assert abs(est.mean() - expect) < 4 * est.std() / draws ** 0.5
    # without the weights the estimate is biased towards the uniform distribution
    biased = torch.stack([(lambda o: f[o.point_inds].mean())(sampler(fg, ctr, gt, 1, gen)) for _ in range(500)])
    assert abs(biased.mean() - expect) > 4 * biased.std() / 500 ** 0.5


def test_few_foreground_points_and_empty():
    fg = torch.zeros(50, dtype=torch.bool)
    fg[[3, 7]] = True
    ctr = fg.double() * 0.5
    gt = torch.zeros(50, dtype=torch.long)
    gt[7] = 1
    out = EProPnPObjectSampler(num_per_img=10)(fg, ctr, gt, num_imgs=1)
    assert out.point_inds.shape == (10,) and set(out.point_inds.tolist()) <= {3, 7}
    empty = EProPnPObjectSampler()(torch.zeros(5, dtype=torch.bool), torch.zeros(5), torch.zeros(5).long(), 2)
    assert empty.point_inds.numel() == 0 and empty.weights.numel() == 0
