# The embedded CPU default: EPro-PnP-Det (same head code and losses as the paper model) with a ResNet-18, a small
# head and 640x256 inputs, trained from random init on the synthetic nuScenes-format data
# (`bash tools/quickstart.sh` builds the data, trains, evaluates and draws).
#
#   python tools/create_synthetic_nuscenes.py --out-dir data/synthetic_nuscenes --image-size 640 360
#   python tools/create_data.py nuscenes --root-path data/synthetic_nuscenes --out-dir data/synthetic_nuscenes \
#       --version v1.0-mini
#   python tools/train.py configs/epropnp_det_r18_synthetic.py
#   python tools/test.py configs/epropnp_det_r18_synthetic.py work_dirs/epropnp_det_r18_synthetic/iter_<N>.pth
#
# Budget: iteration-based, `max_iters` below is the one knob (the FCOS3D baseline,
# configs/baselines/fcos3d_r18_synthetic.py, uses the same number of iterations of batch 2).
_base_ = [
    './_base_/models/epropnp_det_r18_cpu.py', './_base_/datasets/synthetic_nus_mono3d.py',
    './_base_/schedules/epropnp_adamw_12e.py', './_base_/default_runtime.py'
]
# The plugin, registered into mmdet3d's registries:
custom_imports = dict(
    imports=['epropnp_det.models', 'epropnp_det.datasets', 'epropnp_det.evaluation', 'epropnp_det.engine'],
    allow_failed_imports=False)

max_iters = 800
val_interval = max_iters
lr = 3e-4       # a short schedule from random init: higher than the paper's 1e-4 (which assumes ImageNet init)

model = dict(
    data_preprocessor={{_base_.data_preprocessor}},
    # Random init (no weights can be downloaded on the build machines). With internet, start from ImageNet:
    # backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
)

train_dataloader = dict(batch_size=2, sampler=dict(type='InfiniteSampler', shuffle=True))
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=min(50, max_iters)),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(0.8 * max_iters), int(0.95 * max_iters)], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
auto_scale_lr = dict(enable=False, base_batch_size=2)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=min(200, max_iters), max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)

# Flip test-time augmentation (`tools/test.py ... --tta`), merging both branches' correspondences (docs/method.md §6.4).
tta_model = dict(type='EProPnPFlipTTAModel')
tta_pipeline = [
    dict(type='EProPnPLoadImage'),
    dict(type='EProPnPResize', scale=(640, 360), keep_ratio=True),
    dict(type='TestTimeAug', transforms=[
        [dict(type='EProPnPRandomFlip', prob=0.), dict(type='EProPnPRandomFlip', prob=1.)],
        [dict(type='EProPnPCrop', crop_box=(0, 104, 640, 360))],
        [dict(type='EProPnPPack3DDetInputs', keys=('img', ))]])
]
