"""The demo's per-image JSON (``tools/demo.py``; field list in the README, "Inference on your own images").

Every box is in the camera frame of the image as given (OpenCV axes: +x right, +y down, +z forward; metres,
radians); :func:`boxes_from_json` reads a file back into model boxes for a round trip.
"""
import json
from typing import Optional

import numpy as np

from .inference import Prediction

__all__ = ['JSON_FORMAT', 'prediction_to_json', 'write_json', 'boxes_from_json']

#: ``format`` value of the files written by :func:`write_json`
JSON_FORMAT = 'epropnp_det.demo/1'
_POSE = ('x', 'y', 'z', 'yaw')


def _attr_name(class_name: str, attr_label: int) -> str:
    from epropnp_det.evaluation.metrics.nus_multicam_metric import CLS2ATTR, restricted_attribute
    return restricted_attribute(class_name, int(attr_label)) if class_name in CLS2ATTR else ''


def prediction_to_json(pred: Prediction, image: Optional[str] = None, frame: Optional[int] = None,
                       extra: Optional[dict] = None) -> dict:
    """One image's detections as a JSON-ready dict (see the README for every field). Positions, orientations and
    corners are in the camera frame of the image; for a camera that is not level (``pred.cam2level``) ``yaw``,
    ``velocity``, ``pose_cov`` (4, 4) of ``[x, y, z, yaw]``, ``pose_std`` (its square-rooted diagonal ``x, y, z,
    yaw`` plus ``depth`` = σ_z and ``lateral`` = σ_x) and the optional Monte-Carlo ``pose_samples`` (K, 4) /
    ``pose_sample_weights`` (K,) refer to the level frame ``p_level = cam2level · p_camera``."""
    import torch

    from epropnp_det.structures.boxes import model_boxes_corners

    from .level import boxes_level_to_camera
    cam2level = np.eye(3) if pred.cam2level is None else pred.cam2level
    corners = model_boxes_corners(torch.as_tensor(pred.boxes, dtype=torch.float64).reshape(-1, 7)).numpy() @ cam2level
    centres, rots = boxes_level_to_camera(pred.boxes, cam2level)
    names = pred.label_names
    boxes = []
    for i in range(len(pred)):
        l, h, w, yaw = (float(pred.boxes[i, k]) for k in (0, 1, 2, 6))
        cov = pred.pose_cov[i]
        std = np.sqrt(np.clip(np.diag(cov), 0, None))
        centre, rot = centres[i], rots[i]
        boxes.append({
            'label': int(pred.labels[i]), 'class': names[i], 'score': float(pred.scores[i]),
            'score_2d': float(pred.scores_2d[i]), 'score_3d': float(pred.scores_3d[i]),
            'center': centre.tolist(), 'bottom_center': (centre + rot[:, 1] * h / 2).tolist(),
            'size': {'length': l, 'width': w, 'height': h}, 'yaw': yaw,
            'heading': rot[:, 0].tolist(), 'rotation': rot.tolist(),
            'attribute': _attr_name(names[i], pred.attr_labels[i]),
            'velocity': [float(v) for v in pred.velocities[i]],
            'bbox_2d': [float(v) for v in pred.bboxes_2d[i]],
            # depth = z, lateral = x of the (level) camera frame, the same numbers as z and x
            'pose_std': dict({k: float(s) for k, s in zip(_POSE, std)}, depth=float(std[2]), lateral=float(std[0])),
            'pose_cov': cov.tolist(),
            'corners': corners[i].tolist(),
        })
        if pred.pose_samples is not None:  # test_cfg mc_samples = K > 0: the Monte-Carlo pose posterior
            boxes[-1]['pose_samples'] = np.asarray(pred.pose_samples[i], dtype=np.float64).tolist()  # (K, 4)
            boxes[-1]['pose_sample_weights'] = np.asarray(pred.pose_sample_weights[i], dtype=np.float64).tolist()
    out = {
        'format': JSON_FORMAT, 'image': image, 'frame': frame, 'name': pred.name,
        'width': pred.image_size[0], 'height': pred.image_size[1], 'cam2img': pred.cam2img.tolist(),
        'cam2level': cam2level.tolist(),
        'network_input': {'size': list(pred.input_size), 'img_transform': pred.img_transform.tolist()},
        'classes': list(pred.class_names), 'boxes': boxes,
    }
    if extra:
        out.update(extra)
    return out


def write_json(pred: Prediction, path: str, **kwargs) -> dict:
    """Writes :func:`prediction_to_json` to ``path`` (indented) and returns the dict."""
    data = prediction_to_json(pred, **kwargs)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
    return data


def boxes_from_json(data) -> dict:
    """A demo JSON (dict or path) → ``boxes`` (n, 7) model boxes ``[l, h, w, x, y, z, yaw]`` (geometric centre; in
    the level frame ``cam2level · p_camera``, the camera frame for a level camera), ``velocities`` (n, 2),
    ``scores`` (n,), ``labels`` (n,), ``pose_cov`` (n, 4, 4), ``cam2img`` (3, 3), ``cam2level`` (3, 3)."""
    if isinstance(data, str):
        with open(data) as f:
            data = json.load(f)
    if data.get('format') != JSON_FORMAT:
        raise ValueError(f'not a demo result file (format {data.get("format")!r}, expected {JSON_FORMAT!r})')
    b = data['boxes']
    cam2level = np.asarray(data.get('cam2level', np.eye(3)), dtype=np.float64)
    boxes = np.array([[d['size']['length'], d['size']['height'], d['size']['width'],
                       *(cam2level @ np.asarray(d['center'])), d['yaw']] for d in b], dtype=np.float64).reshape(-1, 7)
    return dict(boxes=boxes, velocities=np.array([d['velocity'] for d in b], dtype=np.float64).reshape(-1, 2),
                scores=np.array([d['score'] for d in b], dtype=np.float64),
                labels=np.array([d['label'] for d in b], dtype=np.int64),
                pose_cov=np.array([d['pose_cov'] for d in b], dtype=np.float64).reshape(-1, 4, 4),
                cam2img=np.asarray(data['cam2img'], dtype=np.float64), cam2level=cam2level)
