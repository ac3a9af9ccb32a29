"""Inference on your own images: any size, any intrinsics (``tools/demo.py``).

The network input is made like the config's test pipeline makes it for the training data
(:class:`InputGeometry`): the image is resized with its aspect ratio kept to fit the pipeline's ``EProPnPResize``
scale (up or down) and its intrinsics are scaled exactly with it (:func:`transform_intrinsics`), so the model sees
an image of its training scale as its original image (its pixel-space PnP cost and pose uncertainty refer to that
scale, as in training); then the bottom rows are cropped to the height of the pipeline's ``EProPnPCrop`` (the top
of a road image is sky; for a 16:9 image this is exactly the training crop), recorded in ``img_transform`` by
``EProPnPCrop``, and the data preprocessor pads the batch to its ``pad_size_divisor``. A resize does not move the
camera centre, so the boxes are in the camera frame of the image as given; 2D outputs are mapped back to its
pixels (``docs/data_contract.md`` for the pixel conventions).

:class:`EProPnPPredictor` runs a batch and returns one :class:`Prediction` per image with everything the model
gives per box (pose covariance, optional Monte-Carlo pose samples, optional 2D-3D correspondences, optional v2
depth map).
"""
import copy
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ['InputGeometry', 'Prediction', 'EProPnPPredictor', 'image_results', 'transform_intrinsics']


# ------------------------------------------------------------------------------------------------ input geometry
@dataclass(frozen=True)
class InputGeometry:
    """How an image of any size becomes a network input (see the module docstring).

    Attributes:
        ref_size: ``(W, H)`` the test pipeline resizes to (keep ratio); None = no resize.
        crop_size: ``(W, H)`` of the test pipeline's crop (the network input of a ``ref_size`` image); None = none.
    """
    ref_size: Optional[Tuple[int, int]] = None
    crop_size: Optional[Tuple[int, int]] = None

    @classmethod
    def from_pipeline(cls, pipeline: Sequence[dict]) -> 'InputGeometry':
        """Reads ``EProPnPResize(scale=..., keep_ratio=True)`` and ``EProPnPCrop(crop_box=...)`` of a test
        pipeline config (a pipeline without a resize but with a crop takes the crop's ``(x2, y2)`` as the
        reference frame, e.g. 1600×900 for the nuScenes configs)."""
        ref = crop = None
        for t in pipeline:
            kind = t.get('type') if isinstance(t, dict) else None
            if kind in ('EProPnPResize', 'Resize', 'mmdet.Resize', 'Resize3D') and t.get('scale') is not None:
                if not t.get('keep_ratio', True):
                    raise ValueError(f'{kind} with keep_ratio=False: the demo keeps the aspect ratio of any image')
                ref = tuple(int(v) for v in t['scale'])
            elif kind == 'EProPnPCrop':
                x1, y1, x2, y2 = (int(v) for v in t.get('crop_box', (0, 228, 1600, 900)))
                crop = (x2 - x1, y2 - y1)
                if ref is None:
                    ref = (x2, y2)
        return cls(ref_size=ref, crop_size=crop)

    def plan(self, width: int, height: int) -> Tuple[Tuple[int, int], Optional[Tuple[int, int, int, int]]]:
        """``(resized (W, H), crop_box (x1, y1, x2, y2) of the resized image or None)`` for a ``width × height``
        image: keep-ratio resize to fit ``ref_size`` (``EProPnPResize``'s rule for landscape images), then at most
        ``crop_size`` pixels: the bottom rows and the central columns."""
        if width < 1 or height < 1:
            raise ValueError(f'image size must be positive, got {width}x{height}')
        new_w, new_h = width, height
        if self.ref_size is not None:  # as mmcv.rescale_size, but a portrait image is fitted in (W, H) too
            scale = min(self.ref_size[0] / width, self.ref_size[1] / height)
            new_w, new_h = int(width * scale + 0.5), int(height * scale + 0.5)
        if self.crop_size is None:
            return (new_w, new_h), None
        cw, ch = min(self.crop_size[0], new_w), min(self.crop_size[1], new_h)
        if (cw, ch) == (new_w, new_h):
            return (new_w, new_h), None
        x1 = (new_w - cw) // 2
        y1 = new_h - ch
        return (new_w, new_h), (x1, y1, x1 + cw, y1 + ch)

    def apply(self, img: np.ndarray, cam2img, convention: str = 'v1', name: Optional[str] = None) \
            -> Tuple[dict, np.ndarray]:
        """Resizes ``img`` (mmcv bilinear) and scales its intrinsics exactly (:func:`transform_intrinsics`), so the
        model sees an image of its reference scale as its *original* image (its pixel-space PnP cost and pose
        uncertainty refer to that scale), then crops with ``EProPnPCrop`` (recorded in ``img_transform``).

        Returns:
            (transform results with ``img``, ``cam2img`` of the resized image, ``img_transform`` (crop), ...;
            ``resize`` (3, 3) continuous-pixel map of the given image → the resized one).
        """
        import mmcv

        from epropnp_det.datasets.transforms import EProPnPCrop
        from epropnp_det.structures.boxes import scale_transform
        h, w = img.shape[:2]
        (new_w, new_h), crop = self.plan(w, h)
        resize = scale_transform(new_w / w, new_h / h)
        if (new_w, new_h) != (w, h):
            img = mmcv.imresize(img, (new_w, new_h), interpolation='bilinear')
        results = image_results(img, transform_intrinsics(cam2img, resize, convention), name)
        if crop is not None:
            results = EProPnPCrop(crop_box=crop, allow_negative_crop=True)(results)
        return results, resize


