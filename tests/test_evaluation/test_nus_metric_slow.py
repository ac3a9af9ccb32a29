"""GT round trip on the DEFAULT-size generated dataset (10 scenes x 10 samples, mini_val = 20 samples), ~2 min."""
import os.path as osp

import pytest
import torch
from mmengine.structures import InstanceData

from epropnp_det.structures.boxes import model_to_cam_boxes
from tests.test_datasets.tiny_nuscenes import build_dataset


@pytest.mark.slow
def test_gt_round_trip_default_dataset(tmp_path):
    from mmdet3d.registry import METRICS

    import epropnp_det.evaluation  # noqa: F401
    from epropnp_det.datasets.nuscenes_infos import create_nuscenes_infos
    from epropnp_det.synthetic import GeneratorConfig, generate_dataset
    root = str(tmp_path / 'nus')
    generate_dataset(GeneratorConfig(out_dir=root, image_size=(640, 360), workers=1), progress=False)
    create_nuscenes_infos(root, root, version='v1.0-mini')
    pipe = [dict(type='EProPnPLoadImage'), dict(type='EProPnPLoadAnnotations'), dict(type='EProPnPPack3DDetInputs')]
    ds = build_dataset(root, pipe, ann_file='nuscenes_infos_val.pkl', filter_empty_gt=False, min_visibility=0,
                       trunc_ignore_thres=1.0, min_box_size=0.0)
    assert len(ds) == 120
    preds = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        g = s.gt_instances_3d
        p = InstanceData(bboxes_3d=model_to_cam_boxes(g.bboxes_3d, g.velocities), scores_3d=torch.ones(len(g)),
                         labels_3d=g.labels_3d, attr_labels=g.attr_labels)
        preds.append(dict(pred_instances_3d=p, sample_idx=s.sample_idx))
    metric = METRICS.build(dict(type='EProPnPNuScenesMetric', data_root=root,
                                ann_file=osp.join(root, 'nuscenes_infos_val.pkl'), jsonfile_prefix=str(tmp_path)))
    metric.dataset_meta = ds.metainfo
    metric.process({}, preds)
    res = metric.evaluate(len(preds))
    key = 'NuScenes metric/pred_instances_3d_NuScenes/'
    assert res[key + 'NDS'] >= 0.95 and res[key + 'mAP'] >= 0.95
