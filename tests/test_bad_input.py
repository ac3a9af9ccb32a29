"""Fault cases of docs/bad_input.md: damaged copies of a generated nuScenes root and its info files, each with the
message it must give and the exact number of instances rejected (nothing else may be lost).

Case ids (``F01`` ...) are the rows of the table in docs/bad_input.md.
"""
import copy
import logging
import os
import os.path as osp
import re
import shutil
from contextlib import contextmanager

import mmengine
import numpy as np
import pytest

from tests.test_datasets.tiny_nuscenes import SIZE, build_dataset, tiny_nuscenes_root

CAMS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


@pytest.fixture(scope='module')
def train_infos(root):
    return mmengine.load(osp.join(root, 'nuscenes_infos_train.pkl'))


@pytest.fixture(scope='module')
def ref_count(root):
    """Camera instances of the undamaged train split as the dataset holds them (nothing rejected)."""
    ds = build_dataset(root, [], filter_empty_gt=False)
    assert ds.validation_report.num_rejected == 0
    return raw_instance_count(ds)


def total_instances(data) -> int:
    return sum(len(v) for info in data['data_list'] for v in info['cam_instances'].values())


def damaged(data, tmp_path, edit, name='nuscenes_infos_train.pkl'):
    """A deep copy of ``data`` changed by ``edit(copy)``, written to ``tmp_path/name``; returns the path."""
    data = copy.deepcopy(data)
    edit(data)
    path = str(tmp_path / name)
    mmengine.dump(data, path)
    return path


def instances_with_at_least(data, n: int):
    """(sample index, camera) of the images with ≥ n camera instances, in file order."""
    return [(i, cam) for i, info in enumerate(data['data_list']) for cam in CAMS
            if len(info['cam_instances'].get(cam, [])) >= n]


