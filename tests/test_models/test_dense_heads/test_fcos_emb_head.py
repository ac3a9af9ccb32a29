import math

import pytest
import torch

from epropnp_det.models.dense_heads import EProPnPFCOSEmbHead

STRIDES = (8, 16, 32)
RANGES = ((-1, 24), (24, 48), (48, 1e8))


def make_head(**kw):
    torch.manual_seed(0)
    cfg = dict(num_classes=3, in_channels=8, feat_channels=16, emb_channels=8, strides=STRIDES,
               regress_ranges=RANGES, cls_branch=(16,), centerness_branch=(8,), offset_branch=(16,),
               emb_branch=(16,), norm_cfg=dict(type='GN', num_groups=4))
    cfg.update(kw)
    head = EProPnPFCOSEmbHead(**cfg)
    head.init_weights()
    return head


def feats(B=2, H=64, W=96):
    return [torch.randn(B, 8, math.ceil(H / s), math.ceil(W / s)) for s in STRIDES]


def test_forward_shapes_points_and_init():
    head = make_head(offset_cls_agnostic=False)
    cls, centers, ctr, emb = head(feats())
    assert [c.shape for c in cls] == [(2, 3, 8, 12), (2, 3, 4, 6), (2, 3, 2, 3)]
    assert centers[0].shape == (2, 6, 8, 12) and ctr[1].shape == (2, 1, 4, 6) and emb[2].shape == (2, 8, 2, 3)
    torch.testing.assert_close(head.conv_cls.bias, torch.full((3,), -math.log(99)))
    # center = offset * stride + point, point = (j*s + s/2, i*s + s/2)
    off = head.conv_ref_offset(head.offset_branch(
        torch.nn.Sequential(*head.reg_convs)(torch.zeros(1, 8, 2, 3)))) * 32
    c = head.forward_single(torch.zeros(1, 8, 2, 3), 2)[1]
    torch.testing.assert_close(c[0, 0, 1, 2] - off[0, 0, 1, 2], torch.tensor(2 * 32 + 16.))
    torch.testing.assert_close(c[0, 3, 1, 2] - off[0, 3, 1, 2], torch.tensor(1 * 32 + 16.))
    points, strides, ranges = head.get_points([x.shape[-2:] for x in cls], torch.float32, 'cpu')
    assert points.shape == (96 + 24 + 6, 2) and strides[100].item() == 16 and ranges[-1, 1].item() == 1e8


def brute_force_targets(head, points, strides, ranges, boxes, labels, centres, clip=True):
    out_l, out_c, out_g = [], [], []
    for p, s, r in zip(points.tolist(), strides.tolist(), ranges.tolist()):
        best, best_g = 1e8, -1
        for g, (b, c) in enumerate(zip(boxes.tolist(), centres.tolist())):
            rad = 1.5 * s
            lo = [c[0] - rad, c[1] - rad]
            hi = [c[0] + rad, c[1] + rad]
            if clip:
                lo, hi = [max(lo[0], b[0]), max(lo[1], b[1])], [min(hi[0], b[2]), min(hi[1], b[3])]
            inside = lo[0] < p[0] < hi[0] and lo[1] < p[1] < hi[1]
            m = max(p[0] - b[0], p[1] - b[1], b[2] - p[0], b[3] - p[1])
            d = math.hypot(p[0] - c[0], p[1] - c[1])
            if inside and r[0] <= m <= r[1] and d < best:
                best, best_g = d, g
        out_g.append(best_g)
        out_l.append(int(labels[best_g]) if best_g >= 0 else 3)
        out_c.append(math.exp(-2.5 * best / (1.414 * 1.5 * s)) if best_g >= 0 else 0.)
    return torch.tensor(out_l), torch.tensor(out_c), torch.tensor(out_g)


