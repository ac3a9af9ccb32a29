"""Shared fixtures of the demo tests: randomly initialised checkpoints of the CPU configs (mmengine's checkpoint
format: ``state_dict`` + ``meta.dataset_meta``) and a folder of generated images of three sizes."""
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/epropnp_det_r18_synthetic.py')
# a random model still yields boxes with these
RANDOM_MODEL_OPTIONS = {'model.test_cfg.score_thr': 0.0, 'model.test_cfg.max_per_img': 12}


def save_random_checkpoint(config: str, path: str) -> str:
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import epropnp_det.models  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=cfg.class_names))), path)
    return path


@pytest.fixture(scope='session')
def checkpoint(tmp_path_factory):
    return save_random_checkpoint(CONFIG, str(tmp_path_factory.mktemp('ckpt') / 'r18_random.pth'))


@pytest.fixture(scope='session')
def demo_folder(tmp_path_factory):
    """Three generated images (640x360, 800x600, 448x448, different focal lengths) + calib.json + gt.json."""
    from epropnp_det.apis.demo_images import write_demo_folder
    out = tmp_path_factory.mktemp('demo_images')
    renders = write_demo_folder(str(out))
    return str(out), renders
