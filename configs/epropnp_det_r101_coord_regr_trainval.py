# EPro-PnP-Det v1 "coord_regr_trainval" (docs/method.md §8.1): configs/epropnp_det_r101_coord_regr.py trained on train +
# val (for test-server submissions; the val metrics printed during training are then not a held-out estimate).
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_coord_regr_trainval.py 4
#   python tools/test.py configs/epropnp_det_r101_coord_regr_trainval.py CKPT --cfg-options \
#       test_dataloader.dataset.ann_file=nuscenes_infos_test.pkl \
#       test_evaluator.ann_file=data/nuscenes/nuscenes_infos_test.pkl \
#       test_evaluator.format_only=True test_evaluator.jsonfile_prefix=work_dirs/submission
_base_ = ['./epropnp_det_r101_coord_regr.py']

# the parent's training set (its own pipeline, filters and paths) twice, on the train and on the val infos
train_dataloader = dict(dataset=dict(
    _delete_=True, type='ConcatDataset',
    datasets=[dict(_base_.train_dataloader.dataset, ann_file=ann_file)
              for ann_file in ('nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl')]))