@contextmanager
def captured_warnings():
    """Records of the current MMLogger at WARNING and above."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []

    class _H(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = _H(level=logging.WARNING)
    logger.addHandler(h)
    try:
        yield records
    finally:
        logger.removeHandler(h)


def raw_instance_count(ds) -> int:
    return sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))


# ------------------------------------------------------------------------------------------------ info files
@pytest.mark.parametrize('test_mode', [False, True])
def test_f01_mmdet3d_own_infos(root, tmp_path, test_mode):
    """F01: infos from mmdet3d's own converter (no EPro-PnP fields): an error giving the create_data command, in
    training and in test mode (was: zero ground truth for testing, 'Cannot find valid image' for training)."""
    from epropnp_det.datasets.nuscenes_infos import create_nuscenes_infos
    from epropnp_det.datasets.validation import InfoValidationError
    create_nuscenes_infos(root, str(tmp_path), version='v1.0-mini', max_sweeps=0, with_epropnp_fields=False)
    ann = str(tmp_path / ('nuscenes_infos_val.pkl' if test_mode else 'nuscenes_infos_train.pkl'))
    with pytest.raises(InfoValidationError) as e:
        build_dataset(root, [], test_mode=test_mode, ann_file=ann)
    msg = str(e.value)
    assert ann in msg and "no 'epropnp_fields'" in msg
    assert (f'python tools/create_data.py nuscenes --root-path {root} --out-dir {tmp_path} --version v1.0-mini'
            in msg), msg


def test_f02_field_missing_from_later_instance(root, train_infos, ref_count, tmp_path):
    """F02: 'visibility' missing from the 2nd instance of one image: that instance rejected and counted (warn) with
    file, sample, camera, index and field; with bad_instances='error' the same message is an error."""
    from epropnp_det.datasets.validation import InfoValidationError
    (si, cam), = instances_with_at_least(train_infos, 2)[:1]
    token = train_infos['data_list'][si]['token']
    path = damaged(train_infos, tmp_path, lambda d: d['data_list'][si]['cam_instances'][cam][1].pop('visibility'))
    with captured_warnings() as logs:
        ds = build_dataset(root, [], ann_file=path, filter_empty_gt=False)
    rep = ds.validation_report
    assert rep.num_instances == total_instances(train_infos) and rep.num_rejected == 1
    assert dict(rep.counts) == {('visibility', 'missing'): 1}
    assert ref_count == total_instances(train_infos) and raw_instance_count(ds) == ref_count - 1
    expected = f"{path}: sample {token} {cam} instance 1: 'visibility' missing"
    assert str(rep.rejected[0]) == expected
    assert sum('rejected 1 of' in m for m in logs) == 1 and any(expected in m for m in logs)
    assert any('left out of the dataset' in m for m in logs)
    with pytest.raises(InfoValidationError, match="(?s)rejected 1 of .*bad_instances='warn' to use it without") as e:
        build_dataset(root, [], ann_file=path, bad_instances='error')
    assert expected in str(e.value) and 'tools/create_data.py' in str(e.value)


BAD_VALUES = {
    # case: (field, new value or function of the instance, expected (field, kind))
    'F03_nan_box3d': ('bbox_3d', lambda b: [b[0], float('nan')] + list(b[2:]), ('bbox_3d', 'non-finite')),
    'F04_nan_box2d': ('bbox_nearclip', lambda b: [float('nan')] + list(b[1:]), ('bbox_nearclip', 'non-finite')),
    'F05_zero_size_box3d': ('bbox_3d', lambda b: list(b[:3]) + [0.0] + list(b[4:]), ('bbox_3d', 'degenerate')),
    'F06_box3d_behind_camera': ('bbox_3d', lambda b: list(b[:2]) + [-abs(b[2])] + list(b[3:]),
                                ('bbox_3d', 'out of range')),
    'F07_empty_box2d': ('bbox_nearclip', lambda b: [b[2], b[1], b[0], b[3]], ('bbox_nearclip', 'degenerate')),
    'F08_box2d_outside_image': ('bbox_nearclip', lambda b: [b[0], b[1], SIZE[0] + 50.0, b[3]],
                                ('bbox_nearclip', 'outside image')),
    'F09_visibility_out_of_range': ('visibility', lambda v: 7, ('visibility', 'out of range')),
    'F10_nan_truncation': ('truncation', lambda v: float('nan'), ('truncation', 'out of range')),
    'F11_inf_center_2d': ('center_2d', lambda c: [float('inf'), c[1]], ('center_2d', 'non-finite')),
    'F12_box3d_wrong_length': ('bbox_3d', lambda b: list(b[:6]), ('bbox_3d', 'wrong shape')),
}


@pytest.mark.parametrize('case', sorted(BAD_VALUES))
def test_f03_f12_bad_instance_values(root, train_infos, ref_count, tmp_path, case):
    """F03-F12: one bad value in each of 3 instances (in different images): exactly those 3 are rejected, counted
    under their field and kind, and every other instance is kept."""
    key, change, expected = BAD_VALUES[case]
    where = instances_with_at_least(train_infos, 1)[:3]

    def edit(d):
        for si, cam in where:
            inst = d['data_list'][si]['cam_instances'][cam][0]
            inst[key] = change(inst[key])

    path = damaged(train_infos, tmp_path, edit)
    ds = build_dataset(root, [], ann_file=path, filter_empty_gt=False)
    rep = ds.validation_report
    assert rep.num_rejected == 3 and dict(rep.counts) == {expected: 3}
    assert [(p.token, p.camera, p.instance) for p in rep.rejected] == [
        (train_infos['data_list'][si]['token'], cam, 0) for si, cam in where]
    assert raw_instance_count(ds) == ref_count - 3
    # the remaining ground truth is finite
    for i in range(len(ds)):
        ann = ds.get_data_info(i)['ann_info']
        assert np.isfinite(ann['gt_bboxes_3d'].tensor.numpy()).all() and np.isfinite(ann['gt_bboxes']).all()


def test_f13_all_instances_rejected_is_an_error(root, train_infos, tmp_path):
    """F13: every instance bad → an error even with bad_instances='warn' (training would find no ground truth)."""
    from epropnp_det.datasets.validation import InfoValidationError

    def edit(d):
        for info in d['data_list']:
            for insts in info['cam_instances'].values():
                for inst in insts:
                    inst['truncation'] = 2.0

    path = damaged(train_infos, tmp_path, edit)
    n = total_instances(train_infos)
    with pytest.raises(InfoValidationError, match=f'rejected {n} of {n} camera instances') as e:
        build_dataset(root, [], ann_file=path)
    assert str(e.value).startswith('every camera instance of the info file was rejected, so it has no ground truth')
    assert "bad_instances='warn'" not in str(e.value)


IMAGE_FAULTS = {
    'F14_missing_cam2img': (lambda img: img.pop('cam2img'), "'cam2img' missing (camera intrinsics)"),
    'F15_nan_cam2img': (lambda img: img.__setitem__('cam2img', [[float('nan'), 0, 200], [0, 500, 110], [0, 0, 1]]),
                        "'cam2img' non-finite"),
    'F16_zero_focal': (lambda img: img.__setitem__('cam2img', [[0.0, 0, 200], [0, 500, 110], [0, 0, 1]]),
                       "'cam2img' degenerate: focal lengths fx=0"),
    'F17_missing_lidar2cam': (lambda img: img.pop('lidar2cam'), "'lidar2cam' missing (camera calibration)"),
    'F18_missing_width': (lambda img: img.pop('width'), "'width' missing"),
}


@pytest.mark.parametrize('case', sorted(IMAGE_FAULTS))
def test_f14_f18_bad_image_info(root, train_infos, tmp_path, case):
    """F14-F18: broken calibration or size of one image: an error at build time naming file, sample, camera and
    field (nothing of that image could be used)."""
    from epropnp_det.datasets.validation import InfoValidationError
    edit_img, expected = IMAGE_FAULTS[case]
    token = train_infos['data_list'][1]['token']
    path = damaged(train_infos, tmp_path, lambda d: edit_img(d['data_list'][1]['images']['CAM_BACK']))
    with pytest.raises(InfoValidationError) as e:
        build_dataset(root, [], ann_file=path)
    assert f'{path}: sample {token} CAM_BACK: {expected}' in str(e.value), str(e.value)
    assert 'fix: re-create the info file: `python tools/create_data.py nuscenes' in str(e.value)


def test_f19_missing_ego_pose(root, train_infos, tmp_path):
    """F19: a sample without ego2global: error naming file, sample and field."""
    from epropnp_det.datasets.validation import InfoValidationError
    token = train_infos['data_list'][2]['token']
    path = damaged(train_infos, tmp_path, lambda d: d['data_list'][2].pop('ego2global'))
    with pytest.raises(InfoValidationError, match=f"sample {token}: 'ego2global' missing"):
        build_dataset(root, [], ann_file=path)


# ------------------------------------------------------------------------------------------------ data files
@pytest.fixture(scope='module')
def load_image():
    from mmdet3d.registry import TRANSFORMS
    build_dataset(tiny_nuscenes_root(), [])  # registers
    return TRANSFORMS.build(dict(type='EProPnPLoadImage'))


def _item(root, cam_index=0):
    ds = build_dataset(root, [], filter_empty_gt=False)
    return ds.get_data_info(cam_index)


def _with_image(item, path):
    item = copy.deepcopy(item)
    cam = next(iter(item['images']))
    item['images'][cam]['img_path'] = path
    return item, cam


IMAGE_FILE_FAULTS = {
    # case: (how to damage the bytes, exception type name, expected text)
    'F20_truncated_jpeg': (lambda b: b[:len(b) // 2], 'DataFileError', 'truncated JPEG: no end-of-image marker'),
    'F21_jpeg_header_only': (lambda b: b[:100], 'DataFileError', 'truncated JPEG: no end-of-image marker'),
    'F22_not_an_image': (lambda b: b'this is not an image' * 50, 'DataFileError', 'cannot be decoded as an image'),
    'F23_empty_image': (lambda b: b'', 'DataFileError', 'empty file (0 bytes)'),
}


@pytest.mark.parametrize('case', sorted(IMAGE_FILE_FAULTS))
def test_f20_f23_damaged_image_file(root, load_image, tmp_path, case):
    """F20-F23: damaged image bytes: DataFileError naming sample, camera, file and what is wrong (was:
    'NoneType' object has no attribute 'shape', or a silently half-grey image)."""
    damage, exc, expected = IMAGE_FILE_FAULTS[case]
    item = _item(root)
    src = next(iter(item['images'].values()))['img_path']
    bad = str(tmp_path / osp.basename(src))
    with open(src, 'rb') as f, open(bad, 'wb') as g:
        g.write(damage(f.read()))
    item, cam = _with_image(item, bad)
    with pytest.raises(Exception) as e:
        load_image(item)
    assert type(e.value).__name__ == exc
    assert f"sample {item['token']} {cam}: image {bad}: {expected}" in str(e.value), str(e.value)


def test_f24_missing_image_file(root, load_image, tmp_path):
    """F24: a missing image: FileNotFoundError naming sample, camera and path."""
    item, cam = _with_image(_item(root), str(tmp_path / 'gone.jpg'))
    with pytest.raises(FileNotFoundError, match=f"sample {item['token']} {cam}: image file not found: .*gone.jpg"):
        load_image(item)


def test_f25_image_size_differs_from_info(root, load_image, tmp_path):
    """F25: an image of another size than the info says: DataFileError when loaded, and at build time with
    check_files=True (K refers to the info size)."""
    import mmcv
    item = _item(root)
    src = next(iter(item['images'].values()))['img_path']
    small = str(tmp_path / osp.basename(src))
    mmcv.imwrite(mmcv.imresize(mmcv.imread(src), (200, 112)), small)
    bad_item, cam = _with_image(item, small)
    with pytest.raises(Exception, match=f'{cam}: image .* is 200x112 but the info says {SIZE[0]}x{SIZE[1]}'):
        load_image(bad_item)
    # the same at build time: a copy of the root's CAM_FRONT folder with that image replaced
    prefix = tmp_path / 'CAM_FRONT'
    shutil.copytree(osp.dirname(src), prefix)
    shutil.copy(small, prefix / osp.basename(src))
    from epropnp_det.datasets.validation import InfoValidationError
    data_prefix = dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in CAMS})
    data_prefix['CAM_FRONT'] = str(prefix)
    with pytest.raises(InfoValidationError, match=f'CAM_FRONT: {prefix}.* is 200x112 but the info says'):
        build_dataset(root, [], data_prefix=data_prefix, check_files=True)
    assert len(build_dataset(root, [], check_files=True)) > 0   # the undamaged root passes


@pytest.fixture(scope='module')
def load_lidar():
    from mmdet3d.registry import TRANSFORMS
    build_dataset(tiny_nuscenes_root(), [])
    return TRANSFORMS.build(dict(type='EProPnPLoadLidarObjectCoords'))


def _lidar_item(root, load_image, path):
    item = load_image(copy.deepcopy(_item(root)))
    item['lidar_points'] = dict(item['lidar_points'], lidar_path=path)
    return item


def test_f26_missing_lidar_file(root, load_image, load_lidar, tmp_path):
    """F26: a missing LiDAR file: FileNotFoundError naming sample, camera and path."""
    item = _lidar_item(root, load_image, str(tmp_path / 'gone.pcd.bin'))
    with pytest.raises(FileNotFoundError, match=f"sample {item['token']} CAM_FRONT: LiDAR file not found"):
        load_lidar(item)


@pytest.mark.parametrize('cut,expected', [(7, 'not a whole number of points of 5 float32'), (None, 'empty')])
def test_f27_f28_wrong_size_lidar_file(root, load_image, load_lidar, tmp_path, cut, expected):
    """F27/F28: a truncated (7 bytes short) or empty LiDAR file: DataFileError with the byte count; the same file
    is caught at build time with check_files=True."""
    item = _item(root)
    src = item['lidar_points']['lidar_path']
    bad = str(tmp_path / osp.basename(src))
    data = open(src, 'rb').read()
    with open(bad, 'wb') as f:
        f.write(b'' if cut is None else data[:-cut])
    size = 0 if cut is None else len(data) - cut
    item = _lidar_item(root, load_image, bad)
    with pytest.raises(Exception, match=re.escape(f'LiDAR file {bad}: {size} bytes is {expected}')) as e:
        load_lidar(item)
    assert type(e.value).__name__ == 'DataFileError'


def test_f29_missing_lidar2cam_at_load(root, load_image, load_lidar):
    """F29: results without lidar2cam reaching the LiDAR transform: KeyError naming sample, camera and key."""
    item = load_image(copy.deepcopy(_item(root)))
    item.pop('lidar2cam')
    with pytest.raises(KeyError, match=f"sample {item['token']} CAM_FRONT: no 'lidar2cam'"):
        load_lidar(item)


def test_check_files_passes_on_good_data(root):
    """check_files=True on the undamaged root: every image and LiDAR file passes; nothing rejected."""
    ds = build_dataset(root, [], check_files=True, filter_empty_gt=False)
    assert len(ds) == 24 and ds.validation_report.num_rejected == 0
    assert ds.validation_report.num_images == 24 and ds.validation_report.num_samples == 4


def test_img_path_is_set_for_the_visualisation_hook(root, load_image):
    """EProPnPLoadImage sets img_path (the packing step's meta key; the visualisation hook reads it)."""
    item = _item(root)
    out = load_image(copy.deepcopy(item))
    assert out['img_path'] == next(iter(item['images'].values()))['img_path'] and osp.isfile(out['img_path'])


# ------------------------------------------------------------------------------------------------ tools
def test_f30_create_data_empty_val_split(tmp_path):
    """F30: tools/create_data.py on a generated root of one scene (no mini_val scene): train infos written, val
    skipped with a message naming the expected and present scenes (mmdet3d's converter crashed with
    UnboundLocalError: ignore_class_name)."""
    import importlib.util

    from epropnp_det.synthetic import GeneratorConfig, generate_dataset
    root = str(tmp_path / 'one_scene')
    generate_dataset(GeneratorConfig(out_dir=root, samples_per_scene=1, seed=1, image_size=(160, 90), num_scenes=1,
                                     workers=1, overwrite=True), progress=False)
    path = osp.join(osp.dirname(__file__), '..', 'tools', 'create_data.py')
    spec = importlib.util.spec_from_file_location('_create_data_cli_f30', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import io
    from contextlib import redirect_stderr
    err = io.StringIO()
    with redirect_stderr(err):
        mod.main(['nuscenes', '--root-path', root, '--version', 'v1.0-mini', '--max-sweeps', '0'])
    msg = err.getvalue()
    assert "warning: split 'val' of v1.0-mini is empty under" in msg, msg
    assert 'scene-0103' in msg and 'scene-0916' in msg and 'nuscenes_infos_val.pkl is not written' in msg
    assert os.path.isfile(osp.join(root, 'nuscenes_infos_train.pkl'))
    assert not os.path.exists(osp.join(root, 'nuscenes_infos_val.pkl'))
    assert len(mmengine.load(osp.join(root, 'nuscenes_infos_train.pkl'))['data_list']) == 1
