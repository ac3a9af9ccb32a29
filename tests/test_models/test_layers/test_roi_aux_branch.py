"""Auxiliary RoI branch (docs/method.md §5.6): RoI x2d, LiDAR cell assignment (v1 / v2 rules) vs per-point loops,
projection error coder, assignment matrix, flip correction, loss values vs direct formulas, gradients, empty batches."""
import math

import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS

import epropnp_det.models  # noqa: F401
from epropnp_det.datasets.transforms.formatting import dense_x2d_from_transform
from epropnp_det.models.layers.roi_aux_branch import (
    active_gts_and_pairs,
    cell_indices_v1,
    cell_indices_v2,
    dist_dim_proj_error,
    homography_x2d_roi,
    lidar_cell_targets,
    roi_align_safe,
)
from epropnp_det.models.losses import MVDGaussianMixtureNLLLoss, logsoftmax_across_rois
from epropnp_det.utils.op_counter import OpCounter

W, H = 96, 64  # augmented (network input) image
ORI_W, ORI_H = 120, 90


def _transforms(flip):
    """original → augmented: resize 0.8, crop y by 8, optional flip."""
    S = np.diag([0.8, 0.8, 1.])
    C = np.array([[1., 0, 0], [0, 1, -8], [0, 0, 1]])
    T = C @ S
    if flip:
        T = np.array([[-1., 0, W], [0, 1, 0], [0, 0, 1]]) @ T
    return T


def _rois():
    return torch.tensor([[0, 10., 8., 40., 30.], [0, 30., 12., 70., 50.], [1, 5., 5., 60., 40.]])


def test_homography_x2d_roi_equals_roi_align_of_dense_map():
    Ts = [_transforms(False), _transforms(True)]
    dense = torch.stack([torch.from_numpy(dense_x2d_from_transform(T, (H, W), (H, W), 'v1')[0]) for T in Ts])
    rois = _rois()
    T_roi = torch.tensor(np.stack([Ts[int(b)] for b in rois[:, 0]]), dtype=torch.float32)
    ref = roi_align_safe(dense, rois, (7, 5), 1.0)
    out = homography_x2d_roi(rois, T_roi, (7, 5), 'v1')
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=0)
    # cell (r, k) of RoI 0 (no flip) sits at T⁻¹ of its centre, minus 0.5 (v1 integer-centre convention)
    x = (10 + (1 + 0.5) * 30 / 5) / 0.8 - 0.5
    y = (8 + (2 + 0.5) * 22 / 7 + 8) / 0.8 - 0.5
    torch.testing.assert_close(out[0, :, 2, 1], torch.tensor([x, y]))


def _loop_cells_v1(x2d, obj, x2d_roi):
    out = []
    rh, rw = x2d_roi.shape[-2:]
    for p, o in zip(x2d.tolist(), obj.tolist()):
        idx = []
        for a, n in ((0, rw), (1, rh)):
            start, end = float(x2d_roi[o, a, 0, 0]), float(x2d_roi[o, a, -1, -1])
            rel = min(max((p[a] - start) / (end - start), 0.0), 1.0)
            idx.append(int(torch.tensor(rel * (n - 1), dtype=torch.float32).round()))
        out.append(idx)
    return torch.tensor(out)


def _loop_cells_v2(x2d, obj, Ts, rois, roi_shape):
    rh, rw = roi_shape
    out = []
    for p, o in zip(x2d.tolist(), obj.tolist()):
        q = Ts[o] @ np.array([p[0], p[1], 1.0])
        q = q[:2] / q[2]
        b = rois[o, 1:].tolist()
        idx = []
        for a, n in ((0, rw), (1, rh)):
            v = (q[a] - b[a]) / (b[a + 2] - b[a]) * n - 0.5
            idx.append(min(max(int(torch.tensor(v, dtype=torch.float32).round()), 0), n - 1))
        out.append(idx)
    return torch.tensor(out)


