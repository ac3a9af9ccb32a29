"""A tiny generated nuScenes-format dataset (+ mmdet3d/EPro-PnP infos), built once per test process.

3 scenes (2 mini_train, ... plus mini_val's first scene) × 2 keyframes at 400×225 px: ~6 s in total.
"""
import atexit
import functools
import shutil
import tempfile

SIZE = (400, 225)


@functools.lru_cache(maxsize=1)
def tiny_nuscenes_root() -> str:
    """Path of the generated root with ``nuscenes_infos_{train,val}.pkl`` (deleted at interpreter exit)."""
    from epropnp_det.datasets.nuscenes_infos import create_nuscenes_infos
    from epropnp_det.synthetic import GeneratorConfig, generate_dataset
    root = tempfile.mkdtemp(prefix='epropnp_tiny_nus_')
    atexit.register(shutil.rmtree, root, True)
    generate_dataset(GeneratorConfig(out_dir=root, samples_per_scene=2, seed=3, image_size=SIZE, num_scenes=3,
                                     workers=1, overwrite=True), progress=False)
    create_nuscenes_infos(root, root, version='v1.0-mini', max_sweeps=0)
    return root


def build_dataset(root: str, pipeline, test_mode: bool = False, **kwargs):
    from mmdet3d.registry import DATASETS
    from mmdet3d.utils import register_all_modules
    from mmengine.registry import DefaultScope

    import epropnp_det.datasets  # noqa: F401  (registers)
    register_all_modules(init_default_scope=False)
    cams = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
    data_prefix = dict(pts='samples/LIDAR_TOP', **{c: f'samples/{c}' for c in cams})
    cfg = dict(type='EProPnPNuScenesDataset', data_root=root, data_prefix=data_prefix,
               ann_file='nuscenes_infos_val.pkl' if test_mode else 'nuscenes_infos_train.pkl', pipeline=pipeline,
               metainfo=dict(version='v1.0-mini'), test_mode=test_mode)
    cfg.update(kwargs)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return DATASETS.build(cfg)
