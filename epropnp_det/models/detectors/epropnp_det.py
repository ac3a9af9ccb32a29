"""EPro-PnP-Det detector: backbone → FPN → :class:`EProPnPDeformPnPHead` on ``Det3DDataSample`` (docs/method.md §3.1).

``loss`` returns the head's flat loss dict (mmengine sums the keys containing ``loss``; ``ate``, ``norm_factor``,
``num_dropped_centers`` are logged only). ``predict`` fills ``pred_instances_3d`` (``bboxes_3d``:
``CameraInstance3DBoxes`` box_dim 9 in the original camera frame, ``scores_3d``, ``labels_3d``, ``attr_labels``,
plus the pose uncertainty of each box: ``pose_cov`` (n, 4, 4) covariance of ``[x, y, z, yaw]`` in the camera frame,
``pose_std`` (n, 4), ``lateral_std`` (camera x, m), ``depth_std`` (camera z, m), ``yaw_std`` (rad), and, with
``test_cfg.mc_samples = K > 0``, ``pose_samples`` (n, K, 4) / ``pose_sample_weights`` (n, K); docs/architecture.md)
and ``pred_instances`` (projected 2D boxes in original-image pixels, FCOS class scores, labels).
Flip test-time augmentation (docs/method.md §6.4): :class:`EProPnPFlipTTAModel` (``tools/test.py --tta``).
"""
from mmdet3d.models.detectors import SingleStageMono3DDetector
from mmdet3d.registry import MODELS
from mmengine.structures import InstanceData

__all__ = ['EProPnPDet']


@MODELS.register_module()
class EProPnPDet(SingleStageMono3DDetector):
    """Single-stage monocular detector with the EPro-PnP head; arguments as mmdet ``SingleStageDetector``."""

    @staticmethod
    def dense_maps(batch_inputs_dict: dict) -> dict:
        """Dense original-coordinate maps of the batch, if the data preprocessor made them (v1 sampler mode)."""
        return dict(dense_x2d=batch_inputs_dict.get('img_dense_x2d'),
                    dense_mask=batch_inputs_dict.get('img_dense_x2d_mask'))

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list, **kwargs) -> dict:
        x = self.extract_feat(batch_inputs_dict)
        return self.bbox_head.loss(x, batch_data_samples, **self.dense_maps(batch_inputs_dict))

    def predict(self, batch_inputs_dict: dict, batch_data_samples: list, rescale: bool = True, **kwargs) -> list:
        x = self.extract_feat(batch_inputs_dict)
        results = self.bbox_head.predict(x, batch_data_samples, rescale=rescale, **self.dense_maps(batch_inputs_dict))
        results_2d = []
        for r in results:
            r2 = InstanceData()
            r2.bboxes = r.bboxes_2d
            r2.scores = r.scores_2d
            r2.labels = r.labels_3d
            results_2d.append(r2)
        return self.add_pred_to_datasample(batch_data_samples, results, results_2d)