def _lidar_points(gen, rois_ori, n):
    """Random original-image points around each RoI (some outside it, to exercise the clamps)."""
    pts, obj = [], []
    for o, (x1, y1, x2, y2) in enumerate(rois_ori):
        u = x1 + (torch.rand(n, generator=gen) * 1.4 - 0.2) * (x2 - x1)
        v = y1 + (torch.rand(n, generator=gen) * 1.4 - 0.2) * (y2 - y1)
        pts.append(torch.stack((u, v), -1))
        obj.append(torch.full((n,), o))
    return torch.cat(pts), torch.cat(obj)


@pytest.mark.parametrize('rule', ['v1', 'v2'])
def test_lidar_cell_assignment_matches_per_point_loop(rule):
    gen = torch.Generator().manual_seed(0)
    rois = _rois()
    Ts = [_transforms(False), _transforms(True)]
    T_roi = np.stack([Ts[int(b)] for b in rois[:, 0]])
    roi_shape = (6, 4)
    inv = [np.linalg.inv(T) for T in T_roi]
    corners = [inv[o] @ np.array([[r[1], r[2], 1.], [r[3], r[4], 1.]]).T for o, r in enumerate(rois.tolist())]
    rois_ori = [(min(c[0]), min(c[1]), max(c[0]), max(c[1])) for c in corners]
    x2d, obj = _lidar_points(gen, rois_ori, 300)
    if rule == 'v1':
        x2d_roi = homography_x2d_roi(rois, torch.tensor(T_roi, dtype=torch.float32), roi_shape, 'v1')
        cells = cell_indices_v1(x2d, obj, x2d_roi)
        ref = _loop_cells_v1(x2d, obj, x2d_roi)
    else:
        cells = cell_indices_v2(x2d, obj, torch.tensor(T_roi, dtype=torch.float32), rois, roi_shape)
        ref = _loop_cells_v2(x2d, obj, T_roi, rois, roi_shape)
    assert torch.equal(cells, ref)
    assert cells[:, 0].max() == roi_shape[1] - 1 and cells[:, 1].max() == roi_shape[0] - 1 and cells.min() == 0
    # scatter-mean of object coordinates vs a dict accumulation
    x3d = torch.randn(len(x2d), 3, generator=gen, dtype=torch.float64)
    tgt, valid = lidar_cell_targets(x3d, obj, cells, len(rois), roi_shape)
    acc = {}
    for p, o, c in zip(x3d, obj.tolist(), cells.tolist()):
        acc.setdefault((o, c[1] * roi_shape[1] + c[0]), []).append(p)
    assert int(valid.sum()) == len(acc)
    for (o, c), ps in acc.items():
        torch.testing.assert_close(tgt[o, c], torch.stack(ps).mean(0))
    assert (tgt[~valid] == 0).all()


def test_flipped_roi_v1_cells_follow_the_augmented_layout():
    """In a flipped image the first RoI column is the right-most one in the original image: a point at the
    original right edge of the object must land in column 0."""
    T = _transforms(True)
    rois = torch.tensor([[0, 20., 10., 60., 40.]])
    x2d_roi = homography_x2d_roi(rois, torch.tensor(T[None], dtype=torch.float32), (4, 8), 'v1')
    right = x2d_roi[0, :, 0, 0]  # original coordinates of the first cell
    assert right[0] > x2d_roi[0, 0, 0, -1]
    cells = cell_indices_v1(right[None] + torch.tensor([[1., 0.]]), torch.tensor([0]), x2d_roi)
    assert cells.tolist() == [[0, 0]]


