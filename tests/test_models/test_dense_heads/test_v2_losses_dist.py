"""v2 auxiliary losses under 2 gloo processes where one rank has no positives and no LiDAR point: both ranks make
the same collective calls (a sentinel all-reduce afterwards still pairs up), the all-reduced normalisers and the
depth loss's adaptive-weight buffer agree across ranks, and the values equal a single-process reference."""
import json
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(rank, has_objects):
    """FCOS losses with the box branch, and the depth loss, on one image; deterministic per rank."""
    from epropnp_det.models.layers.depth_branch import EProPnPDepthBranch
    from tests.test_models.test_dense_heads.test_fcos_emb_head import make_head
    head = make_head(bbox_branch=(16,))  # seeded inside
    gen = torch.Generator().manual_seed(10 + rank)
    x = [torch.randn(1, 8, h, w, generator=gen) for h, w in ((8, 12), (4, 6), (2, 3))]
    cls, centers, ctr, emb, bbox = head(x, with_bbox=True)
    points, strides, ranges = head.get_points([c.shape[-2:] for c in cls], torch.float32, 'cpu')
    if has_objects:
        boxes, labels = [torch.tensor([[10., 8., 50., 40.]])], [torch.tensor([1])]
        centres = [torch.tensor([[30., 24.]])]
    else:
        boxes, labels, centres = [torch.zeros(0, 4)], [torch.zeros(0).long()], [torch.zeros(0, 2)]
    targets = head.get_targets(points, strides, ranges, boxes, labels, centres)
    losses = head.loss_by_feat(cls, centers, ctr, targets, boxes, centres, bbox_preds=bbox)
    torch.manual_seed(0)
    br = EProPnPDepthBranch(embed_dims=8, loss_depth=dict(type='MVDGaussianMixtureNLLLoss', sigma=0.3,
                                                          freeze_sigma=False, delta=0.3, loss_weight=1.5))
    vmap = torch.randn(1, 8, 4, 6, generator=gen)
    pts = torch.tensor([[5., 6., 10.], [30., 20., 25.], [40., 9., 7.]]) if has_objects else torch.zeros(0, 3)
    K = torch.tensor([[[500., 0, 24], [0, 500, 16], [0, 0, 1]]])
    losses.update(br.loss(vmap, [pts], K, torch.eye(3)[None], torch.tensor([[48., 32.]]), 8))
    return {k: float(v.detach()) for k, v in losses.items()}, float(br.loss_depth.mean_inv_std)


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2, timeout=timedelta(seconds=60))
    losses, buf = _run(rank, has_objects=rank == 0)
    sentinel = torch.tensor([float(rank + 1)])
    dist.all_reduce(sentinel)
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(losses=losses, buf=buf, sentinel=float(sentinel)), f)
    dist.destroy_process_group()


def test_two_ranks_one_without_objects(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = [json.load(open(tmp_path / f'rank{r}.json')) for r in range(2)]
    assert r0['sentinel'] == r1['sentinel'] == 3.0
    assert r0['buf'] == r1['buf'] != 1.0  # adaptive weight updated from the all-reduced statistics, same everywhere
    assert r1['losses']['loss_bbox2d'] == 0 and r1['losses']['loss_depth'] == 0
    # rank 0's normalisers are averaged with rank 1's zeros: its box / depth losses are twice the 1-process values
    # (avg_factor halves), the adaptive buffer sees half the statistics' numerator and denominator (same ratio)
    ref, _ = _run(0, has_objects=True)
    assert abs(r0['losses']['loss_bbox2d'] - 2 * ref['loss_bbox2d']) < 1e-5
    assert abs(r0['losses']['loss_depth'] - 2 * ref['loss_depth']) < 1e-4 * max(1, abs(ref['loss_depth']))