@pytest.mark.parametrize('clip', [True, False])
def test_targets_vs_brute_force(clip):
    head = make_head(clip_center_box=clip)
    sizes = [(8, 12), (4, 6), (2, 3)]
    points, strides, ranges = head.get_points(sizes, torch.float32, 'cpu')
    boxes = [torch.tensor([[10., 8., 30., 40.], [40., 10., 95., 60.], [20., 20., 26., 24.]]), torch.zeros(0, 4),
             torch.tensor([[0., 0., 60., 50.]])]
    labels = [torch.tensor([0, 2, 1]), torch.zeros(0, dtype=torch.long), torch.tensor([1])]
    centres = [torch.tensor([[20., 22.], [70., 30.], [23., 22.]]), torch.zeros(0, 2), torch.tensor([[33., 20.]])]
    t = head.get_targets(points, strides, ranges, boxes, labels, centres)
    assert t.labels.shape == (3, 126)
    offset = 0
    for b in range(3):
        bl, bc, bg = brute_force_targets(head, points, strides, ranges, boxes[b], labels[b], centres[b], clip)
        assert torch.equal(t.labels[b], bl)
        torch.testing.assert_close(t.centerness[b], bc.float(), atol=1e-5, rtol=0)
        assert torch.equal(t.gt_inds[b], torch.where(bg >= 0, bg + offset, bg))
        offset += len(boxes[b])
    assert (t.labels[0] < 3).sum() > 0 and (t.labels[2] < 3).sum() > 0 and (t.labels[1] == 3).all()


def _loss(head, boxes, labels, centres, ignore=None, B=1):
    torch.manual_seed(1)
    x = feats(B)
    cls, centers, ctr, emb = head(x)
    points, strides, ranges = head.get_points([c.shape[-2:] for c in cls], torch.float32, 'cpu')
    t = head.get_targets(points, strides, ranges, boxes, labels, centres, ignore)
    return head.loss_by_feat(cls, centers, ctr, t, boxes, centres), t


def test_loss_empty_gt_and_one_box():
    head = make_head()
    losses, _ = _loss(head, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, 2)])
    assert losses['loss_cls'] > 0
    assert losses['loss_rp'] == 0 and losses['loss_centerness'] == 0
    losses, t = _loss(head, [torch.tensor([[10., 8., 50., 40.]])], [torch.tensor([2])], [torch.tensor([[28., 25.]])])
    assert (t.labels < 3).sum() > 0
    for k, v in losses.items():
        assert v > 0 and torch.isfinite(v), k
    sum(losses.values()).backward()
    assert head.conv_ref_offset.weight.grad.abs().sum() > 0 and head.conv_centerness.weight.grad.abs().sum() > 0


def test_reference_point_loss_value():
    """With class-specific offsets the assigned label's channel pair is used; value checked by hand."""
    head = make_head(offset_cls_agnostic=False)
    boxes, labels, centres = [torch.tensor([[10., 8., 50., 40.]])], [torch.tensor([1])], [torch.tensor([[28., 25.]])]
    x = feats(1)
    cls, centers, ctr, emb = head(x)
    points, strides, ranges = head.get_points([c.shape[-2:] for c in cls], torch.float32, 'cpu')
    t = head.get_targets(points, strides, ranges, boxes, labels, centres)
    losses = head.loss_by_feat(cls, centers, ctr, t, boxes, centres)
    flat = head.flatten(centers)[0]
    pos = (t.labels[0] < 3).nonzero()[:, 0]
    pred = flat[pos].reshape(-1, 3, 2)[:, 1]
    e = (pred - centres[0]) / (0.2 * (torch.tensor([40., 32.]) + 4))
    sl1 = torch.where(e.abs() < 1, 0.5 * e ** 2, e.abs() - 0.5)
    w = t.centerness[0, pos]
    expect = (sl1 * w[:, None]).sum() / (2 * w.sum())
    torch.testing.assert_close(losses['loss_rp'], expect, rtol=1e-4, atol=1e-6)