def test_dist_dim_proj_error_and_assignment():
    diff = torch.tensor([[[3., -1.5]]])
    err = dist_dim_proj_error(diff, torch.tensor([20.]), torch.tensor([[4., 1.5, 2.]]), torch.tensor([1000.]))
    torch.testing.assert_close(err, diff * 20 / (2.5 * 1000 * 0.2))
    err_near = dist_dim_proj_error(diff, torch.tensor([0.01]), torch.tensor([[1., 1., 1.]]), torch.tensor([10.]))
    torch.testing.assert_close(err_near, diff * 0.1 / (1 * 10 * 0.2))  # distance clamped at 0.1 m
    gt_inds = torch.tensor([5, 2, 5, 9, 2, 5])
    w = torch.tensor([1., 2., 3., 1., 2., 0.5])
    rois_all = torch.tensor([[0., 0, 0, 10, 10]] * 10)
    with OpCounter() as c:
        active, A, rois, pairs, active_host = active_gts_and_pairs(gt_inds, w, rois_all)
    assert len(c.syncs) == 1  # one host read for the active set and the pair count together
    assert active.tolist() == active_host == [2, 5, 9]
    torch.testing.assert_close(A.sum(1), torch.ones(3))
    torch.testing.assert_close(A[1], torch.tensor([1., 0, 3, 0, 0, 0.5]) / 4.5)
    torch.testing.assert_close(A[0], torch.tensor([0., 2, 0, 0, 2, 0]) / 4)
    assert torch.equal(rois, rois_all[[2, 5, 9]])
    assert list(zip(*[t.tolist() for t in pairs])) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_active_gts_and_pairs_brute_force():
    """Pairs among the active RoIs against a double loop over them (same image, positive-area intersection), on
    random boxes in 3 images, including inactive gts that overlap active ones."""
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        G_all = 30
        xy = torch.rand(G_all, 2, generator=g) * 100
        wh = torch.rand(G_all, 2, generator=g) * 40 + 1
        rois_all = torch.cat((torch.randint(0, 3, (G_all, 1), generator=g).float(), xy, xy + wh), 1)
        gt_inds = torch.randint(0, G_all, (40,), generator=g)
        w = torch.rand(40, generator=g)
        active, A, rois, (i, j), active_host = active_gts_and_pairs(gt_inds, w, rois_all)
        uniq = sorted(set(gt_inds.tolist()))
        assert active.tolist() == active_host == uniq
        want = []
        for a, ga in enumerate(uniq):
            for b, gb in enumerate(uniq):
                ra, rb = rois_all[ga].tolist(), rois_all[gb].tolist()
                inter_w = min(ra[3], rb[3]) - max(ra[1], rb[1])
                inter_h = min(ra[4], rb[4]) - max(ra[2], rb[2])
                if a != b and ra[0] == rb[0] and inter_w > 0 and inter_h > 0:
                    want.append((a, b))
        assert list(zip(i.tolist(), j.tolist())) == want and len(want) > 0
        for a, ga in enumerate(uniq):
            sel = gt_inds == ga
            torch.testing.assert_close(A[a], torch.where(sel, w, 0.) / w[sel].sum())


def _branch(**kw):
    torch.manual_seed(0)
    cfg = dict(type='EProPnPRoIAuxBranch', embed_dims=16, num_heads=4, roi_shape=(5, 6), output_stride=8,
               loss_proj=dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5),
               loss_regr=dict(type='mmdet.SmoothL1Loss', beta=0.05, loss_weight=0.25))
    cfg.update(kw)
    return MODELS.build(cfg)


