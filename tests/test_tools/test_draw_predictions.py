"""``tools/draw_predictions.py`` with ``--orient-hist`` and ``--depth`` (docs/method.md §10.17) on the tiny
generated dataset of ``tests/test_datasets/tiny_nuscenes.py`` and a randomly initialised CPU v2 model (r18,
synthetic config)."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/epropnp_det_r18_synthetic_v2.py')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import epropnp_det.models  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('ckpt') / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=cfg.class_names))), path)
    return path


def _run(checkpoint, out_dir, *flags):
    from tools.draw_predictions import main
    data = tiny_nuscenes_root().rstrip('/') + '/'
    # score threshold 0 and a few candidates: a random model still yields boxes to draw
    main([CONFIG, checkpoint, '--out-dir', str(out_dir), '--num-images', '1', '--score-thr', '0', *flags,
          '--cfg-options', f'test_dataloader.dataset.data_root={data}', 'model.test_cfg.score_thr=0.0',
          'model.test_cfg.max_per_img=20'])
    return sorted(os.listdir(out_dir))


def test_orient_hist_and_depth_flags(checkpoint, tmp_path):
    plain = _run(checkpoint, tmp_path / 'plain')
    assert len(plain) == 3 and not any(f.endswith('_depth.png') for f in plain)
    mc = _run(checkpoint, tmp_path / 'mc', '--orient-hist', '16', '--depth')
    dens = _run(checkpoint, tmp_path / 'dens', '--orient-hist', '16', '--pose-density')
    stem = plain[0].rsplit('_', 1)[0]
    assert set(mc) == set(plain) | {f'{stem}_depth.png'}
    # the boxes are the same (MC sampling does not change the solution), only the roses are added
    a = cv2.imread(str(tmp_path / 'plain' / f'{stem}_bev.png'))
    b = cv2.imread(str(tmp_path / 'mc' / f'{stem}_bev.png'))
    assert a.shape == b.shape
    changed = (a != b).any(-1)
    assert changed.sum() > 50
    # changed pixels are orange-ish blends of the rose colour (0, 140, 255): red ≥ blue where they changed
    assert (b[changed][:, 2].astype(int) >= b[changed][:, 0].astype(int)).mean() > 0.5
    # --pose-density shades more pixels (blue-dominant: factors (0.9, 0.5, 0.1) on BGR) on top of the roses
    assert dens == plain
    c = cv2.imread(str(tmp_path / 'dens' / f'{stem}_bev.png'))
    shaded = (c != b).any(-1)
    assert shaded.sum() > 0 and (c[shaded][:, 0].astype(int) >= c[shaded][:, 2].astype(int)).mean() > 0.5
    depth = cv2.imread(str(tmp_path / 'mc' / f'{stem}_depth.png'))
    assert depth.shape[:2] == (256, 640) and (depth[..., 0] == depth[..., 2]).all()
    assert depth.max() <= 255 and np.unique(depth).size > 1
