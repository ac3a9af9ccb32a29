"""Every config under configs/ parses with mmengine (this also runs its custom_imports)."""
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_parses(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert len(cfg.keys()) > 0
    rel = os.path.relpath(path, os.path.join(REPO, 'configs'))
    if not rel.startswith('_base_'):
        # Top-level configs are complete runner configs.
        for key in ('model', 'train_dataloader', 'optim_wrapper', 'train_cfg'):
            assert key in cfg, f'{rel} lacks {key}'