def _inputs(gen, dtype=torch.float32):
    B, C = 2, 16
    key = torch.randn(B, C, H // 8, W // 8, generator=gen, dtype=dtype, requires_grad=True)
    value = torch.randn(B, C, H // 8, W // 8, generator=gen, dtype=dtype, requires_grad=True)
    rois = _rois().to(dtype)
    G = len(rois)
    T = torch.tensor(np.stack([_transforms(bool(b)) for b in rois[:, 0]]), dtype=dtype)
    K = torch.tensor([[200., 0, 60], [0, 200, 45], [0, 0, 1]], dtype=dtype).expand(G, 3, 3)
    boxes = torch.tensor([[4., 1.5, 1.8, -1., 0.5, 12., 0.3], [4.5, 1.6, 2., 1.5, 0.6, 15., -1.],
                          [0.8, 1.7, 0.6, 0., 0.7, 8., 2.]], dtype=dtype)
    query = torch.randn(G, 4, 1, 4, generator=gen, dtype=dtype, requires_grad=True)
    dims = boxes[:, :3] * 1.1
    dims.requires_grad_(True)
    ori_hw = torch.tensor([[ORI_H, ORI_W]], dtype=dtype).expand(G, 2)
    flip = rois[:, 0] == 1
    return dict(rois=rois, boxes3d=boxes, cam_mats=K, ori_hw=ori_hw, flip=flip, img_transforms=T, query=query,
                dims=dims, key_map=key, value_map=value)


def test_forward_flip_correction_and_attention():
    branch = _branch()
    gen = torch.Generator().manual_seed(1)
    inp = _inputs(gen)
    out = branch(inp['rois'], inp['key_map'], inp['value_map'], torch.zeros(3, dtype=torch.bool),
                 img_transforms=inp['img_transforms'])
    out_f = branch(inp['rois'], inp['key_map'], inp['value_map'], torch.tensor([False, True, True]),
                   img_transforms=inp['img_transforms'])
    assert out.noc.shape == (3, 4, 30, 3) and out.logstd.shape == (3, 4, 30, 2)
    torch.testing.assert_close(out_f.noc[0], out.noc[0])
    torch.testing.assert_close(out_f.noc[1:, ..., :2], out.noc[1:, ..., :2])
    torch.testing.assert_close(out_f.noc[1:, ..., 2], -out.noc[1:, ..., 2])
    attn = branch.attention(inp['query'], out.key_roi)
    manual = torch.einsum('ghd,ghdrc->ghrc', inp['query'][:, :, 0], out.key_roi.reshape(3, 4, 4, 5, 6)) / 2
    torch.testing.assert_close(attn, manual)
    # init: NOC bias on the Fibonacci sphere of radius 0.5 (values are small: weights x0.01)
    assert (out.noc.norm(dim=-1) - 0.5).abs().max() < 0.1


def _project(x3d, box, K):
    c, s = math.cos(box[6]), math.sin(box[6])
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=x3d.dtype)
    X = x3d @ R.T + box[3:6]
    uv = X @ K.T
    return uv[..., :2] / uv[..., 2:]


def test_loss_values_match_direct_formulas():
    branch = _branch().double()
    gen = torch.Generator().manual_seed(2)
    inp = _inputs(gen, torch.float64)
    G, Hh, (rh, rw) = 3, 4, branch.roi_shape
    lidar_x2d, lidar_x3d = [], []
    for g in range(G):
        box = inp['boxes3d'][g]
        oc = (torch.rand(200, 3, generator=gen, dtype=torch.float64) - 0.5) * box[:3]
        lidar_x3d.append(oc)
        lidar_x2d.append(_project(oc, box, inp['cam_mats'][g]))
    branch.train()
    losses = branch.loss(**inp, lidar_x3d=lidar_x3d, lidar_x2d=lidar_x2d)
    # ---- direct computation
    out = branch(inp['rois'], inp['key_map'], inp['value_map'], inp['flip'], img_transforms=inp['img_transforms'])
    x3d = out.noc * inp['dims'].detach()[:, None, None]
    attn = branch.attention(inp['query'], out.key_roi)
    err = []
    for g in range(G):
        box = inp['boxes3d'][g]
        proj = _project(x3d[g], box, inp['cam_mats'][g])  # all points are in front and inside the clamp bounds
        diff = proj - out.x2d_roi[g].reshape(2, rh * rw).T[None]
        err.append(diff * box[5] / (box[:3].mean() * inp['cam_mats'][g, 0, 0] * 0.2))
    err = torch.stack(err).reshape(G, Hh, rh, rw, 2)
    plain = MVDGaussianMixtureNLLLoss(adaptive_weight=False, reduction='none')
    nll = plain(err, None, logstd=out.logstd.reshape(err.shape),
                log_mix=logsoftmax_across_rois(attn, inp['rois'], extra_dim=1), rois=inp['rois'])
    ada = float(branch.loss_proj.mean_inv_std)
    assert ada != 1.0  # updated in training mode
    torch.testing.assert_close(losses['loss_proj'], 0.5 * nll.sum() / (G * rh * rw) / ada, rtol=1e-6, atol=0)
    tgt, valid = branch.regr_targets(inp['rois'], out.x2d_roi, inp['img_transforms'], lidar_x3d, lidar_x2d)
    assert valid.sum() >= 5
    e = (x3d - tgt[:, None]).norm(dim=-1) / inp['boxes3d'][:, :3].max(-1).values[:, None, None]
    sl1 = torch.where(e < 0.05, 0.5 * e * e / 0.05, e - 0.025)
    wgt = attn.reshape(G, Hh, -1).softmax(1) * valid[:, None]
    torch.testing.assert_close(losses['loss_regr'], 0.25 * (sl1 * wgt).sum() / valid.sum(), rtol=1e-6, atol=0)
    # gradients: everything but the dims (detached) is trained
    sum(losses.values()).backward()
    for name in ('query', 'key_map', 'value_map'):
        assert inp[name].grad is not None and inp[name].grad.abs().sum() > 0, name
    assert inp['dims'].grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in branch.parameters())


