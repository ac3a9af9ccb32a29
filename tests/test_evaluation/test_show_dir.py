"""``tools/test.py --show-dir``: mmdet3d's ``Det3DVisualizationHook`` draws the project's predictions on every test
image (was: ``'data_sample' must contain 'img_path'``); ``--show`` without a display is a clear error."""
import glob
import os
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch

from tests.test_datasets.tiny_nuscenes import SIZE, tiny_nuscenes_root

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'epropnp_det_r18_synthetic.py')


def _load_test_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('_tool_test_show', osp.join(REPO, 'tools', 'test.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_show_without_display_is_a_clear_error(monkeypatch):
    if not sys.platform.startswith('linux'):
        pytest.skip('the display check is for Linux')
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    tool = _load_test_tool()
    with pytest.raises(RuntimeError, match='no display.*--show-dir'):
        tool.build_cfg(tool.parse_args([CONFIG, 'x.pth', '--show']))
    cfg = tool.build_cfg(tool.parse_args([CONFIG, 'x.pth', '--show-dir', 'vis', '--score-thr', '0.2']))
    vis = cfg.default_hooks.visualization
    assert vis.draw and vis.test_out_dir == 'vis' and vis.vis_task == 'mono_det' and vis.score_thr == 0.2


def test_show_dir_writes_every_test_image(tmp_path):
    """A randomly initialised r18 checkpoint, tools/test.py --show-dir on the generated val split (12 images): two
    drawn images per test image (projected 3D boxes; 2D boxes), named after it, of the original size, with boxes
    drawn on every one (score thresholds 0: every prediction is drawn); the 2D view keeps the image's pixels
    elsewhere."""
    from tests.test_models.test_detectors._helpers import build_detector
    root = tiny_nuscenes_root()
    model = build_detector('configs/epropnp_det_r18_synthetic.py')
    ckpt = str(tmp_path / 'random_init.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    work = tmp_path / 'work'
    # score_thr 0: the untrained model's scores (about 0.01) pass, so every image has predictions (mmdet3d's hook
    # writes no file for an image without any)
    opts = ['model.test_cfg.score_thr=0.0', f'test_dataloader.dataset.data_root={root}',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            f'test_evaluator.data_root={root}', f'test_evaluator.ann_file={root}/nuscenes_infos_val.pkl',
            f'test_evaluator.jsonfile_prefix={work}/res']
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'test.py'), CONFIG, ckpt, '--work-dir', str(work),
                          '--show-dir', 'vis', '--score-thr', '0', '--cfg-options'] + opts,
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    written = sorted(glob.glob(str(work / '*' / 'vis' / '*')))
    import mmengine
    val = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))['data_list']
    originals = {img['img_path']: osp.join(root, 'samples', cam, img['img_path'])
                 for info in val for cam, img in info['images'].items()}
    # per image: the projected 3D boxes (<name>.jpg) and the 2D boxes (<name>_2d.jpg)
    expected = sorted(list(originals) + [n[:-4] + '_2d.jpg' for n in originals])
    assert sorted(osp.basename(p) for p in written) == expected
    for path in written:
        drawn = mmcv.imread(path)
        orig = mmcv.imread(originals[osp.basename(path).replace('_2d.jpg', '.jpg')])
        assert drawn.shape == (SIZE[1], SIZE[0], 3)
        changed = (np.abs(drawn.astype(int) - orig.astype(int)).max(-1) > 40).mean()
        assert changed > 0.001, path              # predictions are drawn on every image
        if path.endswith('_2d.jpg'):              # the 2D view draws on the image's own pixels
            assert changed < 0.5, (path, changed)
        else:                                     # the 3D view is a matplotlib rendering of the image + boxes
            assert drawn.std() > 10, path
