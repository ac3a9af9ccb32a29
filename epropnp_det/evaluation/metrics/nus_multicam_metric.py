"""``EProPnPNuScenesMetric``: EPro-PnP's nuScenes evaluation and submission (docs/method.md §7) on mmdet3d's
``NuScenesMetric`` (devkit scoring and metric keys reused; camera formatting replaced).

Per sample (6 camera items ``sample_idx = 6·frame + cam`` in the info's ``images`` order; results are grouped by
``sample_idx``, so their order and the number of processes do not matter):

1. every camera's predictions → nuScenes boxes in the camera's ego frame (``cam2ego``); boxes beyond the class
   range of the eval config (ego xy distance) are dropped;
2. → global with the exact camera-time pose ``ego2global @ lidar2ego @ inv(lidar2cam)`` (the stock metric uses the
   LiDAR-time ego pose);
3. cross-camera BEV NMS per class in the global frame: rotated footprints ``(x, y, l, w, heading)`` (mmcv
   ``nms_rotated``, whose default angle sense is the counter-clockwise heading — unit-tested against shapely),
   suppress IoU > ``nms_thr`` (0.25), highest score first; a lone box is kept (fixes docs/method.md §13.1);
4. at most ``max_per_sample`` (500) boxes, highest scores;
5. attribute restricted to the class (docs/method.md §4.2 CLS2ATTR): ``attr_scores`` (n, 9) → argmax over the class's
   set, or ``attr_labels`` (n,) → kept if in the set, else the class default (mmdet3d's defaults).

Output ``<jsonfile_prefix>/results_nusc.json`` (docs/method.md §7.5) with ``meta`` = the five modality keys
(``use_camera`` True, the rest False by default), one entry (possibly empty) for every sample of the ann file. When the
predictions carry ``pose_cov`` (n, 4, 4) (and optionally ``pose_samples`` (n, K, 4) / ``pose_sample_weights`` (n, K)),
the pose-uncertainty sidecar ``<jsonfile_prefix>/results_nusc_uncertainty.json`` is written beside it (format-only and
evaluation runs alike): per sample token a list aligned with that sample's boxes in the results JSON, with the
covariance in the global frame and in the camera frame
(:func:`epropnp_det.evaluation.uncertainty.box_uncertainty_entry`, docs/uncertainty.md). Then the devkit's
``DetectionEval`` on 'mini_val' / 'val' (``v1.0-test`` is format-only). CPU only; no ``.cuda()``.

Fixed relative to the original (docs/method.md §13): a lone box survives the NMS (docs/method.md §13.1); no hard-coded
``cuda:0`` and results need not be complete or ordered (docs/method.md §13.14: grouped by ``sample_idx``; missing
cameras only warn); ``v1.0-test`` is explicitly format-only (docs/method.md §13.14); NaN velocities are never written
(docs/method.md §13.15).

Fail early: when the runner hands the metric the dataset's metainfo (mmengine's Test/ValLoop do this when they are
built, before any inference), :meth:`EProPnPNuScenesMetric.check_inputs` checks the ann file (readable, same
``version`` as the dataset) and, unless ``format_only``: the version has public annotations (not v1.0-test), all
devkit tables ``<data_root>/<version>/<table>.json`` exist, and the ann file's samples are exactly the devkit eval
split's (the devkit rejects any other submission). Format-only runs (e.g. v1.0-test) need no tables.

Prediction contract (``data_sample.pred_instances_3d``; see docs/data_contract.md):
``bboxes_3d``: mmdet3d ``CameraInstance3DBoxes`` (box_dim 7 or 9, bottom centre, ``[x,y,z,l,h,w,yaw(,vx,vz)]``)
**or** a (n, 7|9) tensor in the model convention ``[l,h,w,x,y,z,yaw(,vx,vz)]`` (geometric centre), original
camera frame of that image; optional ``velocities`` (n, 2) ``[vx, vz]`` (overrides box columns 7:9);
``scores_3d`` (n,); ``labels_3d`` (n,) in 0..9; ``attr_scores`` (n, 9) or ``attr_labels`` (n,) (optional → 'None').
"""
import os.path as osp
import tempfile
import warnings
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import mmengine
import numpy as np
import torch
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmdet3d.registry import METRICS
from mmdet3d.structures import CameraInstance3DBoxes
from mmengine.fileio import load
from mmengine.logging import MMLogger

