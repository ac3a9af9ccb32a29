"""Intrinsics files and input collection of the demo: formats, per-image lookup, and the error messages."""
import json

import cv2
import numpy as np
import pytest

from epropnp_det.apis import (
    CalibError,
    Calibration,
    InputError,
    collect_inputs,
    intrinsics_matrix,
    load_calibration,
    read_input,
)


def test_json_default_and_per_image(tmp_path):
    k_default = [[500., 0, 320], [0, 510., 180], [0, 0, 1]]
    k_a = [[700., 0, 400, 0], [0, 700., 300, 0], [0, 0, 1, 0]]            # 3x4 projection: top-left 3x3 used
    path = tmp_path / 'calib.json'
    path.write_text(json.dumps({'cam2img': k_default, 'images': {'a.png': {'cam2img': k_a},
                                                                 'b.jpg': {'intrinsics': [1, 2, 3, 4]}}}))
    calib = load_calibration(str(path))
    np.testing.assert_array_equal(calib.lookup('/some/dir/a.png'), np.asarray(k_a)[:3, :3])
    np.testing.assert_array_equal(calib.lookup('b.jpg'), [[1, 0, 3], [0, 2, 4], [0, 0, 1]])
    np.testing.assert_array_equal(calib.lookup('other.png'), k_default)


def test_kitti_txt(tmp_path):
    p2 = [721.5, 0, 609.6, 44.9, 0, 721.5, 172.9, 0.2, 0, 0, 1, 0.003]
    path = tmp_path / '000001.txt'
    path.write_text('P0: ' + ' '.join(['0'] * 12) + '\nP2: ' + ' '.join(map(str, p2)) + '\n')
    np.testing.assert_allclose(load_calibration(str(path)).lookup('x.png'), np.reshape(p2, (3, 4))[:, :3])


@pytest.mark.parametrize('content, message', [
    ('{"images": {"a.png": {"cam2img": [[1, 0], [0, 1]]}}}', 'must be 3x3'),
    ('{"cam2img": [[-5, 0, 1], [0, 5, 1], [0, 0, 1]]}', 'focal lengths must be positive'),
    ('{"cam2img": [[5, 0, 1], [0, 5, 1], [0, 1, 1]]}', 'last row'),
    ('{"foo": 1}', 'neither'),
    ('{not json', 'not valid JSON'),
    ('hello: 1 2 3', 'no "P2:"'),
])
def test_malformed_files_name_file_and_problem(tmp_path, content, message):
    path = tmp_path / ('bad.json' if content.startswith('{') else 'bad.txt')
    path.write_text(content)
    with pytest.raises(CalibError, match=message) as info:
        load_calibration(str(path))
    assert str(path) in str(info.value)


def test_missing_calibration_entries():
    with pytest.raises(CalibError, match='not found'):
        load_calibration('/no/such/calib.json')
    calib = Calibration(per_image={'a.png': intrinsics_matrix(1, 1, 0, 0)}, source='c.json')
    with pytest.raises(CalibError, match=r'b\.png: no intrinsics in c\.json'):
        calib.lookup('b.png')
    with pytest.raises(CalibError, match='4 numbers'):
        Calibration.from_intrinsics([1, 2, 3])


def test_collect_inputs(tmp_path):
    img = np.full((20, 30, 3), 128, np.uint8)
    (tmp_path / 'dir').mkdir()
    for name in ('b.png', 'a.jpg'):
        cv2.imwrite(str(tmp_path / 'dir' / name), img)
    (tmp_path / 'dir' / 'notes.txt').write_text('x')
    cv2.imwrite(str(tmp_path / 'c.png'), img)
    items = collect_inputs([str(tmp_path / 'dir'), str(tmp_path / 'c.png')])
    assert [it.name for it in items] == ['a', 'b', 'c'] and all(it.frame is None for it in items)
    assert read_input(items[0]).shape == (20, 30, 3)
    with pytest.raises(InputError, match='no such file'):
        collect_inputs([str(tmp_path / 'missing.png')])
    with pytest.raises(InputError, match='not an image'):
        collect_inputs([str(tmp_path / 'dir' / 'notes.txt')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match='no image files'):
        collect_inputs([str(tmp_path / 'empty')])
    with pytest.raises(InputError, match='same outputs'):
        collect_inputs([str(tmp_path / 'c.png'), str(tmp_path / 'c.png')])
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png at all')
    with pytest.raises(InputError, match='broken.png: cannot read image'):
        read_input(collect_inputs([str(broken)])[0])


def test_video_frames_sampled_at_rate(tmp_path):
    path = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip('OpenCV has no MJPG writer here')
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    items = collect_inputs([path], video_fps=2.0)      # 10 fps video, 2 fps wanted: every 5th frame
    assert [it.frame for it in items] == [0, 5, 10, 15]
    assert items[1].name == 'clip_f000005' and items[1].calib_name == 'clip.avi'
    frame = read_input(items[2])
    assert frame.shape == (48, 64, 3) and abs(float(frame.mean()) - 100) < 6
    assert len(collect_inputs([path], video_fps=None)) == 20
