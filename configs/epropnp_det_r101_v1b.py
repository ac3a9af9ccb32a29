# EPro-PnP-Det v1b (docs/method.md §8.1 column "v1b_220411"; README 0.444 NDS on nuScenes val): the basic model
# (configs/epropnp_det_r101.py) with FPN P3-P7 (out_indices (1, 2, 3)), strides 8..128 and key/value maps at
# stride 8 (dense levels P3-P5 = RoIs and the VolumeCenter targets at stride 8), 16 points per head, 128 Monte-Carlo
# samples, pose-loss weight 0.5, class embeddings added to the object queries, class-specific FCOS centre offsets,
# LiDAR coordinate regression (v1 form, x0.25), 14x14 RoIs, total batch 12 = 2 GPUs x 6 images.
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_v1b.py 2
_base_ = ['./epropnp_det_r101.py']

model = dict(
    backbone=dict(out_indices=(1, 2, 3)),
    neck=dict(in_channels=[512, 1024, 2048], num_outs=5),
    bbox_head=dict(
        strides=(8, 16, 32, 64, 128), output_stride=8, dense_lvl_range=(0, 3), det_lvl_range=(0, 5), num_points=16,
        use_cls_emb=True,
        fcos_head=dict(offset_cls_agnostic=False),
        pnp=dict(mc_samples=128),
        loss_pose=dict(loss_weight=0.5),
        loss_regr=dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=0.05, loss_weight=0.25)),
    train_cfg=dict(roi_shape=(14, 14)))
train_dataloader = dict(batch_size=6, num_workers=2)   # x 2 GPUs = 12 images per step
