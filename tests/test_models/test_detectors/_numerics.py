"""Fixed-seed numerics of the three model variants (v1, v1b, v2), used to check that a refactoring of the head and
its pose stage changes no number. Not a test module (no ``test_`` prefix).

:func:`record` builds the synthetic-size detector of a variant config, runs one training forward + backward on a
fixed two-image batch (LiDAR object coordinates and camera points included, so every loss of every variant is
active), then inference (plain, with Monte-Carlo pose samples and, for v2, Monte-Carlo scoring) and flip test-time
augmentation, and returns every loss, the gradient norm of every head parameter and every prediction field as
float64 CPU tensors.

The reference values in ``tests/data/golden/head_numerics.pt`` were written by::

    python -m tests.test_models.test_detectors._numerics tests/data/golden/head_numerics.pt

from the commit before the pose stage left the head (5d95cf8, "Demo: a tilted camera's rectified image ..."). The
state-dict key names and shapes of each variant at that commit are saved with them (``state_dict_layout``), so a
checkpoint of the old layout can be rebuilt from them (zeros of the recorded shapes) and loaded.
"""
import math
import sys

import numpy as np
import torch

VARIANTS = dict(v1='configs/epropnp_det_r18_synthetic.py', v1b='configs/epropnp_det_r18_synthetic_v1b.py',
                v2='configs/epropnp_det_r18_synthetic_v2.py')
K = np.array([[300., 0., 160.], [0., 300., 64.], [0., 0., 1.]])
W, H = 320, 128
BOXES = (([[4., 1.6, 1.9, 1., 0.5, 12., 0.3], [0.7, 1.7, 0.7, -2., 0.6, 8., -1.], [4.2, 1.5, 1.8, 2.2, 0.5, 13., 1.2]],
          [0, 7, 0], False),
         ([[4.5, 1.7, 2., -1.5, 0.6, 10., 2.]], [0], True))


def _yaw_mat(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, 0., s], [0., 1., 0.], [-s, 0., c]], dtype=torch.float64)


def _box_2d(boxes):
    """Axis-aligned hull of the projected corners (every corner in front of the camera here), clipped to the image."""
    out = []
    k = torch.as_tensor(K)
    for b in boxes.double():
        signs = torch.tensor([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=torch.float64) - 0.5
        p = (signs * b[:3]) @ _yaw_mat(float(b[6])).T + b[3:6]
        uv = (p @ k.T)[:, :2] / p[:, 2:]
        lo, hi = uv.amin(0).clamp(min=0), uv.amax(0)
        hi = torch.minimum(hi, torch.tensor([W, H], dtype=torch.float64))
        out.append(torch.cat((lo, hi)))
    return torch.stack(out) if out else torch.zeros(0, 4, dtype=torch.float64)


def make_sample(boxes, labels, flip, gen):
    """One ``Det3DDataSample`` of a W×H image with intrinsics K, gt boxes (model convention), LiDAR object
    coordinates (40 points per box) and camera points ``cam_pts_uvz``."""
    from mmdet3d.structures import Det3DDataSample
    from mmengine.structures import InstanceData
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 7)
    b2d = _box_2d(boxes)
    T = np.eye(3)
    if flip:
        T = np.array([[-1., 0, W], [0, 1, 0], [0, 0, 1]])
        b2d = torch.stack((W - b2d[:, 2], b2d[:, 1], W - b2d[:, 0], b2d[:, 3]), -1)
    ds = Det3DDataSample()
    ds.set_metainfo(dict(cam2img=K, img_transform=T, img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W), flip=flip))
    n = len(labels)
    k = torch.as_tensor(K)
    x3d, x2d, cam = [], [], []
    for b in boxes.double():
        local = (torch.rand(40, 3, generator=gen, dtype=torch.float64) - 0.5) * b[:3]
        p = local @ _yaw_mat(float(b[6])).T + b[3:6]
        uv = (p @ k.T)[:, :2] / p[:, 2:3]
        x3d.append(local.float())
        x2d.append(uv.float())
        cam.append(torch.cat((uv, p[:, 2:3]), 1))
    ground = torch.stack((torch.rand(200, generator=gen, dtype=torch.float64) * 20 - 10,
                          torch.full((200,), 1.5, dtype=torch.float64),
                          torch.rand(200, generator=gen, dtype=torch.float64) * 30 + 3), 1)
    uv = (ground @ k.T)[:, :2] / ground[:, 2:3]
    cam = torch.cat(cam + [torch.cat((uv, ground[:, 2:3]), 1)])
    cam = cam[(cam[:, 0] >= 0) & (cam[:, 0] < W) & (cam[:, 1] >= 0) & (cam[:, 1] < H)]
    ds.gt_instances_3d = InstanceData(
        bboxes_3d=boxes, labels_3d=torch.tensor(labels).long(), attr_labels=torch.full((n,), 6).long(),
        velocities=torch.linspace(-1, 1, 2 * n).reshape(n, 2), velocities_valid=torch.ones(n, dtype=torch.bool))
    ds.gt_instances_3d.x3d, ds.gt_instances_3d.x2d = x3d, x2d
    ds.gt_instances = InstanceData(bboxes=b2d.float(), labels=torch.tensor(labels).long())
    ds.cam_pts_uvz = cam.float()
    return ds


