# EPro-PnP-Det v2 trained on nuScenes train + val (docs/method.md §8.1: its only difference from
# epropnp_det_r101_v2.py), for the test-split submission (the val metrics printed during training are then not a
# held-out estimate).
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_v2_trainval.py 2
#   python tools/create_data.py nuscenes --root-path data/nuscenes --out-dir data/nuscenes --version v1.0-test
#   python tools/test.py configs/epropnp_det_r101_v2_trainval.py CKPT --tta --cfg-options \
#       test_dataloader.dataset.ann_file=nuscenes_infos_test.pkl \
#       test_evaluator.ann_file=data/nuscenes/nuscenes_infos_test.pkl \
#       test_evaluator.format_only=True test_evaluator.jsonfile_prefix=work_dirs/submission_v2
_base_ = ['./epropnp_det_r101_v2.py']

# the parent's training set (its own pipeline, filters and paths) twice, on the train and on the val infos
train_dataloader = dict(dataset=dict(
    _delete_=True, type='ConcatDataset',
    datasets=[dict(_base_.train_dataloader.dataset, ann_file=ann_file)
              for ann_file in ('nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl')]))
