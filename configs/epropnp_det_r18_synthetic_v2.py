# CPU counterpart of configs/epropnp_det_r101_v2.py on the synthetic data: configs/epropnp_det_r18_synthetic_v1b.py
# (the embedded default's sizes: ResNet-18, 64-channel FPN P3-P6, 4 heads x 8 points, 64 MC samples, 640x256 inputs,
# same iteration budget, plus the v1b switches) with every v2 switch of epropnp_det_r101_v2.py (spec §10.18):
# v2 pixel convention without dense maps, 2D box branch + GIoU, Huber reprojection loss, MVD coordinate regression,
# dense depth branch + MVD loss on the LiDAR points, undetached x2d / regularisation inputs, xavier pred_fc.
#
#   python tools/train.py configs/epropnp_det_r18_synthetic_v2.py
#   python tools/test.py configs/epropnp_det_r18_synthetic_v2.py work_dirs/epropnp_det_r18_synthetic_v2/iter_<N>.pth
_base_ = ['./epropnp_det_r18_synthetic_v1b.py']

model = dict(
    data_preprocessor=dict(with_dense_x2d=False, dense_x2d_convention='v2'),
    bbox_head=dict(
        pixel_convention='v2',
        fcos_head=dict(bbox_branch=(64, ), loss_bbox2d=dict(type='mmdet.GIoULoss', loss_weight=0.5),
                       ref_offset_init_std=0.01),
        point_subnet=dict(detach_pos_x2d=False),
        object_branches=dict(xavier_trunk=True),
        loss_proj=dict(type='MVDGaussianMixtureNLLLoss', adaptive_weight=True, delta=2.0, loss_weight=0.5),
        loss_regr=dict(_delete_=True, type='MVDGaussianMixtureNLLLoss', adaptive_weight=True, sigma=0.2,
                       freeze_sigma=False, delta=2.0, loss_weight=2.5),
        depth_branch=dict(
            num_layers=2, num_modes=4,
            loss_depth=dict(type='MVDGaussianMixtureNLLLoss', adaptive_weight=True, sigma=0.3, freeze_sigma=False,
                            delta=0.3, loss_weight=1.5)),
        detach_pose_x2d=False, detach_reg_inputs=False),
    test_cfg=dict(mc_scoring_ratio=0.0, mc_scoring_samples=64, pnp_fast_mode=True))

train_pipeline = [
    dict(type='EProPnPLoadImage'),
    dict(type='EProPnPLoadAnnotations'),
    dict(type='EProPnPLoadLidarObjectCoords', convention='v2', with_cam_pts=True),
    dict(type='EProPnPResize', scale=(640, 360), keep_ratio=True),
    dict(type='EProPnPRandomFlip', prob=0.5),
    dict(type='EProPnPCrop', crop_box=(0, 104, 640, 360), trunc_ignore_thres=0.8),
    dict(type='EProPnPPack3DDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