def make_batch(model, training, flip_all=None):
    gen = torch.Generator().manual_seed(5)
    samples = [make_sample(b, lab, flip if flip_all is None else flip_all, gen) for b, lab, flip in BOXES]
    imgs = [torch.randint(0, 255, (3, H, W), generator=gen).float() for _ in samples]
    return model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples), training=training)


def _pred_fields(prefix, results, out):
    for i, ds in enumerate(results):
        p = ds.pred_instances_3d
        for k in ('scores_3d', 'labels_3d', 'attr_labels', 'pose_cov', 'pose_samples', 'pose_sample_weights',
                  'score3d'):
            if k in p:
                out[f'{prefix}/{i}/{k}'] = p[k].detach().double().cpu()
        out[f'{prefix}/{i}/bboxes_3d'] = p.bboxes_3d.tensor.detach().double().cpu()
        out[f'{prefix}/{i}/bboxes_2d'] = ds.pred_instances.bboxes.detach().double().cpu()


def record(variant):
    """Numbers of one variant (see module docstring): ``{name: float64 tensor}``."""
    from tests.test_models.test_detectors._helpers import build_detector
    model = build_detector(VARIANTS[variant])
    head = model.bbox_head
    out = {}
    model.train()
    data = make_batch(model, True)
    torch.manual_seed(11)
    losses = model(**data, mode='loss')
    for k, v in losses.items():
        out[f'loss/{k}'] = v.detach().double().cpu().reshape(-1)
    loss, _ = model.parse_losses(losses)
    loss.backward()
    for n, p in head.named_parameters():
        if p.grad is not None:
            out[f'grad/{n}'] = p.grad.detach().double().norm().reshape(1)
    model.eval()
    cfg = head.test_cfg
    saved = dict(cfg)
    try:
        cfg.update(score_thr=0.0, max_per_img=6, mc_samples=4, mc_seed=7)
        data = make_batch(model, False)
        with torch.no_grad():
            _pred_fields('pred', model(**data, mode='predict'), out)
        if variant == 'v2':
            cfg.update(mc_scoring_ratio=0.5, mc_scoring_samples=16, mc_samples=0)
            with torch.no_grad():
                _pred_fields('pred_mc', model(**make_batch(model, False), mode='predict'), out)
        cfg.update(mc_samples=0, mc_scoring_ratio=0.0)
        from epropnp_det.models.detectors import EProPnPFlipTTAModel
        gen = torch.Generator().manual_seed(9)
        img = torch.randint(0, 255, (3, H, W), generator=gen).float()
        samples = [make_sample(BOXES[0][0], BOXES[0][1], False, torch.Generator().manual_seed(1)),
                   make_sample(BOXES[0][0], BOXES[0][1], True, torch.Generator().manual_seed(1))]
        raw = dict(inputs=[dict(img=[img]), dict(img=[img.flip(-1)])], data_samples=[[samples[0]], [samples[1]]])
        with torch.no_grad():
            res = EProPnPFlipTTAModel(module=model).test_step(raw)
        _pred_fields('tta', res, out)
    finally:
        cfg.clear()
        cfg.update(saved)
    return out


def state_dict_layout(variant):
    """``{key: shape}`` of the variant's detector state dict."""
    from tests.test_models.test_detectors._helpers import build_detector
    model = build_detector(VARIANTS[variant])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


if __name__ == '__main__':
    torch.set_num_threads(1)
    result = dict(numbers={v: record(v) for v in VARIANTS}, state_dict_layout={v: state_dict_layout(v)
                                                                               for v in VARIANTS})
    torch.save(result, sys.argv[1])
    print({v: len(n) for v, n in result['numbers'].items()})
