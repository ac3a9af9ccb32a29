# EPro-PnP-Det v1 "basic" (docs/method.md §8, paper Table: 0.425 NDS on nuScenes val): ResNet-101-DCN (torchvision
# ImageNet init), FPN P2-P7, 8 heads x 32 points, 512 Monte-Carlo samples, AdamW 1e-4, 12 epochs (x0.1 at 10 and 11),
# total batch 12 = 4 GPUs x 3 images, nuScenes under data/nuscenes (1600x900, crop (0, 228, 1600, 900)).
#
#   python tools/create_data.py nuscenes --root-path data/nuscenes --out-dir data/nuscenes --version v1.0-trainval
#   bash tools/dist_train.sh configs/epropnp_det_r101.py 4
#   bash tools/dist_test.sh configs/epropnp_det_r101.py work_dirs/epropnp_det_r101/epoch_12.pth 4 [--tta]
_base_ = [
    './_base_/models/epropnp_det_r101.py', './_base_/datasets/nus_mono3d_epropnp.py',
    './_base_/schedules/epropnp_adamw_12e.py', './_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['epropnp_det.models', 'epropnp_det.datasets', 'epropnp_det.evaluation', 'epropnp_det.engine'],
    allow_failed_imports=False)

model = dict(data_preprocessor={{_base_.data_preprocessor}})
train_dataloader = dict(batch_size=3, num_workers=1)   # x 4 GPUs = 12 images per step
auto_scale_lr = dict(enable=False, base_batch_size=12)

# Flip test-time augmentation (`tools/test.py ... --tta`): the correspondences of both branches are merged into one
# PnP problem (docs/method.md §6.4).
tta_model = dict(type='EProPnPFlipTTAModel')
tta_pipeline = [
    dict(type='EProPnPLoadImage'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='EProPnPRandomFlip', prob=0.), dict(type='EProPnPRandomFlip', prob=1.)],
        [dict(type='EProPnPCrop', crop_box=(0, 228, 1600, 900))],
        [dict(type='EProPnPPack3DDetInputs', keys=('img', ))]])
]