def transform_intrinsics(cam2img, pixel_map: np.ndarray, convention: str = 'v1') -> np.ndarray:
    """K of an image whose continuous pixels are ``pixel_map`` (3, 3 affine, e.g. a resize or crop) of the pixels
    of the image of ``cam2img``: ``K' = C⁻¹·M·C·K`` with ``C`` the shift from K-projections to continuous
    coordinates of ``convention`` (``PIXEL_CONVENTIONS``). A 3D point projects by ``K'`` exactly where ``M``
    moves its projection by ``K``."""
    from epropnp_det.structures.boxes import PIXEL_CONVENTIONS

    from .calib import check_intrinsics
    shift = np.eye(3)
    shift[:2, 2] = PIXEL_CONVENTIONS[convention]
    mat = np.asarray(pixel_map, dtype=np.float64)
    if not np.allclose(mat[2], (0., 0., 1.)):
        raise ValueError(f'pixel_map must be affine (last row [0, 0, 1]), got {mat[2].tolist()}')
    return np.linalg.inv(shift) @ mat @ shift @ check_intrinsics(cam2img)


def image_results(img: np.ndarray, cam2img, img_path: Optional[str] = None, sample_idx: int = 0) -> dict:
    """The transform input of one image with its intrinsics: the keys ``EProPnPLoadImage`` produces for a dataset
    item (original ``cam2img``, identity ``img_transform``, no flip) without needing an info file."""
    from mmdet3d.structures import Box3DMode, CameraInstance3DBoxes

    from .calib import check_intrinsics
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{img_path or "image"}: expected an (H, W, 3) BGR array, got '
                         f'{getattr(img, "shape", type(img).__name__)}')
    h, w = img.shape[:2]
    return dict(img=img, img_path=img_path, ori_shape=(h, w), img_shape=(h, w),
                cam2img=check_intrinsics(cam2img, img_path or 'cam2img'), img_transform=np.eye(3), flip=False,
                flip_direction=None, scale_factor=(1.0, 1.0), sample_idx=sample_idx,
                box_type_3d=CameraInstance3DBoxes, box_mode_3d=Box3DMode.CAM)


def _real_bboxes_2d(boxes: np.ndarray, cam2level: np.ndarray, cam2img: np.ndarray, image_size, off: float,
                    near: float = 0.1) -> np.ndarray:
    """Extent of the near-plane-clipped corners of level-frame boxes seen by the real camera, continuous
    pixels clipped to the image (the hull's extent, clipped)."""
    from epropnp_det.structures.boxes import model_boxes_corners, nearclip_box_points
    corners = model_boxes_corners(torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 7)).numpy() @ cam2level
    out = np.zeros((len(boxes), 4))
    w, h = image_size
    for i, c in enumerate(corners):
        pts = nearclip_box_points(c, near)
        if len(pts) == 0:
            continue
        uvw = pts @ cam2img.T
        uv = uvw[:, :2] / np.maximum(uvw[:, 2:3], near) + off
        out[i] = np.concatenate([uv.min(0), uv.max(0)]).clip(0, [w, h, w, h])
    return out


