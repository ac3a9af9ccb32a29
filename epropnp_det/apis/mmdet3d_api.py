"""mmdet3d's own inference API on the project's configs and checkpoints.

mmdet3d 1.4's ``MonoDet3DInferencer`` and ``inference_mono_3d_detector`` take the intrinsics from an info file
(``data_list[i]['images'][cam_type]`` with ``img_path``, ``cam2img`` and ``lidar2cam``) and run the config's test
pipeline::

    from mmdet3d.apis import MonoDet3DInferencer
    from epropnp_det.apis import mmdet3d_inferencer_config, write_mono_infos
    write_mono_infos('infos.pkl', [('demo.png', K)])
    inferencer = MonoDet3DInferencer(model=mmdet3d_inferencer_config('configs/epropnp_det_r18_synthetic.py'),
                                     weights='epropnp_det_r18.pth', device='cpu')
    out = inferencer(dict(img='demo.png', infos='infos.pkl'), return_datasamples=True, no_save_vis=True)

The test pipeline is the config's (fixed resize and crop), so the images must have the size the config was made
for (e.g. 16:9 for the synthetic configs); ``tools/demo.py`` takes any size.
"""
import copy
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['mmdet3d_inferencer_config', 'write_mono_infos']


def mmdet3d_inferencer_config(config, cfg_options: Optional[dict] = None):
    """The config with what mmdet3d's ``MonoDet3DInferencer`` / ``inference_mono_3d_detector`` look for.

    ``MonoDet3DInferencer`` finds the image loader of the test pipeline by its type name
    ``'LoadImageFromFileMono3D'`` (and swaps in its own loader, which builds that class); the project's loader
    ``EProPnPLoadImage`` is that class plus dataset checks and geometry keys whose defaults the project's
    transforms and head use at test time, so it is replaced by mmdet3d's. ``inference_mono_3d_detector`` reads
    ``test_dataloader.dataset.box_type_3d`` ('Camera' is set when missing). Returns a new ``mmengine.Config``; the
    config file is not modified.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for loader in ('test_dataloader', 'val_dataloader'):
        if loader not in cfg:
            continue
        ds = cfg[loader]['dataset']
        for t in ds['pipeline']:
            if t.get('type') == 'EProPnPLoadImage':
                t['type'] = 'LoadImageFromFileMono3D'
        ds.setdefault('box_type_3d', 'Camera')
    return cfg


def write_mono_infos(path: str, images: Sequence[Tuple[str, np.ndarray]], cam_type: str = 'CAM2') -> dict:
    """Writes an mmdet3d info file (``mmengine.dump``, .pkl/.json) for images with their intrinsics, as
    ``MonoDet3DInferencer`` (``infos=``) and ``inference_mono_3d_detector`` (``ann_file``) read it: one
    ``data_list`` entry per ``(img_path, K)`` with ``images[cam_type] = {img_path, cam2img (4, 4), lidar2cam
    (4, 4) identity}`` (no LiDAR: camera frame = "LiDAR" frame)."""
    import mmengine

    from .calib import check_intrinsics
    data_list = []
    for i, (img_path, K) in enumerate(images):
        k4 = np.eye(4)
        k4[:3, :3] = check_intrinsics(K, img_path)
        data_list.append(dict(sample_idx=i, images={cam_type: dict(img_path=img_path, cam2img=k4.tolist(),
                                                                   lidar2cam=np.eye(4).tolist())}))
    infos = dict(metainfo=dict(dataset='custom', info_version='1.1'), data_list=data_list)
    mmengine.dump(infos, path)
    return infos