from epropnp_det.models.utils.postprocess import rotated_bev_nms
from epropnp_det.structures.boxes import cam2global_matrix, cam_boxes_to_model, model_boxes_to_frame
from epropnp_det.structures.nuscenes_attributes import ATTRIBUTES, CLS2ATTR, DEFAULT_ATTR

from ..uncertainty import SIDECAR_FORMAT, SIDECAR_NAME, box_uncertainty_entry

# ATTRIBUTES, CLS2ATTR (allowed attribute indices per class) and DEFAULT_ATTR: one table shared with the head
# (epropnp_det.structures.nuscenes_attributes), imported above and re-exported
DEFAULT_MODALITY = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
NUM_CAMS = 6
#: the tables ``nuscenes.NuScenes`` loads (its ``table_names``) and the eval split of each annotated version
DEVKIT_TABLES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor', 'ego_pose', 'log',
                 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
EVAL_SPLITS = {'v1.0-mini': 'mini_val', 'v1.0-trainval': 'val'}
#: the sidecar's own description of its frames (docs/uncertainty.md)
SIDECAR_FRAME = ('results[token][i] belongs to results_nusc.json results[token][i]. pose_cov: covariance of '
                 '[x, y, z, yaw] in the global frame (m, rad; yaw = heading about global +z), first-order propagation '
                 'of pose_cov_cam through the camera->global transform cam2global[token][camera]; pose_cov_cam, '
                 'pose_cam, pose_samples_cam: camera frame of that image (x right, y down, z forward, yaw about y); '
                 'pose_std: sqrt of the diagonal of pose_cov (x, y, z, yaw) and of pose_cov_cam (depth = z, '
                 'lateral = x)')


class EvaluationSetupError(ValueError):
    """The metric cannot score this run (tables, version or split); raised before inference starts."""


def restricted_attribute(label_name: str, attr_label: Optional[int] = None, attr_scores=None) -> str:
    """Attribute name of one box restricted to its class (see module docstring)."""
    allowed = CLS2ATTR.get(label_name, ())
    if not allowed:
        return ''
    if attr_scores is not None:
        scores = np.asarray(attr_scores, dtype=np.float64)
        return ATTRIBUTES[allowed[int(np.argmax(scores[list(allowed)]))]]
    if attr_label is not None and int(attr_label) in allowed:
        return ATTRIBUTES[int(attr_label)]
    return ATTRIBUTES[DEFAULT_ATTR[label_name]]


