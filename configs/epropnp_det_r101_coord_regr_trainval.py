# EPro-PnP-Det v1 "coord_regr_trainval" (spec §8.1): configs/epropnp_det_r101_coord_regr.py trained on train + val
# (for test-server submissions; the val metrics printed during training are then not a held-out estimate).
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_coord_regr_trainval.py 4
#   python tools/test.py configs/epropnp_det_r101_coord_regr_trainval.py CKPT --cfg-options \
#       test_dataloader.dataset.ann_file=nuscenes_infos_test.pkl \
#       test_evaluator.ann_file=data/nuscenes/nuscenes_infos_test.pkl \
#       test_evaluator.format_only=True test_evaluator.jsonfile_prefix=work_dirs/submission
_base_ = ['./epropnp_det_r101_coord_regr.py']

_train_set = dict(
    type={{_base_.dataset_type}}, data_root={{_base_.data_root}}, data_prefix={{_base_.data_prefix}},
    pipeline={{_base_.train_pipeline}}, modality={{_base_.input_modality}}, metainfo={{_base_.metainfo}},
    test_mode=False, min_visibility=2, trunc_ignore_thres=0.8, min_box_size=4.0, backend_args=None)
train_dataloader = dict(dataset=dict(
    _delete_=True, type='ConcatDataset',
    datasets=[dict(_train_set, ann_file='nuscenes_infos_train.pkl'),
              dict(_train_set, ann_file='nuscenes_infos_val.pkl')]))