def test_v2_regr_form_and_dense_map_x2d():
    branch = _branch(loss_proj=None, loss_regr=dict(type='MVDGaussianMixtureNLLLoss', sigma=0.2, freeze_sigma=False,
                                                    delta=2.0, loss_weight=2.5))
    assert branch.regr_version == 'v2'
    gen = torch.Generator().manual_seed(3)
    inp = _inputs(gen)
    dense = torch.stack([torch.from_numpy(dense_x2d_from_transform(_transforms(f), (H, W), (H, W), 'v1')[0])
                         for f in (False, True)])
    lidar_x3d = [torch.randn(50, 3, generator=gen) for _ in range(3)]
    lidar_x2d = [torch.rand(50, 2, generator=gen) * 60 + 10 for _ in range(3)]
    losses = branch.loss(**inp, dense_x2d=dense, lidar_x3d=lidar_x3d, lidar_x2d=lidar_x2d)
    assert set(losses) == {'loss_regr'} and torch.isfinite(losses['loss_regr'])
    losses['loss_regr'].backward()
    assert branch.loss_regr.log_sigma.grad is not None
    # the v2 rule works on continuous coordinates: v1 LiDAR x2d are shifted by +0.5 first
    out = branch(inp['rois'], inp['key_map'], inp['value_map'], inp['flip'], dense_x2d=dense)
    tgt, valid = branch.regr_targets(inp['rois'], out.x2d_roi, inp['img_transforms'], lidar_x3d, lidar_x2d)
    obj = torch.repeat_interleave(torch.arange(3), 50)
    cells = cell_indices_v2(torch.cat(lidar_x2d) + 0.5, obj, inp['img_transforms'], inp['rois'], branch.roi_shape)
    ref, ref_valid = lidar_cell_targets(torch.cat(lidar_x3d), obj, cells, 3, branch.roi_shape)
    torch.testing.assert_close(tgt, ref)
    assert torch.equal(valid, ref_valid)


def test_no_active_gt_gives_zero_losses_connected_to_all_parameters():
    branch = _branch(loss_regr=dict(type='MVDGaussianMixtureNLLLoss', sigma=0.2, freeze_sigma=False, delta=2.0))
    gen = torch.Generator().manual_seed(4)
    inp = _inputs(gen)
    empty = {k: (v[:0] if k not in ('key_map', 'value_map') else v) for k, v in inp.items()}
    losses = branch.loss(**empty, lidar_x3d=[], lidar_x2d=[])
    assert set(losses) == {'loss_proj', 'loss_regr'}
    assert all(float(v.detach()) == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in branch.parameters())
    assert inp['key_map'].grad is not None


