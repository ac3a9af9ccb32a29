# FCOS3D baseline (mmdet3d 1.4's own FCOSMono3D + FCOSMono3DHead, unchanged code) on the synthetic nuScenes data,
# sized for the same CPU budget as the embedded EPro-PnP-Det default (configs/epropnp_det_r18_synthetic.py).
#
#   python tools/train.py configs/baselines/fcos3d_r18_synthetic.py
#   python tools/test.py  configs/baselines/fcos3d_r18_synthetic.py work_dirs/fcos3d_r18_synthetic/iter_<N>.pth
#   python tools/benchmarks/synthetic_vs_fcos3d.py           # side-by-side NDS/mAP/mATE/... table
#
# Data: the same root and info files as configs/_base_/datasets/synthetic_nus_mono3d.py (mmdet3d's converter via
# tools/create_data.py; the EPro-PnP extra fields in the infos are ignored by mmdet3d's NuScenesDataset). Another
# root: --cfg-options data_root=... does NOT propagate (config variables are resolved when the file is parsed);
# override train_dataloader.dataset.data_root, val_dataloader.dataset.data_root, test_dataloader.dataset.data_root,
# val_evaluator.data_root/ann_file and test_evaluator.data_root/ann_file (tools/benchmarks/synthetic_vs_fcos3d.py
# --data-root does exactly this).
#
# Input: the same scale as the EPro-PnP config (1600x900 -> 640x360, keep ratio; a no-op for data generated at
# 640x360) but NOT its crop to the bottom 640x256 rows: mmdet3d has no crop that keeps FCOS3D's targets consistent
# (RandomCrop3D ignores centers_2d, cam2img and 3D boxes; FCOSMono3DHead.predict maps centres back to the original
# image only through `scale_factor`, so a crop offset would be lost). FCOS3D therefore sees 640x360 (padded to
# 640x384), i.e. 1.5x the pixels of EPro-PnP-Det's 640x256 input (the extra rows are sky/top of the image).
#   Train: Resize3D (scales image, 2D boxes, centers_2d AND cam2img consistently) -> RandomFlip3D -> pack.
#   Test:  mmdet.Resize (K untouched, scale_factor recorded) -> the head divides predicted centres by
#          scale_factor and back-projects with the original K (stock FCOS3D test path).
#
# Model: ResNet-18 (random init here: no weights can be downloaded on the build machines) -> FPN 128 ch P3-P7 ->
# FCOSMono3DHead with a light head (64 feature channels, 1 shared conv per tower, no DCN) instead of the stock 256 ch /
# 2 convs / DCN, which dominates CPU time (environment.md). Regression ranges are the stock ones x0.4 (the input
# scale), so objects are spread over the FPN levels as at full resolution.
_base_ = ['mmdet3d::_base_/models/fcos3d.py', 'mmdet3d::_base_/default_runtime.py']
custom_imports = dict(imports=['epropnp_det.evaluation'], allow_failed_imports=False)

# ----------------------------------------------------------------------------- budget (the one place to align)
max_iters = 800          # training iterations of batch 2 (~3.3 epochs of the 480 train images); ~1.2-1.5 s each
                         # with 1 thread on this 2-core machine => ~20 min
val_interval = max_iters  # validate once, at the end
batch_size = 2
lr = 3e-4                # AdamW; from random init a short schedule learns faster with Adam than FCOS3D's SGD 2e-3

# ----------------------------------------------------------------------------- data
dataset_type = 'NuScenesDataset'
data_root = 'data/synthetic_nuscenes/'
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
               'traffic_cone', 'barrier']
metainfo = dict(classes=class_names, version='v1.0-mini')
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
input_size = (640, 360)  # (W, H), as configs/_base_/datasets/synthetic_nus_mono3d.py
backend_args = None
data_prefix = dict(pts='samples/LIDAR_TOP', CAM_FRONT='samples/CAM_FRONT', CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
                   CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT', CAM_BACK='samples/CAM_BACK',
                   CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT', CAM_BACK_LEFT='samples/CAM_BACK_LEFT')

train_pipeline = [
    dict(type='LoadImageFromFileMono3D', backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox=True, with_label=True, with_attr_label=True, with_bbox_3d=True,
         with_label_3d=True, with_bbox_depth=True),
    dict(type='Resize3D', scale=input_size, keep_ratio=True),
    dict(type='RandomFlip3D', flip_ratio_bev_horizontal=0.5),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes', 'gt_bboxes_labels', 'attr_labels', 'gt_bboxes_3d',
                                       'gt_labels_3d', 'centers_2d', 'depths']),
]
test_pipeline = [
    dict(type='LoadImageFromFileMono3D', backend_args=backend_args),
    dict(type='mmdet.Resize', scale=input_size, keep_ratio=True),
    dict(type='Pack3DDetInputs', keys=['img']),
]

train_dataloader = dict(
    batch_size=batch_size, num_workers=1, persistent_workers=True, drop_last=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=data_prefix, ann_file='nuscenes_infos_train.pkl',
                 load_type='mv_image_based', pipeline=train_pipeline, metainfo=metainfo, modality=input_modality,
                 test_mode=False, box_type_3d='Camera', use_valid_flag=True, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=data_prefix, ann_file='nuscenes_infos_val.pkl',
                 load_type='mv_image_based', pipeline=test_pipeline, metainfo=metainfo, modality=input_modality,
                 test_mode=True, box_type_3d='Camera', use_valid_flag=True, backend_args=backend_args))
test_dataloader = val_dataloader

# The project's CPU-safe metric (6-camera fusion, camera-time poses, BEV NMS, devkit NDS/mAP); it takes FCOS3D's
# CameraInstance3DBoxes(box_dim=9) + scores_3d/labels_3d/attr_labels as they are.
val_evaluator = dict(type='EProPnPNuScenesMetric', data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl',
                     metric='bbox', modality=input_modality, backend_args=backend_args)
test_evaluator = val_evaluator

# ----------------------------------------------------------------------------- model
model = dict(
    data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        _delete_=True, type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
        # Random init (no download possible here). With internet, start from ImageNet instead:
        # init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18'),
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128, start_level=1, add_extra_convs='on_output',
              num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        in_channels=128, feat_channels=64, stacked_convs=1, dcn_on_last_conv=False,
        regress_ranges=((-1, 20), (20, 40), (40, 80), (80, 160), (160, 1e8)),
        cls_branch=(64, ), reg_branch=((64, ), (64, ), (64, ), (64, ), ()), dir_branch=(64, ), attr_branch=(64, )),
    test_cfg=dict(nms_pre=1000, nms_thr=0.8, score_thr=0.05, max_per_img=200))

# ----------------------------------------------------------------------------- schedule
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(bias_decay_mult=0., norm_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=min(50, max_iters)),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(0.8 * max_iters), int(0.95 * max_iters)], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=batch_size)

# ----------------------------------------------------------------------------- runtime
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=min(200, max_iters), max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='nccl'))  # tools/train.py switches to gloo on CPU
randomness = dict(seed=0)
