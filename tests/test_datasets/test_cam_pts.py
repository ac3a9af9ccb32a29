"""v2 data: ``cam_pts_uvz`` (docs/method.md §10.4) = every LiDAR point of the camera inside the ORIGINAL canvas as
``[u, v, z]`` (raw K-projection, continuous in the v2 convention), untouched by flip / crop / resize, packed into
the data sample; and what the depth branch makes of it (the network-input pixel ``img_transform · uv``)."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch

from tests.test_datasets.test_pipeline import CROP
from tests.test_datasets.tiny_nuscenes import build_dataset, tiny_nuscenes_root


def _pipeline(flip_prob):
    return [dict(type='EProPnPLoadImage'), dict(type='EProPnPLoadAnnotations'),
            dict(type='EProPnPLoadLidarObjectCoords', convention='v2', with_cam_pts=True),
            dict(type='EProPnPResize', scale=(640, 360)), dict(type='EProPnPRandomFlip', prob=flip_prob),
            dict(type='EProPnPCrop', crop_box=CROP, trunc_ignore_thres=0.8), dict(type='EProPnPPack3DDetInputs')]


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


def _first(ds):
    for i in range(len(ds)):
        out = ds.pipeline(copy.deepcopy(ds.get_data_info(i)))
        if out is not None:
            return i, out
    raise AssertionError('no image survived the pipeline')


def test_cam_pts_brute_force_and_untouched_by_augmentation(root):
    ds = build_dataset(root, _pipeline(1.0))
    i, out = _first(ds)
    s = out['data_samples']
    info = ds.get_data_info(i)
    pts = np.fromfile(osp.join(root, 'samples/LIDAR_TOP', osp.basename(info['lidar_points']['lidar_path'])),
                      np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
    l2c = np.asarray(info['images'][s.metainfo['cam_name']]['lidar2cam'], np.float64)
    p = pts @ l2c[:3, :3].T + l2c[:3, 3]
    p = p[p[:, 2] >= 0.1]                                         # v2: z ≥ 0.1
    k = np.asarray(s.metainfo['cam2img'], np.float64)
    uv = (p @ k.T)[:, :2] / p[:, 2:3]
    h, w = s.metainfo['ori_shape']
    keep = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)   # v2 canvas [0, W) x [0, H)
    expect = np.concatenate([uv[keep], p[keep, 2:3]], 1)
    got = s.cam_pts_uvz.double().numpy()
    assert got.shape == expect.shape and len(got) > 100
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=2e-3)
    # the same points without flip: augmentation does not touch them (they stay in the original image)
    _, out0 = _first(build_dataset(root, _pipeline(0.0)))
    np.testing.assert_array_equal(out0['data_samples'].cam_pts_uvz.numpy(), s.cam_pts_uvz.numpy())


def test_depth_branch_maps_cam_pts_into_the_network_input(root):
    """A point projected through img_transform lands where the image content of that 3D point is: compare with
    projecting the camera point with K and applying flip / resize / crop by hand."""
    from epropnp_det.models.layers.depth_branch import EProPnPDepthBranch
    ds = build_dataset(root, _pipeline(1.0))
    _, out = _first(ds)
    s = out['data_samples']
    br = EProPnPDepthBranch(embed_dims=8, loss_depth=None, pixel_convention='v2')
    T = torch.as_tensor(s.metainfo['img_transform'], dtype=torch.float64)[None]
    K = torch.as_tensor(s.metainfo['cam2img'], dtype=torch.float64)[None]
    img_h, img_w = s.metainfo['img_shape'][:2]
    # plus a point high up in the sky of the original image: the crop removes it
    pts = torch.cat((s.cam_pts_uvz.double(), torch.tensor([[10., 5., 50.]], dtype=torch.float64)))
    sel = br.select_points([pts], K, T, torch.tensor([[img_w, img_h]], dtype=torch.float64))
    h0, w0 = s.metainfo['ori_shape']
    sx, sy = s.metainfo['scale_factor'][:2]
    uv = pts[:, :2]
    x = round(w0 * sx) - uv[:, 0] * sx - CROP[0]                  # resize, flip (resized width), crop
    y = uv[:, 1] * sy - CROP[1]
    inside = (x >= 0) & (x < img_w) & (y >= 0) & (y < img_h)
    # excluded, not border-clamped (docs/method.md §13.16 fix)
    assert 0 < int(inside.sum()) < len(uv) and not inside[-1]
    torch.testing.assert_close(sel.loc, torch.stack((x, y), -1)[inside], rtol=0, atol=1e-6)
    torch.testing.assert_close(sel.depth, pts[inside, 2])
