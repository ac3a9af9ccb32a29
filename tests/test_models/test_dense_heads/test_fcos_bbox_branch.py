"""FCOS 2D box branch of EPro-PnP-Det v2 (docs/method.md §10.13): layers, targets / decoding on a hand-made example,
GIoU loss value vs a hand computation, off by default."""
import math

import torch

from tests.test_models.test_dense_heads.test_fcos_emb_head import feats, make_head


def giou(a, b):
    """Plain-python GIoU of two x1y1x2y2 boxes."""
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def test_branch_off_by_default_and_forward():
    head = make_head()
    assert not head.with_bbox2d and not hasattr(head, 'conv_bbox') and head.loss_bbox2d is None
    assert len(head(feats(), with_bbox=True)) == 4
    head = make_head(bbox_branch=(16,), ref_offset_init_std=0.01)
    assert head.with_bbox2d and len(head.bbox_branch) == 1 and head.conv_bbox.out_channels == 4
    torch.testing.assert_close(head.conv_bbox.bias, torch.ones(4))
    assert head.conv_bbox.weight.std() < 0.02 and head.conv_ref_offset.weight.std() < 0.02
    assert torch.all(head.conv_ref_offset.bias == 0)
    assert len(head(feats())) == 4  # inference path: no box output
    x = feats()
    out = head(x, with_bbox=True)
    assert len(out) == 5
    for lvl, (s, b) in enumerate(zip((8, 16, 32), out[4])):
        assert b.shape == (2, 4, x[lvl].shape[-2], x[lvl].shape[-1]) and (b >= 0).all()
    # independent reference: with a zero 1×1 box conv the output is relu(bias)·stride at every point of every level
    # (stride scaling and the ReLU, whatever the features), so a wrong stride, a missing ReLU or a missing scale
    # shows up exactly
    with torch.no_grad():
        head.conv_bbox.weight.zero_()
        head.conv_bbox.bias.copy_(torch.tensor([1.5, -2., 0.25, 3.]))
        out = head(x, with_bbox=True)
    for s, b in zip((8, 16, 32), out[4]):
        want = torch.tensor([1.5, 0., 0.25, 3.]) * s
        torch.testing.assert_close(b, want[None, :, None, None].expand_as(b), rtol=0, atol=0)
    # the box branch reads the regression tower only: changing the classification tower leaves it unchanged,
    # changing the regression tower does not
    head = make_head(bbox_branch=(16,), ref_offset_init_std=0.01)
    with torch.no_grad():
        ref = head(x, with_bbox=True)[4]
        for p in head.cls_convs.parameters():
            p.add_(0.5)
        torch.testing.assert_close(head(x, with_bbox=True)[4], ref, rtol=0, atol=0)
        for p in head.reg_convs.parameters():
            p.add_(0.5)
        assert not all(torch.equal(a, b) for a, b in zip(head(x, with_bbox=True)[4], ref))


def test_targets_decoding_and_giou_loss_hand_example():
    head = make_head(bbox_branch=(16,))
    B, H, W = 1, 64, 96
    sizes = [(math.ceil(H / s), math.ceil(W / s)) for s in (8, 16, 32)]
    bbox_preds = [torch.zeros(B, 4, h, w) for h, w in sizes]
    # point 0: level 0 (stride 8), cell (i=2, j=3) → point (28, 20); point 1: level 1 (stride 16) cell (1, 1) → (24, 24)
    bbox_preds[0][0, :, 2, 3] = torch.tensor([10., 6., 14., 10.])  # l, t, r, b → box (18, 14, 42, 30)
    bbox_preds[1][0, :, 1, 1] = torch.tensor([4., 4., 4., 4.])     # → box (20, 20, 28, 28)
    M0 = sizes[0][0] * sizes[0][1]
    pos = torch.tensor([2 * sizes[0][1] + 3, M0 + 1 * sizes[1][1] + 1])
    gt = torch.tensor([[20., 12., 40., 32.], [16., 16., 40., 40.]])
    M = sum(h * w for h, w in sizes)
    boxes = torch.tensor([5., 5., 60., 50.]).repeat(B * M, 1)  # background points: some box, weight 0
    boxes[pos] = gt
    pred, target = head.bbox2d_targets(bbox_preds, boxes)
    assert pred.shape == target.shape == (B * M, 4)
    torch.testing.assert_close(pred[pos], torch.tensor([[-10., -6., 14., 10.], [-4., -4., 4., 4.]]))
    torch.testing.assert_close(target[pos], torch.tensor([[-8., -8., 12., 12.], [-8., -8., 16., 16.]]))
    w = torch.tensor([0.8, 0.3])
    ctr_t = torch.zeros(B * M).index_put((pos,), w)
    loss = head.loss_bbox2d_by_feat(bbox_preds, boxes, ctr_t, ctr_t.sum())
    pred_abs = [[18., 14., 42., 30.], [20., 20., 28., 28.]]
    expect = sum(wi * (1 - giou(p, g)) for wi, p, g in zip(w.tolist(), pred_abs, gt.tolist())) / w.sum().item()
    torch.testing.assert_close(loss, torch.tensor(0.5 * expect), rtol=1e-5, atol=1e-6)


def test_loss_by_feat_adds_loss_bbox2d_with_finite_gradients():
    head = make_head(bbox_branch=(16,))
    x = feats(B=1)
    cls, centers, ctr, emb, bbox = head(x, with_bbox=True)
    points, strides, ranges = head.get_points([c.shape[-2:] for c in cls], torch.float32, 'cpu')
    boxes = [torch.tensor([[10., 8., 50., 40.], [40., 20., 90., 60.]])]
    labels = [torch.tensor([0, 2])]
    centres = [torch.tensor([[30., 24.], [64., 40.]])]
    targets = head.get_targets(points, strides, ranges, boxes, labels, centres)
    losses = head.loss_by_feat(cls, centers, ctr, targets, boxes, centres, bbox_preds=bbox)
    assert set(losses) == {'loss_cls', 'loss_rp', 'loss_centerness', 'loss_bbox2d'}
    assert 0 < float(losses['loss_bbox2d']) < 0.5 * 2  # GIoU loss ∈ [0, 2], weight 0.5
    losses['loss_bbox2d'].backward()
    assert head.conv_bbox.weight.grad.abs().sum() > 0
    # no positives: zero-valued loss on the box outputs
    targets = head.get_targets(points, strides, ranges, [torch.zeros(0, 4)], [torch.zeros(0).long()],
                               [torch.zeros(0, 2)])
    losses = head.loss_by_feat(cls, centers, ctr, targets, [torch.zeros(0, 4)], [torch.zeros(0, 2)], bbox_preds=bbox)
    assert float(losses['loss_bbox2d']) == 0
