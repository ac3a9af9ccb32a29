# nuScenes (real data under data/nuscenes, 1600x900 images) for EPro-PnP-Det, monocular, one item per camera image.
# docs/method.md §4.3: flip 0.5, fixed crop (0, 228, 1600, 900) -> 1600x672 (no padding needed at 32), ImageNet
# normalisation in the data preprocessor. 3D boxes and K stay in the ORIGINAL camera/image; img_transform carries the
# augmentation.
#
# Build the infos (mmdet3d 1.4 format + the EPro-PnP fields):
#   python tools/create_data.py nuscenes --root-path data/nuscenes --out-dir data/nuscenes --version v1.0-trainval
#   (v1.0-test: --version v1.0-test, then use ann_file='nuscenes_infos_test.pkl' with format_only=True)
# For v1.0-mini set `metainfo = dict(classes=class_names, version='v1.0-mini')` (evaluated on mini_val).
custom_imports = dict(imports=['epropnp_det.datasets', 'epropnp_det.evaluation'], allow_failed_imports=False)

dataset_type = 'EProPnPNuScenesDataset'
data_root = 'data/nuscenes/'
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
metainfo = dict(classes=class_names, version='v1.0-trainval')
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
crop_box = (0, 228, 1600, 900)
backend_args = None
data_prefix = dict(pts='samples/LIDAR_TOP', CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
                   CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT', CAM_BACK='samples/CAM_BACK',
                   CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT', CAM_BACK_LEFT='samples/CAM_BACK_LEFT')

train_pipeline = [
    dict(type='EProPnPLoadImage', backend_args=backend_args),
    dict(type='EProPnPLoadAnnotations'),
    # coord_regr / v1b / v2 configs use the LiDAR object coordinates; the basic config may drop this step
    dict(type='EProPnPLoadLidarObjectCoords', convention='v1'),
    dict(type='EProPnPRandomFlip', prob=0.5),
    dict(type='EProPnPCrop', crop_box=crop_box, trunc_ignore_thres=0.8),
    dict(type='EProPnPPack3DDetInputs'),
]
test_pipeline = [
    dict(type='EProPnPLoadImage', backend_args=backend_args),
    dict(type='EProPnPCrop', crop_box=crop_box),
    dict(type='EProPnPPack3DDetInputs', keys=('img', )),
]

train_dataloader = dict(
    batch_size=6, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=data_prefix,
                 ann_file='nuscenes_infos_train.pkl', pipeline=train_pipeline, modality=input_modality,
                 metainfo=metainfo, test_mode=False, min_visibility=2, trunc_ignore_thres=0.8, min_box_size=4.0,
                 backend_args=backend_args))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=data_prefix,
                 ann_file='nuscenes_infos_val.pkl', pipeline=test_pipeline, modality=input_modality,
                 metainfo=metainfo, test_mode=True, backend_args=backend_args,
                 box_type_3d='Camera'))  # the dataset's default, stated for mmdet3d's inference_mono_3d_detector
test_dataloader = val_dataloader

val_evaluator = dict(type='EProPnPNuScenesMetric', data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl',
                     metric='bbox', modality=input_modality, backend_args=backend_args)
test_evaluator = val_evaluator

# data preprocessor to use in the model config (docs/method.md §4.3 Normalize + Pad3D(32); dense maps for the v1 path)
data_preprocessor = dict(type='EProPnPDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                         bgr_to_rgb=True, pad_size_divisor=32, with_dense_x2d=True, dense_x2d_convention='v1')