def bev_nms_global(center: np.ndarray, lw: np.ndarray, heading: np.ndarray, scores: np.ndarray,
                   labels: np.ndarray, iou_thr: float) -> np.ndarray:
    """Per-class rotated BEV NMS. center (n, 2) xy, lw (n, 2) footprint length (along heading) and width,
    heading (n,) radians counter-clockwise from +x; returns kept indices sorted by descending score.
    A numpy front end of the project's one rotated BEV NMS, :func:`~epropnp_det.models.utils.rotated_bev_nms`."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    keep = rotated_bev_nms(t(center), t(lw), t(heading), t(scores), torch.from_numpy(np.asarray(labels)).long(),
                           iou_thr).numpy()
    return keep[np.argsort(-scores[keep], kind='stable')]


@METRICS.register_module()
class EProPnPNuScenesMetric(NuScenesMetric):
    """See module docstring. Extra args: ``nms_thr=0.25``, ``max_per_sample=500``."""

    def __init__(self, data_root: str = '', ann_file: str = '', metric='bbox', modality: Optional[dict] = None,
                 prefix: Optional[str] = None, format_only: bool = False, jsonfile_prefix: Optional[str] = None,
                 eval_version: str = 'detection_cvpr_2019', collect_device: str = 'cpu',
                 backend_args: Optional[dict] = None, nms_thr: float = 0.25, max_per_sample: int = 500) -> None:
        modality = dict(DEFAULT_MODALITY, **(modality or {}))
        super().__init__(data_root=data_root, ann_file=ann_file, metric=metric, modality=modality, prefix=prefix,
                         format_only=format_only, jsonfile_prefix=jsonfile_prefix, eval_version=eval_version,
                         collect_device=collect_device, backend_args=backend_args)
        self.nms_thr = nms_thr
        self.max_per_sample = max_per_sample

    # ------------------------------------------------------------------------------------------------ fail early
    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        """Set by mmengine's loops before inference: runs :meth:`check_inputs`."""
        self._dataset_meta = dataset_meta
        if dataset_meta is not None:
            self.check_inputs(dataset_meta.get('version'))

    def check_inputs(self, version: Optional[str]) -> None:
        """Raise :class:`EvaluationSetupError` if this metric could not score the run (module docstring)."""
        if not osp.isfile(self.ann_file):
            raise EvaluationSetupError(f'EProPnPNuScenesMetric: ann_file not found: {self.ann_file}')
        data = load(self.ann_file, backend_args=self.backend_args)
        file_version = data.get('metainfo', {}).get('version')
        if version is None:
            version = file_version
        if file_version is not None and file_version != version:
            raise EvaluationSetupError(f"EProPnPNuScenesMetric: {self.ann_file} is a {file_version} info file but "
                                       f"the dataset says version '{version}' (config metainfo)")
        if self.format_only:
            return
        if version not in EVAL_SPLITS:
            raise EvaluationSetupError(
                f"EProPnPNuScenesMetric: {version} has no public annotations, so it cannot be scored; write the "
                f'submission only: --cfg-options test_evaluator.format_only=True test_evaluator.jsonfile_prefix=DIR')
        table_dir = osp.join(self.data_root, version)
        missing = [t for t in DEVKIT_TABLES if not osp.isfile(osp.join(table_dir, f'{t}.json'))]
        if missing:
            raise EvaluationSetupError(
                f"EProPnPNuScenesMetric: the nuScenes devkit tables are missing from {table_dir}: "
                f"{', '.join(m + '.json' for m in missing)}; scoring needs the dataset's {version} metadata under "
                f"the metric's data_root (or set format_only=True and a jsonfile_prefix to write the submission only)")
        self._check_eval_split(data, version, table_dir)

    def _check_eval_split(self, data: dict, version: str, table_dir: str) -> None:
        """The ann file's sample tokens must be the devkit eval split's (scene names of nuscenes.utils.splits)."""
        from nuscenes.utils.splits import create_splits_scenes
        split = EVAL_SPLITS[version]
        names = set(create_splits_scenes()[split])
        scene_tokens = {s['token'] for s in mmengine.load(osp.join(table_dir, 'scene.json')) if s['name'] in names}
        expected = {s['token'] for s in mmengine.load(osp.join(table_dir, 'sample.json'))
                    if s['scene_token'] in scene_tokens}
        have = {info['token'] for info in data['data_list']}
        if have != expected:
            extra, lack = sorted(have - expected), sorted(expected - have)
            raise EvaluationSetupError(
                f"EProPnPNuScenesMetric: {self.ann_file} has {len(have)} samples but the devkit's '{split}' split of "
                f'{table_dir} has {len(expected)} ({len(lack)} missing from the info file, e.g. {lack[:3]}; '
                f'{len(extra)} not in the split, e.g. {extra[:3]}); the devkit would reject the submission after '
                f'inference. Use the {split} info file written by tools/create_data.py for this root.')

    # ------------------------------------------------------------------------------------------------ collection
    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            if 'pred_instances_3d' not in ds:
                raise KeyError('EProPnPNuScenesMetric: data sample without pred_instances_3d')
            pred = ds['pred_instances_3d']
            out = {}
            for key in ('bboxes_3d', 'scores_3d', 'labels_3d', 'attr_labels', 'attr_scores', 'velocities',
                        'pose_cov', 'pose_samples', 'pose_sample_weights'):  # the last three: the sidecar
                if key in pred:
                    val = pred[key]
                    out[key] = val.to('cpu') if hasattr(val, 'to') else val
            self.results.append(dict(pred_instances_3d=out, sample_idx=int(ds['sample_idx'])))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        classes = self.dataset_meta['classes']
        self.version = self.dataset_meta['version']
        self.data_infos = load(self.ann_file, backend_args=self.backend_args)['data_list']
        tmp_dir = None
        prefix = self.jsonfile_prefix
        if prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            prefix = osp.join(tmp_dir.name, 'results')
        res_path = self.format_results(results, classes, prefix)
        if self.format_only:
            logger.info(f'results are saved in {res_path}')
            return {}
        if self.version not in EVAL_SPLITS:
            raise EvaluationSetupError(f'{self.version} has no public annotations: use format_only=True')
        if not any(len(boxes) for boxes in mmengine.load(res_path)['results'].values()):
            # The devkit raises "Invalid box type: None" on an empty submission (e.g. an untrained model whose
            # scores are all below threshold); the honest score of that submission is zero AP and maximal errors.
            logger.warning('EProPnPNuScenesMetric: no predicted boxes in the whole split; reporting NDS = mAP = 0')
            metric_dict = self._empty_metrics(classes)
            self._write_empty_summary(osp.dirname(res_path), classes)
        else:
            metric_dict = self._evaluate_single(res_path, classes=classes, result_name='pred_instances_3d')
        if tmp_dir is not None:
            tmp_dir.cleanup()
        return metric_dict

    def _empty_metrics(self, classes) -> Dict[str, float]:
        """Metrics of a submission without boxes: AP 0 everywhere, TP errors 1 (the devkit's value for a class
        without true positives), NDS 0."""
        prefix = 'pred_instances_3d_NuScenes'
        out = {f'{prefix}/{name}_AP_dist_{d}': 0.0 for name in classes for d in (0.5, 1.0, 2.0, 4.0)}
        out.update({f'{prefix}/{err}': 1.0 for err in self.ErrNameMapping.values()})
        out.update({f'{prefix}/NDS': 0.0, f'{prefix}/mAP': 0.0})
        return out

    def _write_empty_summary(self, out_dir: str, classes) -> None:
        """Writes the devkit's ``metrics_summary.json`` for a submission without boxes (the devkit itself cannot
        evaluate it), so tools reading that file (``tools/print_metrics.py``) work the same for every run."""
        errs = tuple(self.ErrNameMapping)  # the devkit's TP error names, as in _empty_metrics
        summary = dict(
            label_aps={c: {str(d): 0.0 for d in (0.5, 1.0, 2.0, 4.0)} for c in classes},
            mean_dist_aps={c: 0.0 for c in classes}, mean_ap=0.0,
            label_tp_errors={c: {e: 1.0 for e in errs} for c in classes}, tp_errors={e: 1.0 for e in errs},
            tp_scores={e: 0.0 for e in errs}, nd_score=0.0, eval_time=0.0, empty_submission=True)
        mmengine.dump(summary, osp.join(out_dir, 'metrics_summary.json'), indent=2)

    # ------------------------------------------------------------------------------------------------ formatting
    @staticmethod
    def _pred_to_model(pred: dict):
        boxes = pred['bboxes_3d']
        if isinstance(boxes, CameraInstance3DBoxes):
            b, velo = cam_boxes_to_model(boxes)
        elif isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[1] in (7, 9):
            b, velo = boxes[:, :7], (boxes[:, 7:9] if boxes.shape[1] == 9 else None)
        else:
            raise TypeError(f'pred_instances_3d.bboxes_3d must be CameraInstance3DBoxes or a (n, 7|9) tensor, got '
                            f'{type(boxes).__name__} {getattr(boxes, "shape", "")}')
        if 'velocities' in pred:
            velo = pred['velocities']
        b = b.double()
        velo = torch.zeros(len(b), 2, dtype=torch.float64) if velo is None else velo.double()
        velo = torch.where(torch.isfinite(velo), velo, torch.zeros_like(velo))
        return b, velo

    def sample_to_global(self, info: dict, cam_results: Dict[int, dict], classes: Sequence[str]) -> List[dict]:
        """All camera predictions of one sample → fused, NMS-ed list of nuScenes JSON boxes."""
        return self._sample_to_global(info, cam_results, classes)[0]

    def _sample_to_global(self, info: dict, cam_results: Dict[int, dict], classes: Sequence[str]):
        """:meth:`sample_to_global` plus the pose-uncertainty sidecar records of the same boxes in the same order
        (None where a prediction has no ``pose_cov``) and the cameras' camera→global transforms."""
        cams = list(info['images'].keys())
        cam2global = {}
        ranges = self.eval_detection_configs.class_range
        parts = defaultdict(list)
        for cam_id, pred in sorted(cam_results.items()):
            if len(pred['scores_3d']) == 0:
                continue
            img = info['images'][cams[cam_id]]
            boxes, velo = self._pred_to_model(pred)
            labels = pred['labels_3d'].long().numpy()
            scores = pred['scores_3d'].double().numpy()
            ego = model_boxes_to_frame(boxes, torch.as_tensor(np.asarray(img['cam2ego'], np.float64)))
            dist = ego['center'][:, :2].norm(dim=1).numpy()
            in_range = dist <= np.array([ranges[classes[label]] for label in labels])
            c2g = cam2global_matrix(img['lidar2cam'], info['lidar_points']['lidar2ego'], info['ego2global'])
            glob = model_boxes_to_frame(boxes, c2g, velo)
            cam2global[cams[cam_id]] = c2g.numpy().tolist()
            pose_cov = pred.get('pose_cov')
            mc_samples = pred.get('pose_samples')
            attr_scores = pred.get('attr_scores')
            attr_labels = pred.get('attr_labels')
            for i in np.nonzero(in_range)[0]:
                name = classes[labels[i]]
                attr = restricted_attribute(
                    name, None if attr_labels is None else int(attr_labels[i]),
                    None if attr_scores is None else attr_scores[i].numpy())
                parts['center'].append(glob['center'][i].numpy())
                parts['wlh'].append(glob['wlh'][i].numpy())
                parts['quat'].append(glob['quat'][i].numpy())
                parts['yaw'].append(float(glob['yaw'][i]))
                parts['velocity'].append(glob['velocity'][i, :2].numpy())
                parts['label'].append(labels[i])
                parts['score'].append(scores[i])
                parts['attr'].append(attr)
                parts['unc'].append(None if pose_cov is None else box_uncertainty_entry(
                    cams[cam_id], boxes[i, 3:7].numpy(), pose_cov[i].double().numpy(), c2g.numpy(),
                    None if mc_samples is None else mc_samples[i].double().numpy(),
                    None if mc_samples is None else pred['pose_sample_weights'][i].double().numpy()))
        if not parts:
            return [], [], cam2global
        center = np.stack(parts['center'])
        wlh = np.stack(parts['wlh'])
        score = np.array(parts['score'])
        label = np.array(parts['label'])
        keep = bev_nms_global(center[:, :2], wlh[:, [1, 0]], np.array(parts['yaw']), score, label, self.nms_thr)
        keep = keep[:self.max_per_sample]
        annos = []
        for i in keep:
            annos.append(dict(sample_token=info['token'], translation=center[i].tolist(), size=wlh[i].tolist(),
                              rotation=parts['quat'][i].tolist(), velocity=parts['velocity'][i].tolist(),
                              detection_name=classes[label[i]], detection_score=float(score[i]),
                              attribute_name=parts['attr'][i]))
        return annos, [parts['unc'][i] for i in keep], cam2global

    def format_results(self, results: List[dict], classes: Optional[List[str]] = None,
                       jsonfile_prefix: Optional[str] = None) -> str:
        """Write ``<jsonfile_prefix>/results_nusc.json``; return its path."""
        by_frame = defaultdict(dict)
        for res in results:
            frame, cam = divmod(res['sample_idx'], NUM_CAMS)
            if frame >= len(self.data_infos):
                raise IndexError(f"sample_idx {res['sample_idx']} beyond the {len(self.data_infos)} samples of "
                                 f'{self.ann_file}')
            by_frame[frame][cam] = res['pred_instances_3d']
        missing = [f for f in range(len(self.data_infos)) if len(by_frame.get(f, {})) < NUM_CAMS]
        if missing:
            warnings.warn(f'{len(missing)} of {len(self.data_infos)} samples lack some camera results; they are '
                          f'submitted with what is there (devkit counts their objects as missed)')
        nusc_annos, unc, cam2global = {}, {}, {}
        for frame, info in enumerate(mmengine.track_iter_progress(self.data_infos)):
            nusc_annos[info['token']], unc[info['token']], cam2global[info['token']] = self._sample_to_global(
                info, by_frame.get(frame, {}), classes)
        mmengine.mkdir_or_exist(jsonfile_prefix)
        res_path = osp.join(jsonfile_prefix, 'results_nusc.json')
        mmengine.dump(dict(meta=self.modality, results=nusc_annos), res_path)
        if any(r is not None for boxes in unc.values() for r in boxes):
            # beside the submission, never inside it: the devkit and the server accept only the standard fields
            mmengine.dump(dict(format=SIDECAR_FORMAT, frame=SIDECAR_FRAME, results=unc, cam2global=cam2global),
                          osp.join(jsonfile_prefix, SIDECAR_NAME))
        return res_path
