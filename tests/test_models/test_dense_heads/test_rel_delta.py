"""docs/method.md §10.15 ``learnable_rel_delta``: the relative Huber δ of the PnP cost as a learnable log-parameter of
the head.

Checks: the parameter exists only when asked for and starts at ``log(pnp.relative_delta)``; at initialisation every
loss (and the predictions) equal those of the fixed-δ head under the same seed; the pose loss gives it a finite,
nonzero gradient; the ops' gradient w.r.t. a tensor ``relative_delta`` matches central finite differences; with no
object the parameter stays in the graph (zero gradient, DDP-safe).
"""
import math

import numpy as np
import torch

from epropnp_det.ops.pnp import CameraParams
from epropnp_det.ops.pnp.cost import adaptive_huber_delta
from epropnp_det.ops.pnp.epropnp import sampled_pnp_cost
from epropnp_det.ops.pnp.testing import make_problems
from tests.test_models.test_dense_heads.test_deform_pnp_head import feats, sample, tiny_head

BOXES = [([[4., 1.6, 1.9, 1., 0.5, 10., 0.3], [1., 1.7, 0.7, -2., 0.6, 7., -1.]], [0, 7], False),
         ([[4., 1.6, 1.9, -1., 0.5, 9., 2.0]], [0], True)]


def _losses(head, seed=3):
    samples = [sample(b, lab, flip=f) for b, lab, f in BOXES]
    torch.manual_seed(seed)
    return head.loss(feats(), samples)


def test_parameter_only_when_enabled_and_initial_value():
    off = tiny_head()
    assert off.log_rel_delta is None and off.pose_stage.relative_delta() == 0.5
    assert not any('rel_delta' in n for n, _ in off.named_parameters())
    on = tiny_head(learnable_rel_delta=True, pnp=dict(mc_samples=32, num_iter=4, relative_delta=0.3,
                                                      solver_cfg=dict(num_iter=5)))
    names = [n for n, _ in on.named_parameters()]
    assert 'pose_stage.log_rel_delta' in names
    assert on.log_rel_delta.shape == () and on.log_rel_delta.requires_grad
    torch.testing.assert_close(on.log_rel_delta.detach(), torch.tensor(math.log(0.3)))
    torch.testing.assert_close(on.pose_stage.relative_delta().detach(), torch.tensor(0.3))
    # the default head's state dict is unchanged (old checkpoints load strictly)
    assert set(off.state_dict()) == set(on.state_dict()) - {'pose_stage.log_rel_delta'}


def test_losses_equal_at_init_and_gradient_reaches_the_parameter():
    for v2 in (False, True):
        kw = dict(detach_pose_x2d=not v2, detach_reg_inputs=not v2)
        ref = _losses(tiny_head(**kw).train())
        head = tiny_head(learnable_rel_delta=True, **kw).train()
        got = _losses(head)
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
        # gradient of the pose loss alone (the KL loss depends on δ through cost(y_gt) and the sample costs)
        got['loss_pose'].backward(retain_graph=True)
        g = head.log_rel_delta.grad
        assert g is not None and torch.isfinite(g) and g.abs() > 1e-6, g
        if v2:  # the undetached derivative regularisation also depends on δ
            head.log_rel_delta.grad = None
            (got['loss_reg_pos'] + got['loss_reg_orient']).backward()
            assert torch.isfinite(head.log_rel_delta.grad)


def test_ops_gradient_wrt_relative_delta_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    prob = make_problems(N=3, n=24, generator=gen, dtype=torch.float64)
    camera = CameraParams.from_image_shape(prob['cam_mats'], prob['img_hw'])
    x3d, x2d, w2d = prob['x3d'], prob['x2d'], torch.rand(3, 24, 2, generator=gen, dtype=torch.float64) + 0.5
    poses = prob['pose_gt'][None] + 0.3 * torch.randn(16, 3, 4, generator=gen, dtype=torch.float64)

    def f(log_rd):
        delta = adaptive_huber_delta(x2d, w2d, log_rd.exp())
        return sampled_pnp_cost(x3d, x2d, w2d, poses, camera, delta, backend='eager').sum()

    p = torch.tensor(math.log(0.5), dtype=torch.float64, requires_grad=True)
    f(p).backward()
    eps = 1e-5
    fd = (f(p.detach() + eps) - f(p.detach() - eps)) / (2 * eps)
    assert abs(float(fd)) > 1e-3  # the problem has points in the linear (δ-dependent) Huber zone
    torch.testing.assert_close(p.grad, fd, rtol=1e-6, atol=1e-8)


def test_no_objects_keeps_the_parameter_in_the_graph():
    head = tiny_head(learnable_rel_delta=True).train()
    samples = [sample(np.zeros((0, 7)), []), sample(np.zeros((0, 7)), [])]
    losses = head.loss(feats(), samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert head.log_rel_delta.grad is not None and head.log_rel_delta.grad == 0


def test_predictions_equal_at_init():
    cfg = dict(test_cfg=dict(score_thr=0.0, max_per_img=8, mc_samples=16, mc_seed=0))
    res = []
    for on in (False, True):
        head = tiny_head(learnable_rel_delta=on, **cfg).eval()
        samples = [sample(np.zeros((0, 7)), []), sample(np.zeros((0, 7)), [], flip=True)]
        with torch.no_grad():
            res.append(head.predict(feats(), samples))
    for a, b in zip(*res):
        assert len(a.scores_3d) == len(b.scores_3d)
        torch.testing.assert_close(a.bboxes_3d.tensor, b.bboxes_3d.tensor, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.pose_samples, b.pose_samples, rtol=1e-4, atol=1e-4)
    assert sum(len(r.scores_3d) for r in res[0]) > 0
