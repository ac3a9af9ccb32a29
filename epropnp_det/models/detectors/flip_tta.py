"""Flip test-time augmentation wrapper (docs/method.md §6.4) for ``tools/test.py --tta``.

mmengine's ``BaseTTAModel`` merges *predictions* of independent passes; EPro-PnP-Det merges *correspondences*
inside the head instead, so ``test_step`` is overridden: of the two augmented views of each batch (identity and
horizontal flip, produced by the config's ``tta_pipeline``), both are pre-processed and passed through backbone
and neck, and :meth:`EProPnPDeformPnPHead.predict_flip_tta` builds one set of detections per image. Results are
attached to the un-flipped view's data samples.
"""
from mmdet3d.registry import MODELS
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData

__all__ = ['EProPnPFlipTTAModel']


@MODELS.register_module()
class EProPnPFlipTTAModel(BaseTTAModel):
    """``module``: the :class:`EProPnPDet` config or instance (``tools/test.py --tta`` sets it from ``model``)."""

    def test_step(self, data):
        if isinstance(data, dict):
            views = [{k: v[i] for k, v in data.items()} for i in range(len(data[next(iter(data))]))]
        else:
            views = [[d[i] for d in data] for i in range(len(data[0]))]
        if len(views) != 2:
            raise ValueError(f'EProPnPFlipTTAModel expects exactly 2 augmented views (identity, flip), got '
                             f'{len(views)}; check tta_pipeline')
        processed = [self.module.data_preprocessor(v, False) for v in views]
        flips = [bool(p['data_samples'][0].metainfo.get('flip', False)) for p in processed]
        if sorted(flips) != [False, True]:
            raise ValueError(f"EProPnPFlipTTAModel: views must be one un-flipped and one flipped, got flip={flips}")
        orig, flip = processed if not flips[0] else processed[::-1]
        det = self.module
        x = det.extract_feat(orig['inputs'])
        x_flip = det.extract_feat(flip['inputs'])
        maps = [tuple(det.dense_maps(v['inputs']).values()) for v in (orig, flip)]
        results = det.bbox_head.predict_flip_tta(x, x_flip, orig['data_samples'], flip['data_samples'], *maps)
        results_2d = [InstanceData(bboxes=r.bboxes_2d, scores=r.scores_2d, labels=r.labels_3d) for r in results]
        return det.add_pred_to_datasample(orig['data_samples'], results, results_2d)

    def merge_preds(self, data_samples_list):
        # not used: merging happens at the correspondence level in ``test_step``
        raise NotImplementedError