# ------------------------------------------------------------------------------------------------ predictions
@dataclass
class Prediction:
    """Detections of one image (numpy, float64), boxes in the camera frame of the image as given.

    ``boxes`` (n, 7) model boxes ``[l, h, w, x, y, z, yaw]`` (geometric centre, ``docs/data_contract.md``);
    ``velocities`` (n, 2) ``[vx, vz]`` m/s; ``scores`` (n,) final scores (= ``scores_2d · scores_3d``);
    ``labels`` / ``attr_labels`` (n,) int; ``bboxes_2d`` (n, 4) projected boxes, continuous pixels of the image;
    ``pose_cov`` (n, 4, 4) Laplace covariance of the pose ``[x, y, z, yaw]``; ``pose_samples`` (n, K, 4) and
    ``pose_sample_weights`` (n, K) with Monte-Carlo samples; ``x2d`` (n, P, 2) sampled points (K-projection
    coordinates of the image, the model's ``pixel_convention``), ``w2d`` (n, P, 2) their weights (scale applied),
    ``x3d`` (n, P, 3) object coordinates (metres, object frame) with correspondences; ``depth_map`` (h, w) metres
    on the network input's value-map cells (v2 depth branch); ``img_transform`` (3, 3) continuous pixels of the
    image as given → network input; ``meta``: ``model_cam2img`` (K of the resized image the model saw as its
    original), ``resize`` (3, 3), ``output_stride``. With ``cam2level`` (3, 3) (a camera that is not level)
    ``boxes``, ``pose_*``, ``velocities`` refer to the level camera frame ``p_level = cam2level · p_camera`` and
    ``img_transform`` includes the rectifying homography.
    """
    name: str
    image_size: Tuple[int, int]
    cam2img: np.ndarray
    img_transform: np.ndarray
    input_size: Tuple[int, int]
    class_names: Sequence[str]
    pixel_convention: str
    boxes: np.ndarray
    velocities: np.ndarray
    scores: np.ndarray
    scores_2d: np.ndarray
    scores_3d: np.ndarray
    labels: np.ndarray
    attr_labels: np.ndarray
    bboxes_2d: np.ndarray
    pose_cov: np.ndarray
    pose_samples: Optional[np.ndarray] = None
    pose_sample_weights: Optional[np.ndarray] = None
    x2d: Optional[np.ndarray] = None
    w2d: Optional[np.ndarray] = None
    x3d: Optional[np.ndarray] = None
    depth_map: Optional[np.ndarray] = None
    cam2level: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    PER_BOX = ('boxes', 'velocities', 'scores', 'scores_2d', 'scores_3d', 'labels', 'attr_labels', 'bboxes_2d',
               'pose_cov', 'pose_samples', 'pose_sample_weights', 'x2d', 'w2d', 'x3d')

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep) -> 'Prediction':
        """The boxes where ``keep`` (bool mask or indices)."""
        keep = np.asarray(keep)
        return replace(self, **{k: getattr(self, k)[keep] for k in self.PER_BOX if getattr(self, k) is not None})

    def above(self, score_thr: float) -> 'Prediction':
        return self.select(self.scores >= score_thr)

    @property
    def label_names(self) -> List[str]:
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i) for i in self.labels.tolist()]


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if torch.is_tensor(t) else np.asarray(t, dtype=np.float64)


class _CorrespondenceCapture:
    """Records the head's per-candidate outputs during ``predict`` (``decode_objects(out, cand, cams, n)``) so the
    2D-3D correspondences of each kept detection can be returned. The kept rows are identified by their 2D and 3D
    scores, which ``decode_objects`` copies unchanged from these tensors."""

    def __init__(self, head):
        self.head, self.calls = head, []

    def __enter__(self):
        original = type(self.head).decode_objects.__get__(self.head)

        def wrapped(out, cand, cams, num_imgs):
            self.calls.append((out, cand))
            return original(out, cand, cams, num_imgs)
        self.head.decode_objects = wrapped
        return self

    def __exit__(self, *exc):
        del self.head.decode_objects

    def rows(self, result, img_idx: int) -> torch.Tensor:
        """Candidate indices of the detections of ``result`` (image ``img_idx`` of the last batch)."""
        out, cand = self.calls[-1]
        score3d = out['score_logit'].sigmoid()
        n = len(result.scores_3d)
        if n == 0:
            return torch.zeros(0, dtype=torch.long)
        match = ((cand.img_inds[None] == img_idx) & (cand.scores[None] == result.scores_2d[:, None])
                 & (score3d[None] == result.score3d[:, None]))
        if not bool((match.sum(1) == 1).all()):
            raise RuntimeError('could not identify the candidates of the detections (ambiguous scores)')
        return match.float().argmax(1)

    def correspondences(self, result, img_idx: int):
        out, _ = self.calls[-1]
        idx = self.rows(result, img_idx)
        x3d = out['noc'][idx] * out['dims'][idx][:, None]
        w2d = out['w2d'][idx] * out['scale'][idx][:, None]
        return _np(out['x2d'][idx]), _np(w2d), _np(x3d)


