"""mmdet3d's own inference API on the project's configs and checkpoints.

mmdet3d 1.4's ``MonoDet3DInferencer`` and ``inference_mono_3d_detector`` take the intrinsics from an info file
(``data_list[i]['images'][cam_type]`` with ``img_path``, ``cam2img`` and ``lidar2cam``) and run the config's test
pipeline::

    from mmdet3d.apis import MonoDet3DInferencer
    from epropnp_det.apis import write_mono_infos
    write_mono_infos('infos.pkl', [('demo.png', K)])
    inferencer = MonoDet3DInferencer(model='configs/epropnp_det_r18_synthetic.py',
                                     weights='epropnp_det_r18.pth', device='cpu')
    out = inferencer(dict(img='demo.png', infos='infos.pkl'), return_datasamples=True, no_save_vis=True)

The project's configs work as they are: importing the plugin (the configs' ``custom_imports``) lets the inferencer
take the project's image loader (``epropnp_det/datasets/mmdet3d_inferencer.py``), and their test datasets state
``box_type_3d``, which ``inference_mono_3d_detector`` reads.

The test pipeline is the config's (fixed resize and crop), so the images must have the size the config was made
for (e.g. 16:9 for the synthetic configs); ``tools/demo.py`` takes any size.
"""
from typing import Sequence, Tuple

import numpy as np

__all__ = ['write_mono_infos']


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