def _head_with_aux():
    from tests.test_models.test_dense_heads.test_deform_pnp_head import tiny_head
    return tiny_head(loss_proj=dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5),
                     loss_regr=dict(type='mmdet.SmoothL1Loss', beta=0.05, loss_weight=0.25), roi_shape=(6, 5)).train()


def _with_lidar(ds, gen, n=80):
    from tests.test_models.test_dense_heads.test_deform_pnp_head import K as K_head
    x3d, x2d = [], []
    for b in ds.gt_instances_3d.bboxes_3d.double():
        oc = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * b[:3]
        x3d.append(oc.float())
        x2d.append(_project(oc, b, torch.tensor(K_head)).float())
    ds.gt_instances_3d.x3d, ds.gt_instances_3d.x2d = x3d, x2d
    return ds


def test_head_feeds_the_active_gts_to_the_branch():
    """Head integration: RoIs = augmented 2D boxes of the unique sampled gts with their image index, queries and
    dims averaged with the row-normalised sample weights, per-gt LiDAR lists aligned with the RoIs."""
    from tests.test_models.test_dense_heads.test_deform_pnp_head import feats, sample
    head = _head_with_aux()
    assert head.roi_aux.roi_shape == (6, 5)
    gen = torch.Generator().manual_seed(5)
    samples = [_with_lidar(sample([[4., 1.6, 1.9, 1., 0.5, 10., 0.3], [1., 1.7, 0.7, -2., 0.6, 7., -1.]], [0, 7]),
                           gen),
               _with_lidar(sample([[4., 1.6, 1.9, -1., 0.5, 9., 2.0]], [0], flip=True), gen)]
    seen = {}
    orig = head.roi_aux.loss

    def spy(*args, **kwargs):
        seen['args'], seen['kwargs'] = args, kwargs
        return orig(*args, **kwargs)
    head.roi_aux.loss = spy
    losses = head.loss(feats(), samples)
    del head.roi_aux.loss
    rois, boxes3d, _, _, flip, _, query, dims = seen['args'][:8]
    all2d = torch.cat([s.gt_instances.bboxes for s in samples])
    all3d = torch.cat([s.gt_instances_3d.bboxes_3d for s in samples])
    img = torch.tensor([0, 0, 1])
    for g in range(rois.shape[0]):  # each RoI is one of the gts, with its own image, flip flag and 3D box
        k = int((all2d == rois[g, 1:]).all(1).nonzero()[0, 0])
        assert rois[g, 0] == img[k] and bool(flip[g]) == (img[k] == 1)
        torch.testing.assert_close(boxes3d[g], all3d[k])
        assert torch.equal(seen['kwargs']['lidar_x3d'][g], [x for s in samples for x in s.gt_instances_3d.x3d][k])
    assert query.requires_grad and query.shape[1:] == (4, 1, 8) and dims.shape == (rois.shape[0], 3)
    assert {'loss_proj', 'loss_regr'} <= set(losses)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_head_without_objects_keeps_the_branch_in_the_graph():
    from tests.test_models.test_dense_heads.test_deform_pnp_head import feats, sample
    head = _head_with_aux()
    samples = [sample(np.zeros((0, 7)), []), sample(np.zeros((0, 7)), [])]
    for s in samples:
        s.gt_instances_3d.x3d, s.gt_instances_3d.x2d = [], []
    losses = head.loss(feats(), samples)
    assert float(losses['loss_proj'].detach()) == 0 and float(losses['loss_regr'].detach()) == 0
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert float(head.roi_aux.loss_proj.mean_inv_std) == 1.0  # no statistics: buffer untouched
