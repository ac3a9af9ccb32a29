"""The train/test pipeline on generated data: 2D boxes vs re-projected 3D boxes through ``img_transform``, image
content vs ``img_transform``, LiDAR object coordinates, filters, packing, dense maps and the preprocessor."""
import copy
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from epropnp_det.structures.boxes import apply_transform, project_boxes_to_2d, project_points
from tests.test_datasets.tiny_nuscenes import SIZE, build_dataset, tiny_nuscenes_root

CROP = (0, 104, 640, 360)


def train_pipeline(resize=True, flip_prob=1.0, crop=CROP, lidar=True, pack=True):
    p = [dict(type='EProPnPLoadImage'), dict(type='EProPnPLoadAnnotations')]
    if lidar:
        p.append(dict(type='EProPnPLoadLidarObjectCoords', convention='v1'))
    if resize:
        p.append(dict(type='EProPnPResize', scale=(640, 360)))
    p.append(dict(type='EProPnPRandomFlip', prob=flip_prob))
    p.append(dict(type='EProPnPCrop', crop_box=crop, trunc_ignore_thres=0.8))
    if pack:
        p.append(dict(type='EProPnPPack3DDetInputs'))
    return p


def run_all(ds):
    outs = []
    for i in range(len(ds)):
        out = ds.pipeline(copy.deepcopy(ds.get_data_info(i)))
        if out is not None:
            outs.append(out)
    return outs


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


@pytest.fixture(scope='module')
def packed(root):
    ds = build_dataset(root, train_pipeline())
    return ds, run_all(ds)


def test_2d_boxes_match_reprojected_3d_boxes(packed):
    """Re-projecting the 3D box corners with the original K and img_transform lands on the augmented 2D boxes."""
    ds, outs = packed
    assert len(outs) >= 12
    n, worst = 0, 0.0
    for out in outs:
        s = out['data_samples']
        meta = s.metainfo
        assert meta['flip'] and tuple(meta['img_shape']) == (256, 640)
        assert tuple(out['inputs']['img'].shape) == (3, 256, 640)
        boxes3d = s.gt_instances_3d.bboxes_3d.double()
        if len(boxes3d) == 0:
            continue
        ref, ok = project_boxes_to_2d(boxes3d, meta['cam2img'], SIZE, img_transform=meta['img_transform'],
                                      out_size=(640, 256))
        assert ok.all()
        err = np.abs(ref - s.gt_instances.bboxes.numpy()).max()
        worst = max(worst, err)
        n += len(boxes3d)
    assert n > 30
    assert worst < 0.5, worst
    # the homography is the documented chain: crop · flip · resize
    t = outs[0]['data_samples'].metainfo['img_transform']
    exp = np.array([[-1.6, 0, 640], [0, 1.6, -104], [0, 0, 1]])
    assert np.allclose(t, exp)


def test_img_transform_moves_pixels(root):
    """Without resize, augmented pixel T(u, v) holds exactly the original pixel (u, v)."""
    crop = (10, 60, 390, 225)
    ds = build_dataset(root, train_pipeline(resize=False, crop=crop, lidar=False, pack=False), filter_empty_gt=False)
    info = ds.get_data_info(0)
    res = ds.pipeline(copy.deepcopy(info))
    orig = mmcv.imread(info['images']['CAM_FRONT']['img_path'])
    t = res['img_transform']
    rng = np.random.default_rng(0)
    u = rng.integers(crop[0], crop[2], 200)
    v = rng.integers(crop[1], crop[3], 200)
    uv_aug = apply_transform(t, np.stack([u + 0.5, v + 0.5], 1)) - 0.5
    ua, va = np.round(uv_aug).astype(int).T
    assert np.allclose(uv_aug, np.round(uv_aug))
    assert np.array_equal(res['img'][va, ua], orig[v, u])


