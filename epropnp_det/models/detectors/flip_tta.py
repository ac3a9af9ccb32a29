"""Flip test-time augmentation wrapper (docs/method.md §6.4) for ``tools/test.py --tta``.

mmengine's ``BaseTTAModel`` merges *predictions* of independent passes; EPro-PnP-Det merges *correspondences*
inside the head instead, so ``test_step`` is overridden: of the two augmented views of each batch (identity and
horizontal flip, produced by the config's ``tta_pipeline``), both are pre-processed and passed through backbone
and neck, and :func:`predict_flip_tta` builds one set of detections per image with the head's stages. Results are
attached to the un-flipped view's data samples.
"""
from typing import List, Sequence

from mmdet3d.registry import MODELS
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor

from ..utils.detections import merge_flip_outputs

__all__ = ['EProPnPFlipTTAModel', 'predict_flip_tta']


def predict_flip_tta(head, x: Sequence[Tensor], x_flip: Sequence[Tensor], batch_data_samples: list,
                     batch_data_samples_flip: list, dense_maps=(None, None),
                     dense_maps_flip=(None, None)) -> List[InstanceData]:
    """Flip test-time augmentation of an :class:`EProPnPDeformPnPHead` by merging correspondences
    (docs/method.md §6.4).

    Class / centerness logits of both views are averaged (the flipped view's maps mirrored back along the width)
    and candidates are selected once; each view then runs its own sub-heads (own key/value maps, image transform
    and flip flag, embeddings and reference points gathered at the same indices); the correspondences are
    concatenated (:meth:`Correspondences.cat`: x2d are original-image coordinates and NOC are flip-corrected, so
    they are compatible) and solved by one PnP (:meth:`EProPnPDeformPnPHead.decode_objects`). Dims are averaged in
    log space; 3D scores, velocities and attribute logits arithmetically (:func:`merge_flip_outputs`).

    Args:
        x, x_flip: FPN levels of the image batch and of its horizontally flipped copy.
        batch_data_samples, batch_data_samples_flip: their data samples (metainfo with ``flip``).
        dense_maps, dense_maps_flip: ``(dense_x2d, dense_mask)`` of each view (the sampler's ``dense_map`` mode).
    """
    (cls, centers, ctrness, embs), dense = head(x)
    (cls_f, centers_f, ctrness_f, embs_f), dense_f = head(x_flip)
    mirror = lambda maps: [t.flip(-1) for t in maps]  # noqa: E731
    cls_avg = [(a + b) / 2 for a, b in zip(cls, mirror(cls_f))]
    ctr_avg = [(a + b) / 2 for a, b in zip(ctrness, mirror(ctrness_f))]
    cfg = head.test_cfg
    cams = [head.cameras([ds.metainfo for ds in samples], cls[0], *maps) for samples, maps in
            ((batch_data_samples, dense_maps), (batch_data_samples_flip, dense_maps_flip))]
    outs, cand = [], None
    for (c, e, dense_feats), cam in zip(((centers, embs, dense), (mirror(centers_f), mirror(embs_f), dense_f)), cams):
        cand = head.fcos_head.get_candidates(cls_avg, c, ctr_avg, e, cfg['score_thr'], cfg['max_per_img'])
        key_map, value_map = head.dense_branch(dense_feats, cam.img_wh, cam.pad_hw)
        outs.append(head.forward_subheads(cand.emb, cand.centers, cand.strides, cand.img_inds, cand.labels,
                                          key_map, value_map, cam))
    merged = merge_flip_outputs(*outs, cand.img_inds)
    # the candidates' FCOS scores come from the averaged maps and are identical in both views
    return head.decode_objects(merged, cand, cams[0], len(batch_data_samples))


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
        results = predict_flip_tta(det.bbox_head, x, x_flip, orig['data_samples'], flip['data_samples'], *maps)
        results_2d = [InstanceData(bboxes=r.bboxes_2d, scores=r.scores_2d, labels=r.labels_3d) for r in results]
        return det.add_pred_to_datasample(orig['data_samples'], results, results_2d)

    def merge_preds(self, data_samples_list):
        # not used: merging happens at the correspondence level in ``test_step``
        raise NotImplementedError
