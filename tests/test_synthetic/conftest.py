"""Fixtures of the synthetic-dataset tests: one tiny generated dataset per session (4 scenes x 3 keyframes,
640x360 images: 2 mini_train + 2 mini_val scenes), generated in-process in ~3 s."""
import pytest

TINY_KWARGS = dict(samples_per_scene=3, seed=0, image_size=(640, 360), num_scenes=4)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    from epropnp_det.synthetic import GeneratorConfig, generate_dataset

    root = tmp_path_factory.mktemp('synthetic_nuscenes')
    summary = generate_dataset(GeneratorConfig(out_dir=str(root), workers=1, **TINY_KWARGS), progress=False)
    return str(root), summary


@pytest.fixture(scope='session')
def nusc(synthetic_root):
    nuscenes = pytest.importorskip('nuscenes')
    return nuscenes.NuScenes('v1.0-mini', synthetic_root[0], verbose=False)


@pytest.fixture(scope='session')
def gt_by_token(synthetic_root):
    import json
    import os.path as osp

    with open(osp.join(synthetic_root[0], 'synthetic_gt.json')) as f:
        gt = json.load(f)
    return {a['token']: a for a in gt['annotations']}