class EProPnPPredictor:
    """A config + checkpoint → predictions on arrays of any size with their intrinsics.

    Args:
        config: config path (or ``mmengine.Config``); checkpoint: mmengine checkpoint (None: random weights).
        device: 'cpu' / 'cuda' / 'cuda:1'.
        mc_samples: Monte-Carlo pose samples per detection (``test_cfg.mc_samples``; 0 = none). Rounded up to a
            multiple of the PnP layer's ``num_iter``.
        pred_depth: v2 dense depth map (``test_cfg.pred_depth``; ignored without a depth branch).
        with_points: also return each detection's 2D-3D correspondences.
        seed: seed of the PnP's random initialisation and Monte-Carlo draws (``test_cfg.mc_seed``; None: global
            RNG).
        cfg_options: dict merged into the config.
        rectify_border: how the image of a camera that is not level is filled where the level virtual camera
            sees outside it (:func:`~epropnp_det.apis.level.rectify_image`: 'replicate' the nearest edge pixel,
            'constant' black, 'reflect'); an attribute, may be changed between calls. 'replicate' is the default
            because a black band at the bottom of an upward-pitched camera cost the quick-start model about 40 % of
            its recall, the replicated band none (``tools/benchmarks/pitch_roll_accuracy.py``).
    """

    def __init__(self, config, checkpoint: Optional[str] = None, device: str = 'cpu', mc_samples: int = 0,
                 pred_depth: bool = False, with_points: bool = False, seed: Optional[int] = 0,
                 cfg_options: Optional[dict] = None, rectify_border: str = 'replicate'):
        from mmdet3d.apis import init_model
        from mmengine.config import Config

        from epropnp_det.datasets.transforms import EProPnPPack3DDetInputs
        from epropnp_det.utils.runner_cfg import trust_local_checkpoints
        trust_local_checkpoints()
        cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        test_cfg = cfg.model.setdefault('test_cfg', {})
        if mc_samples:
            num_iter = int(cfg.model.bbox_head.get('pnp', {}).get('num_iter', 4))
            test_cfg['mc_samples'] = int(-(-int(mc_samples) // num_iter) * num_iter)
        if seed is not None:  # RSLM initialisation and Monte-Carlo draws: the same output for the same input
            test_cfg['mc_seed'] = int(seed)
        if pred_depth:
            test_cfg['pred_depth'] = True
        self.cfg = cfg
        self.model = init_model(cfg, checkpoint, device=device)
        self.head = self.model.bbox_head
        self.geometry = InputGeometry.from_pipeline(cfg.test_dataloader.dataset.pipeline)
        self.pack = EProPnPPack3DDetInputs(keys=('img',))
        self.with_points = with_points
        self.rectify_border = rectify_border
        meta = getattr(self.model, 'dataset_meta', None) or {}
        classes = meta.get('classes') or cfg.get('class_names') or \
            cfg.test_dataloader.dataset.get('metainfo', {}).get('classes')
        self.class_names = list(classes or [str(i) for i in range(self.head.num_classes)])
        self.has_depth = getattr(self.head, 'depth_branch', None) is not None

    def prepare(self, img: np.ndarray, cam2img, name: Optional[str] = None) -> Tuple[dict, np.ndarray]:
        """One image → (packed ``dict(inputs, data_samples)`` of the network input, ``resize`` (3, 3) continuous
        map of the given image's pixels to the model's original image), see :meth:`InputGeometry.apply`."""
        results, resize = self.geometry.apply(img, cam2img, self.head.pixel_convention, name)
        return self.pack(results), resize

    @torch.no_grad()
    def predict(self, imgs: Sequence[np.ndarray], cam2imgs: Sequence, names: Optional[Sequence[str]] = None,
                cam2levels: Optional[Sequence] = None) -> List[Prediction]:
        """One batch: (H_i, W_i, 3) BGR uint8 images of any sizes with their (3, 3) intrinsics. Boxes are in the
        camera frame of each image; 2D outputs (``bboxes_2d``, ``x2d``) in its pixels.

        ``cam2levels``: per image None (a level camera) or the (3, 3) rotation real camera → level camera
        (:mod:`epropnp_det.apis.level`): that image is warped to the level virtual camera and predicted there;
        ``boxes`` etc. are then in the LEVEL frame (``Prediction.cam2level`` set; real-frame centres and rotations
        by :func:`~epropnp_det.apis.level.boxes_level_to_camera`), ``bboxes_2d`` / ``x2d`` in the real image.
        """
        from mmengine.dataset import pseudo_collate

        from epropnp_det.structures.boxes import PIXEL_CONVENTIONS, apply_transform, cam_boxes_to_model

        from .level import rectify_image
        names = list(names) if names is not None else [f'{i:06d}' for i in range(len(imgs))]
        cam2levels = list(cam2levels) if cam2levels is not None else [None] * len(imgs)
        if not (len(imgs) == len(cam2imgs) == len(names) == len(cam2levels)):
            raise ValueError(f'{len(imgs)} images, {len(cam2imgs)} intrinsics, {len(names)} names, '
                             f'{len(cam2levels)} cam2level')
        conv = self.head.pixel_convention
        homographies = [None if r is None else rectify_image(img, k, r, conv, self.rectify_border)
                        for img, k, r in zip(imgs, cam2imgs, cam2levels)]
        model_imgs = [img if h is None else h[0] for img, h in zip(imgs, homographies)]
        packed, resizes = zip(*[self.prepare(img, k, n) for img, k, n in zip(model_imgs, cam2imgs, names)])
        data = pseudo_collate(list(packed))
        capture = _CorrespondenceCapture(self.head)
        if self.with_points:
            with capture:
                samples = self.model.test_step(data)
        else:
            samples = self.model.test_step(data)
        off = PIXEL_CONVENTIONS[self.head.pixel_convention]
        preds = []
        for b, (sample, name, img, k, resize, hom, rot) in enumerate(zip(samples, names, imgs, cam2imgs, resizes,
                                                                          homographies, cam2levels)):
            r = sample.pred_instances_3d
            meta = sample.metainfo
            if hom is not None:  # the given image → level image → model input
                resize = resize @ hom[1]
            back = np.linalg.inv(resize)  # model-original → given image, continuous pixels
            boxes, velo = cam_boxes_to_model(r.bboxes_3d)
            n = len(boxes)
            ih, iw = meta['img_shape'][:2]
            bboxes_2d = apply_transform(back, _np(r.bboxes_2d).reshape(-1, 2, 2)).reshape(-1, 4)
            pred = Prediction(
                name=name, image_size=(int(img.shape[1]), int(img.shape[0])), cam2img=np.asarray(k, np.float64),
                img_transform=_np(meta['img_transform']) @ resize, input_size=(int(iw), int(ih)),
                class_names=self.class_names, pixel_convention=self.head.pixel_convention,
                boxes=_np(boxes), velocities=_np(velo) if velo is not None else np.zeros((n, 2)),
                scores=_np(r.scores_3d), scores_2d=_np(r.scores_2d), scores_3d=_np(r.score3d),
                labels=r.labels_3d.cpu().numpy().astype(np.int64),
                attr_labels=r.attr_labels.cpu().numpy().astype(np.int64), bboxes_2d=bboxes_2d,
                pose_cov=_np(r.pose_cov).reshape(n, 4, 4),
                meta=dict(model_cam2img=_np(meta['cam2img'])[:3, :3], resize=resize,
                          output_stride=self.head.output_stride))
            if 'pose_samples' in r:
                pred.pose_samples, pred.pose_sample_weights = _np(r.pose_samples), _np(r.pose_sample_weights)
            if self.with_points:
                x2d, pred.w2d, pred.x3d = capture.correspondences(r, b)
                pred.x2d = apply_transform(back, x2d + off) - off
            depth = r.metainfo.get('depth_map')
            if depth is not None:
                pred.depth_map = _np(depth)
            if rot is not None:
                pred.cam2level = np.asarray(rot, dtype=np.float64)
                pred.meta['level_to_image'] = np.linalg.inv(hom[1])  # level virtual camera → real image pixels
                pred.bboxes_2d = _real_bboxes_2d(pred.boxes, pred.cam2level, pred.cam2img, pred.image_size, off)
            preds.append(pred)
        return preds