def test_lidar_object_coordinates(packed, root):
    from epropnp_det.ops.pnp.rotation import yaw_to_rot_mat
    ds, outs = packed
    total = 0
    for out in outs:
        s = out['data_samples']
        g = s.gt_instances_3d
        k = torch.as_tensor(s.metainfo['cam2img'], dtype=torch.float64)
        h, w = s.metainfo['ori_shape']
        assert len(g.x3d) == len(g.bboxes_3d) == len(g.x2d)
        for box, x3d, x2d in zip(g.bboxes_3d.double(), g.x3d, g.x2d):
            x3d, x2d = x3d.double(), x2d.double()
            assert (x3d.abs() <= box[0:3] / 2 + 1e-5).all()
            p_cam = x3d @ yaw_to_rot_mat(box[6]).T + box[3:6]
            assert torch.allclose(project_points(p_cam, k), x2d, atol=2e-3)
            assert ((x2d >= -0.5) & (x2d < torch.tensor([w - 0.5, h - 0.5], dtype=torch.float64))).all()
            total += len(x3d)
    assert total > 100
    # completeness against a brute-force count on one image
    out = outs[0]
    s = out['data_samples']
    info = ds.get_data_info(0)
    pts = np.fromfile(osp.join(root, 'samples/LIDAR_TOP', osp.basename(info['lidar_points']['lidar_path'])),
                      np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
    l2c = np.asarray(info['images'][s.metainfo['cam_name']]['lidar2cam'], np.float64)
    p = pts @ l2c[:3, :3].T + l2c[:3, 3]
    p = p[p[:, 2] > 0.1]
    k = np.asarray(s.metainfo['cam2img'], np.float64)
    uv = (p @ k.T)[:, :2] / p[:, 2:3]
    h, w = s.metainfo['ori_shape']
    p = p[(uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)]
    for box, x3d in zip(s.gt_instances_3d.bboxes_3d.double().numpy(), s.gt_instances_3d.x3d):
        c, s_, y = np.cos(box[6]), np.sin(box[6]), box[6]
        rot = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
        oc = (p - box[3:6]) @ rot
        assert (np.abs(oc) <= box[:3] / 2).all(1).sum() == len(x3d), y


def test_dataset_filters_and_velocity_mask(root):
    ds = build_dataset(root, [], filter_empty_gt=False)
    n_ign = n_gt = n_dropped = 0
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        ann = info['ann_info']
        raw = info['instances']
        keep = [r for r in raw if r['visibility'] >= 2]
        n_dropped += len(raw) - len(keep)
        is_gt = [r['truncation'] <= 0.8 and min(r['bbox_nearclip'][2] - r['bbox_nearclip'][0],
                                                r['bbox_nearclip'][3] - r['bbox_nearclip'][1]) >= 4 for r in keep]
        assert len(ann['gt_labels_3d']) == sum(is_gt) == len(ann['gt_bboxes']) == len(ann['velocities_valid'])
        assert len(ann['gt_bboxes_ignore']) == len(keep) - sum(is_gt)
        assert (ann['visibility'] >= 2).all() and (ann['truncation'] <= 0.8).all()
        n_gt += sum(is_gt)
        n_ign += len(keep) - sum(is_gt)
    assert n_gt > 30 and n_dropped > 0
    # NaN velocity -> 0 and flagged invalid
    info = copy.deepcopy(ds.get_data_info(0))
    inst = [r for r in info['instances'] if r['visibility'] >= 2 and r['truncation'] <= 0.8][0]
    inst['velocity'] = [float('nan'), float('nan')]
    ann = ds.parse_ann_info(info)
    j = list(ann['ann_tokens']).index(inst['ann_token'])
    assert not ann['velocities_valid'][j] and np.all(ann['velocities'][j] == 0)
    assert np.isfinite(ann['gt_bboxes_3d'].tensor.numpy()).all()
    assert ann['velocities_valid'].sum() == len(ann['velocities_valid']) - 1


def test_crop_ignore_rule_and_negative_crop():
    from mmdet3d.structures import CameraInstance3DBoxes

    from epropnp_det.datasets.transforms import EProPnPCrop
    res = dict(img=np.zeros((100, 200, 3), np.uint8),
               gt_bboxes=np.array([[10, 10, 50, 50], [10, 0, 50, 12], [150, 70, 190, 90], [0, 0, 5, 5]], np.float32),
               gt_bboxes_labels=np.arange(4), gt_labels_3d=np.arange(4), truncation=np.array([0, 0, .5, 0], np.float32),
               gt_bboxes_3d=CameraInstance3DBoxes(np.arange(36, dtype=np.float32).reshape(4, 9), box_dim=9),
               gt_x3d=[np.zeros((i, 3)) for i in range(4)], img_transform=np.eye(3))
    out = EProPnPCrop(crop_box=(0, 10, 200, 100), trunc_ignore_thres=0.8)(copy.deepcopy(res))
    # box 1 keeps 2/12 rows of its area (< 20 %) -> ignore; box 3 (y 0..5) leaves the crop -> dropped;
    # box 2: area_full = 800 / 0.5 = 1600, clipped area 800 >= 320 -> kept
    assert out['gt_labels_3d'].tolist() == [0, 2]
    assert [len(x) for x in out['gt_x3d']] == [0, 2]
    assert len(out['gt_bboxes_3d']) == 2
    assert np.allclose(out['gt_bboxes_ignore'], [[10, 0, 50, 2]])
    assert np.allclose(out['gt_bboxes'], [[10, 0, 50, 40], [150, 60, 190, 80]])
    assert np.allclose(out['img_transform'], [[1, 0, 0], [0, 1, -10], [0, 0, 1]])
    res['gt_bboxes'] = np.array([[0, 0, 5, 5]] * 4, np.float32)
    assert EProPnPCrop(crop_box=(0, 10, 200, 100))(copy.deepcopy(res)) is None
    assert EProPnPCrop(crop_box=(0, 10, 200, 100), allow_negative_crop=True)(copy.deepcopy(res)) is not None


def test_test_pipeline_and_pack_keys(root):
    from epropnp_det.datasets.transforms import EProPnPPack3DDetInputs
    pipe = [dict(type='EProPnPLoadImage'), dict(type='EProPnPResize', scale=(640, 360)),
            dict(type='EProPnPCrop', crop_box=CROP), dict(type='EProPnPPack3DDetInputs', keys=('img', ))]
    ds = build_dataset(root, pipe, test_mode=True)
    assert len(ds) == 12
    out = ds[7]
    meta = out['data_samples'].metainfo
    assert meta['sample_idx'] == 7 and meta['cam_name'] == 'CAM_FRONT_RIGHT' and not meta['flip']
    for key in ('cam2img', 'img_transform', 'ori_shape', 'img_shape', 'pad_shape', 'token', 'ego2global',
                'cam2ego', 'cam2global'):
        assert key in meta, key
    assert tuple(meta['ori_shape']) == (SIZE[1], SIZE[0])
    # cam2global = ego2global @ cam2ego here (the generator's sensors share a timestamp)
    info = ds.get_data_info(7)
    exp = np.asarray(info['ego2global']) @ np.asarray(info['images']['CAM_FRONT_RIGHT']['cam2ego'])
    assert np.allclose(meta['cam2global'], exp, atol=1e-4)
    assert len(out['data_samples'].gt_instances_3d) == 0
    with pytest.raises(ValueError, match='unknown keys'):
        EProPnPPack3DDetInputs(keys=('img', 'gt_foo'))


def test_dense_x2d_equals_warped_explicit_map():
    from epropnp_det.datasets.transforms import dense_x2d_from_transform
    from epropnp_det.structures.boxes import crop_transform, flip_transform
    h, w = 30, 40
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    explicit = np.stack([uu, vv], -1)                                   # v1: integer-centre (u, v)
    aug = explicit[:, ::-1][5:25, 3:40]                                 # flip, then crop (3, 5, 40, 25)
    padded = np.pad(aug, ((0, 12), (0, 11), (0, 0)), mode='edge')       # pad bottom/right to 32 x 48
    t = crop_transform(3, 5) @ flip_transform(w)
    x2d, mask = dense_x2d_from_transform(t, (20, 37), (32, 48), 'v1')
    assert np.allclose(x2d.transpose(1, 2, 0), padded, atol=1e-4)
    assert mask.sum() == 20 * 37 and mask[0, :20, :37].all()
    x2d_v2, _ = dense_x2d_from_transform(t, (20, 37), (32, 48), 'v2')
    assert np.allclose(x2d_v2, x2d + 0.5, atol=1e-4)


def test_data_preprocessor_stacks_dense_maps(packed):
    from mmdet3d.registry import MODELS
    ds, outs = packed
    pre = MODELS.build(dict(type='EProPnPDataPreprocessor', with_dense_x2d=True))
    batch = dict(inputs=[o['inputs'] for o in outs[:2]], data_samples=[o['data_samples'] for o in outs[:2]])
    batch = dict(inputs=dict(img=[b['img'] for b in batch['inputs']]), data_samples=batch['data_samples'])
    res = pre(batch, training=True)
    imgs = res['inputs']['imgs']
    assert tuple(imgs.shape) == (2, 3, 256, 640)
    dense, mask = res['inputs']['img_dense_x2d'], res['inputs']['img_dense_x2d_mask']
    assert tuple(dense.shape) == (2, 2, 256, 640) and tuple(mask.shape) == (2, 1, 256, 640)
    assert mask.min() == 1
    # normalised with the ImageNet mean/std after BGR -> RGB
    raw = outs[0]['inputs']['img'].float()
    exp = (raw[[2, 1, 0]] - torch.tensor([123.675, 116.28, 103.53])[:, None, None]) / \
        torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    assert torch.allclose(imgs[0], exp, atol=1e-4)
    # the dense map sends each input pixel centre back to the original image (v1 integer centre)
    t = np.linalg.inv(outs[0]['data_samples'].metainfo['img_transform'])
    back = apply_transform(t, np.array([[0.5, 0.5], [639.5, 255.5]])) - 0.5
    assert np.allclose(dense[0, :, 0, 0].numpy(), back[0], atol=1e-3)
    assert np.allclose(dense[0, :, 255, 639].numpy(), back[1], atol=1e-3)
