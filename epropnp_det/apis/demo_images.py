"""Test pictures for the demo: the synthetic generator's scenes rendered by a camera of any size and intrinsics.

``render_camera_image`` places a camera (``K``, size) where the generator's rig camera is and renders the same
world (textured road, shaded class-coloured cuboids, exact occlusion) with the generator's own renderer; it returns
the image, ``K`` and the ground-truth model boxes of the visible objects in that camera's frame.
``write_demo_folder`` writes several such images (any sizes) with a calibration JSON (``tools/demo.py --calib``)
and their ground truth.
"""
import json
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np

__all__ = ['render_camera_image', 'write_demo_folder', 'DEFAULT_CAMERAS']

#: (name, width, height, fx / width) — three sizes and aspect ratios (16:9, 4:3, 1:1) and focal lengths
DEFAULT_CAMERAS = (('wide_640x360', 640, 360, 0.79), ('tele_800x600', 800, 600, 1.05),
                   ('square_448x448', 448, 448, 0.9))


def render_camera_image(width: int, height: int, fx: float, fy: Optional[float] = None, cx: Optional[float] = None,
                        cy: Optional[float] = None, scene: int = 0, frame: int = 0, seed: int = 0,
                        camera: str = 'CAM_FRONT', min_visible_px: int = 30, pitch_deg: float = 0.0,
                        roll_deg: float = 0.0, samples_per_scene: Optional[int] = None) -> dict:
    """Renders keyframe ``frame`` of generated scene ``scene`` (seed ``seed``) with a camera at the rig position
    of ``camera``, level or pitched / rolled by ``pitch_deg`` / ``roll_deg`` (:func:`~.level.tilt_rotation`).
    ``samples_per_scene``: keyframes of the generated scene (its world depends on it); give the generator's value
    (``tools/create_synthetic_nuscenes.py --samples-per-scene``, 10 by default) to render exactly the scenes of a
    generated data set; None: ``max(frame + 1, 2)``.

    Returns:
        dict with ``img`` (H, W, 3) uint8 BGR, ``cam2img`` (3, 3) (OpenCV: pixel ``i`` centred on ``u = i``),
        ``cam2level`` (3, 3), ``boxes`` (n, 7) model boxes ``[l, h, w, x, y, z, yaw]`` (geometric centre) in the
        LEVEL camera frame (``cam2level · p_camera``; the camera frame of a level camera) of the objects with at
        least ``min_visible_px`` visible pixels, ``labels`` (n,) class indices (:data:`epropnp_det.synthetic.CLASSES`),
        ``visible_px`` (n,).
    """
    from epropnp_det.synthetic.generator import GeneratorConfig, SceneSetup, scene_rng
    from epropnp_det.synthetic.geometry import rot_z
    from epropnp_det.synthetic.render import Camera, CameraRenderer

    from .level import tilt_rotation

    fy = fx if fy is None else fy
    cx = (width - 1) / 2 if cx is None else cx
    cy = (height - 1) / 2 if cy is None else cy
    if samples_per_scene is None:
        samples_per_scene = max(frame + 1, 2)
    elif not frame < samples_per_scene:
        raise ValueError(f'frame {frame} is not a keyframe of a scene of {samples_per_scene} samples')
    setup = SceneSetup(GeneratorConfig(out_dir='', samples_per_scene=int(samples_per_scene), seed=seed), scene)
    rig = next(c for c in setup.cameras if c.name == camera)
    K = np.array([[fx, 0., cx], [0., fy, cy], [0., 0., 1.]])
    cam2level = tilt_rotation(pitch_deg, roll_deg)
    cam = Camera(camera, K, int(width), int(height), rig.rot @ cam2level, rig.trans)
    fr = setup.frame(frame)
    boxes = fr['boxes']
    img, _, visible, _ = CameraRenderer(cam).render(setup.world.road, fr['ego_trans'], fr['ego_yaw'], boxes,
                                                    setup.world.sun, scene_rng(seed, scene, 2, frame))
    r_e2g = rot_z(fr['ego_yaw'])
    r_g2c = (r_e2g @ rig.rot).T                                                     # global → level camera
    cam_g = fr['ego_trans'] + r_e2g @ cam.trans
    centre = (boxes['center'] - cam_g) @ r_g2c.T                                   # (N, 3) camera frame
    yaw_g = boxes['yaw']
    heading = np.stack([np.cos(yaw_g), np.sin(yaw_g), np.zeros_like(yaw_g)], 1) @ r_g2c.T
    yaw = np.arctan2(-heading[:, 2], heading[:, 0])                                 # model yaw (about camera y)
    w, l, h = boxes['wlh'].T
    model = np.stack([l, h, w, centre[:, 0], centre[:, 1], centre[:, 2], yaw], 1)
    keep = visible >= min_visible_px
    return dict(img=np.ascontiguousarray(img[..., ::-1]), cam2img=K, cam2level=cam2level, boxes=model[keep],
                labels=boxes['label'][keep].astype(np.int64), visible_px=visible[keep])


def write_demo_folder(out_dir: str, cameras: Sequence = DEFAULT_CAMERAS, scene: int = 0, frame: int = 0,
                      seed: int = 0) -> dict:
    """Writes ``<name>.png`` for each ``(name, width, height, fx / width)`` of ``cameras``, ``calib.json``
    (``{"images": {"<name>.png": {"cam2img": K}}}``) and ``gt.json`` (``{"<name>.png": {"boxes", "labels"}}``).
    Returns ``{name: render_camera_image(...)}``."""
    import cv2
    os.makedirs(out_dir, exist_ok=True)
    out, calib, gt = {}, {}, {}
    for name, width, height, f_rel in cameras:
        r = render_camera_image(width, height, f_rel * width, scene=scene, frame=frame, seed=seed)
        cv2.imwrite(osp.join(out_dir, f'{name}.png'), r['img'])
        calib[f'{name}.png'] = {'cam2img': r['cam2img'].tolist()}
        gt[f'{name}.png'] = {'boxes': r['boxes'].tolist(), 'labels': r['labels'].tolist()}
        out[name] = r
    with open(osp.join(out_dir, 'calib.json'), 'w') as f:
        json.dump({'images': calib}, f, indent=1)
    with open(osp.join(out_dir, 'gt.json'), 'w') as f:
        json.dump(gt, f, indent=1)
    return out