def test_ignore_boxes_remove_negatives():
    head = make_head()
    args = ([torch.tensor([[10., 8., 50., 40.]])], [torch.tensor([2])], [torch.tensor([[28., 25.]])])
    base, _ = _loss(head, *args)
    ign, t = _loss(head, *args, ignore=[torch.tensor([[60., 0., 96., 64.]])])
    assert t.ignore.sum() > 0 and not (t.ignore & (t.labels < 3)).any()
    assert ign['loss_cls'] < base['loss_cls']
    head.use_ignore = False
    off, _ = _loss(head, *args, ignore=[torch.tensor([[60., 0., 96., 64.]])])
    torch.testing.assert_close(off['loss_cls'], base['loss_cls'])


def test_candidates_threshold_and_per_image_cap():
    head = make_head(offset_cls_agnostic=False)
    cls, centers, ctr, emb = head(feats())
    with torch.no_grad():
        cls[0][0, 1, 2, 3] = 10.
        ctr[0][0, 0, 2, 3] = 10.
        cls[1][1] = 10.
        ctr[1][1] = 10.
    c = head.get_candidates(cls, centers, ctr, emb, score_thr=0.5, max_per_img=10)
    assert (c.img_inds == 0).sum() == 1 and (c.img_inds == 1).sum() == 10
    i = (c.img_inds == 0).nonzero()[0, 0]
    assert c.labels[i] == 1 and c.point_inds[i] == 2 * 12 + 3 and c.strides[i] == 8
    torch.testing.assert_close(c.centers[i], centers[0][0, 2:4, 2, 3])
    torch.testing.assert_close(c.emb[i], emb[0][0, :, 2, 3])
    torch.testing.assert_close(c.scores[i], torch.sigmoid(torch.tensor(10.)))


def test_emitter_refuses_the_mmdet_entry_points_it_cannot_honour():
    """mmdet's data-sample ``loss`` / ``predict`` / ``loss_and_predict`` and box decoding ``predict_by_feat`` would
    call this head's methods with the wrong signatures; they raise a clear error, and no box coder is kept."""
    head = make_head()
    assert not hasattr(head, 'bbox_coder')
    for name in ('loss', 'predict', 'loss_and_predict', 'predict_by_feat'):
        with pytest.raises(NotImplementedError, match='query emitter'):
            getattr(head, name)(feats(), [])


def test_ignore_mask_of_a_batch_vs_brute_force():
    """Images with different numbers of ignore boxes (one with none) in one batch: each point is ignored iff it is
    inside one of its own image's ignore boxes (closed box) and is not a positive."""
    head = make_head()
    sizes = [(8, 12), (4, 6), (2, 3)]
    points, strides, ranges = head.get_points(sizes, torch.float32, 'cpu')
    boxes = [torch.tensor([[10., 8., 30., 40.]]), torch.zeros(0, 4), torch.tensor([[0., 0., 60., 50.]])]
    labels = [torch.tensor([0]), torch.zeros(0, dtype=torch.long), torch.tensor([1])]
    centres = [torch.tensor([[20., 22.]]), torch.zeros(0, 2), torch.tensor([[33., 20.]])]
    ignore = [torch.tensor([[0., 0., 40., 30.], [60., 40., 96., 64.]]), None, torch.tensor([[40., 0., 96., 12.]])]
    t = head.get_targets(points, strides, ranges, boxes, labels, centres, ignore)
    for b in range(3):
        want = [any(ib[0] <= p[0] <= ib[2] and ib[1] <= p[1] <= ib[3] for ib in
                    (ignore[b].tolist() if ignore[b] is not None else [])) and bool(t.labels[b, k] == 3)
                for k, p in enumerate(points.tolist())]
        assert t.ignore[b].tolist() == want
    assert t.ignore[0].sum() > 0 and t.ignore[2].sum() > 0 and not t.ignore[1].any()
