# Synthetic nuScenes-format data (tools/create_synthetic_nuscenes.py) for EPro-PnP-Det on CPU.
#
# Input size: images are brought to 640x360 (EProPnPResize, keep ratio; a no-op when the data were generated with
# `--image-size 640 360`, which is the cheap choice; 1600x900 data are downscaled by 0.4) and cropped to the
# bottom 640x256 rows, the same vertical fraction as the original crop (0, 228, 1600, 900) -> 1600x672
# (256 = 8 x 32: no padding). 3D boxes and K stay in the ORIGINAL camera/image; img_transform carries the rest.
#
# Build the data:
#   python tools/create_synthetic_nuscenes.py --out-dir data/synthetic_nuscenes --image-size 640 360
#   python tools/create_data.py nuscenes --root-path data/synthetic_nuscenes --out-dir data/synthetic_nuscenes \
#       --version v1.0-mini
custom_imports = dict(imports=['epropnp_det.datasets', 'epropnp_det.evaluation'], allow_failed_imports=False)

dataset_type = 'EProPnPNuScenesDataset'
data_root = 'data/synthetic_nuscenes/'
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
metainfo = dict(classes=class_names, version='v1.0-mini')
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
input_size = (640, 360)          # (W, H) after EProPnPResize
crop_box = (0, 104, 640, 360)    # -> 640 x 256 network input
backend_args = None
data_prefix = dict(pts='samples/LIDAR_TOP', CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
                   CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT', CAM_BACK='samples/CAM_BACK',
                   CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT', CAM_BACK_LEFT='samples/CAM_BACK_LEFT')

train_pipeline = [
    dict(type='EProPnPLoadImage', backend_args=backend_args),
    dict(type='EProPnPLoadAnnotations'),
    dict(type='EProPnPLoadLidarObjectCoords', convention='v1'),
    dict(type='EProPnPResize', scale=input_size, keep_ratio=True),
    dict(type='EProPnPRandomFlip', prob=0.5),
    dict(type='EProPnPCrop', crop_box=crop_box, trunc_ignore_thres=0.8),
    dict(type='EProPnPPack3DDetInputs'),
]
test_pipeline = [
    dict(type='EProPnPLoadImage', backend_args=backend_args),
    dict(type='EProPnPResize', scale=input_size, keep_ratio=True),
    dict(type='EProPnPCrop', crop_box=crop_box),
    dict(type='EProPnPPack3DDetInputs', keys=('img', )),
]

train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=data_prefix,
                 ann_file='nuscenes_infos_train.pkl', pipeline=train_pipeline, modality=input_modality,
                 metainfo=metainfo, test_mode=False, min_visibility=2, trunc_ignore_thres=0.8, min_box_size=4.0,
                 backend_args=backend_args))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True, drop_last=False,
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
