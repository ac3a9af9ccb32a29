import torch

from epropnp_det.models.layers import EProPnPObjectBranches
from epropnp_det.models.task_modules import EProPnPMultiClassLogDimCoder


def test_shapes_init_and_class_selection():
    torch.manual_seed(0)
    br = EProPnPObjectBranches(embed_dims=16, num_classes=10)
    feat = torch.randn(3, 16)
    labels = torch.tensor([0, 7, 9])
    out = br(feat, labels, torch.tensor([False, True, False]))
    torch.testing.assert_close(out.scale, torch.ones(3, 2))  # exp(0) at init
    assert out.score_logit.shape == (3,) and out.attr_logits.shape == (3, 9) and out.velo.shape == (3, 2)
    h = br.pred_fc(feat)
    full = br.dim_branch(h).reshape(3, 10, 3)
    torch.testing.assert_close(out.dim_enc, full[torch.arange(3), labels])
    torch.testing.assert_close(out.dims, EProPnPMultiClassLogDimCoder().decode(out.dim_enc, labels))
    # flip correction negates v_x only
    raw = br.velo_branch(h)
    torch.testing.assert_close(out.velo[1], raw[1] * torch.tensor([-1., 1.]))
    torch.testing.assert_close(out.velo[0], raw[0])


def test_optional_branches_off():
    br = EProPnPObjectBranches(embed_dims=8, pred_velo=False, pred_attr=False, dim_cls_agnostic=True)
    out = br(torch.randn(2, 8), torch.tensor([1, 2]), torch.zeros(2, dtype=torch.bool))
    assert out.velo is None and out.attr_logits is None and out.dims.shape == (2, 3)
