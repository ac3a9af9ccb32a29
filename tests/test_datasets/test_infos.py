"""Info files: mmdet3d's converter output + the EPro-PnP fields, checked against the devkit."""
import os
import os.path as osp

import mmengine
import numpy as np
import pytest
import torch

from tests.test_datasets.tiny_nuscenes import SIZE, tiny_nuscenes_root


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


@pytest.fixture(scope='module')
def nusc(root):
    from nuscenes import NuScenes
    return NuScenes('v1.0-mini', root, verbose=False)


def test_standard_mmdet3d_layout(root):
    for split, n in (('train', 4), ('val', 2)):
        data = mmengine.load(osp.join(root, f'nuscenes_infos_{split}.pkl'))
        assert data['metainfo']['version'] == 'v1.0-mini' and data['metainfo']['epropnp_fields'] == '1.0'
        assert len(data['data_list']) == n
        info = data['data_list'][0]
        assert list(info['images']) == ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
                                        'CAM_BACK_RIGHT']
        for img in info['images'].values():
            assert osp.isfile(osp.join(root, 'samples', img['img_path'].split('__')[1], img['img_path']))
            assert (img['width'], img['height']) == SIZE
            assert np.asarray(img['lidar2cam']).shape == (4, 4)
        assert osp.isfile(osp.join(root, 'samples/LIDAR_TOP', info['lidar_points']['lidar_path']))
    assert not osp.exists(osp.join(root, '.mmdet3d_v1_infos'))


def test_epropnp_fields_match_devkit(root, nusc):
    from epropnp_det.structures.boxes import project_boxes_to_2d
    data = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))
    n_checked = 0
    for info in data['data_list']:
        sample = nusc.get('sample', info['token'])
        for cam, insts in info['cam_instances'].items():
            k = np.asarray(info['images'][cam]['cam2img'])
            for inst in insts:
                rec = nusc.get('sample_annotation', inst['ann_token'])
                assert rec['sample_token'] == sample['token']
                assert inst['instance_token'] == rec['instance_token']
                assert inst['visibility'] == int(rec['visibility_token'])
                assert inst['num_lidar_pts'] == rec['num_lidar_pts']
                assert 0.0 <= inst['truncation'] <= 1.0
                x1, y1, x2, y2 = inst['bbox_nearclip']
                assert 0 <= x1 < x2 <= SIZE[0] and 0 <= y1 < y2 <= SIZE[1]
                # the model box (mmdet3d bbox_3d, geometric centre) reprojects onto the same near-clipped box
                b = inst['bbox_3d']
                model = torch.tensor([[b[3], b[4], b[5], b[0], b[1], b[2], b[6]]], dtype=torch.float64)
                ref, ok = project_boxes_to_2d(model, k, SIZE)
                assert ok[0] and np.allclose(ref[0], inst['bbox_nearclip'], atol=0.05), (ref, inst['bbox_nearclip'])
                touches = x1 <= 1e-6 or y1 <= 1e-6 or x2 >= SIZE[0] - 1e-6 or y2 >= SIZE[1] - 1e-6
                if not touches:
                    assert inst['truncation'] == 0.0
                n_checked += 1
    assert n_checked > 20


def test_create_infos_out_dir_and_errors(root, tmp_path):
    from epropnp_det.datasets.nuscenes_infos import create_nuscenes_infos
    written = create_nuscenes_infos(root, str(tmp_path), version='v1.0-mini', max_sweeps=0, info_prefix='x')
    assert sorted(os.path.basename(p) for p in written) == ['x_infos_train.pkl', 'x_infos_val.pkl']
    assert not osp.exists(osp.join(root, 'x_infos_train.pkl'))   # nothing written to the dataset root
    a = mmengine.load(written[1])['data_list']
    b = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))['data_list']
    assert [i['token'] for i in a] == [i['token'] for i in b]
    with pytest.raises(FileNotFoundError, match='v1.0-trainval'):
        create_nuscenes_infos(root, str(tmp_path), version='v1.0-trainval')


def test_dataset_rejects_infos_without_epropnp_fields(root, tmp_path):
    """No instance has 'visibility': every instance is rejected, which is an error naming the fix (the mmdet3d
    converter's own files, without the metainfo flag, are tests/test_bad_input.py F01)."""
    from epropnp_det.datasets.validation import InfoValidationError
    from tests.test_datasets.tiny_nuscenes import build_dataset
    data = mmengine.load(osp.join(root, 'nuscenes_infos_train.pkl'))
    n = 0
    for info in data['data_list']:
        for insts in info['cam_instances'].values():
            for inst in insts:
                del inst['visibility']
                n += 1
    mmengine.dump(data, osp.join(tmp_path, 'plain.pkl'))
    with pytest.raises(InfoValidationError, match=f"(?s)rejected {n} of {n} .*{n} × 'visibility' missing.*create_data"):
        build_dataset(root, [], ann_file=str(tmp_path / 'plain.pkl'))


def test_create_data_cli(root, tmp_path):
    import importlib.util
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'create_data.py')
    spec = importlib.util.spec_from_file_location('_create_data_cli', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(['nuscenes', '--root-path', root, '--out-dir', str(tmp_path), '--version', 'v1.0-mini',
              '--max-sweeps', '0'])
    data = mmengine.load(str(tmp_path / 'nuscenes_infos_val.pkl'))
    assert data['metainfo']['epropnp_fields'] == '1.0' and len(data['data_list']) == 2
    with pytest.raises(SystemExit, match='error'):
        mod.main(['nuscenes', '--root-path', str(tmp_path / 'missing'), '--version', 'v1.0-mini'])
