# CPU counterpart of configs/epropnp_det_r101_v1b.py on the synthetic data: the embedded default
# (configs/epropnp_det_r18_synthetic.py, whose small model already uses FPN P3+ with key/value maps at stride 8)
# with the v1b switches: class embeddings in the object queries, class-specific FCOS centre offsets, pose-loss
# weight 0.5, LiDAR coordinate regression (v1 form, SmoothL1 beta 0.05, x0.25) and 14x14 RoIs. The Monte-Carlo sample
# count stays at the small model's 64 (v1b's 128 is a quarter of basic's 512; the CPU model already uses 64).
#
#   python tools/train.py configs/epropnp_det_r18_synthetic_v1b.py
_base_ = ['./epropnp_det_r18_synthetic.py']

model = dict(
    bbox_head=dict(
        use_cls_emb=True,
        fcos_head=dict(offset_cls_agnostic=False),
        loss_pose=dict(loss_weight=0.5),
        loss_proj=dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5),
        loss_regr=dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=0.05, loss_weight=0.25)),
    train_cfg=dict(roi_shape=(14, 14)))
