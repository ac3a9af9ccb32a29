# EPro-PnP-Det v1 "basic" model (docs/method.md §3, §8.1 column "basic"): ResNet-101-DCN, FPN P2-P7, dense levels P2-P5
# at stride 4, FCOS levels P3-P7, 8 heads x 32 points, 512 Monte-Carlo samples, pose-loss weight 0.15, auxiliary
# MVD reprojection loss on 28x28 gt RoIs (x0.5).
# Pixel convention v1 (K projects pixel centres to integers), as nuScenes and the original v1 code.
# Needs `custom_imports = dict(imports=['epropnp_det.models', 'epropnp_det.datasets', 'epropnp_det.engine'])`.
model = dict(
    type='EProPnPDet',
    data_preprocessor=dict(type='EProPnPDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='mmdet.ResNet', depth=101, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, style='pytorch',
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False), stage_with_dcn=(False, False, True, True),
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')),
    neck=dict(
        type='mmdet.FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=0,
        add_extra_convs='on_output', num_outs=6, relu_before_extra_convs=True),
    bbox_head=dict(
        type='EProPnPDeformPnPHead',
        num_classes=10, in_channels=256, strides=(4, 8, 16, 32, 64, 128), output_stride=4,
        dense_lvl_range=(0, 4), det_lvl_range=(1, 6), embed_dims=256, num_heads=8, num_points=32,
        pixel_convention='v1', use_cls_emb=False,
        fcos_head=dict(
            feat_channels=256, stacked_convs=2,
            regress_ranges=((-1, 48), (48, 96), (96, 192), (192, 384), (384, 1e8)),
            cls_branch=(256, ), centerness_branch=(64, ), offset_branch=(256, ), emb_branch=(256, ),
            centerness_alpha=2.5, center_sampling=True, center_sample_radius=1.5, offset_cls_agnostic=True,
            dcn_on_last_conv=True, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
        dense_branch=dict(lvl_feat_channels=(256, 128, 128),
                          positional_encoding=dict(type='EProPnPSinePositionalEncoding', num_feats=128)),
        sampler=dict(ffn_cfg=dict(feedforward_channels=1024, num_fcs=2, ffn_drop=0.1)),
        point_subnet=dict(feedforward_channels=256, ffn_drop=0.1, detach_pos_x2d=True),
        object_branches=dict(dim_cls_agnostic=False, pred_velo=True, pred_attr=True, num_attrs=9),
        center_target=dict(faces_per_pixel=16, min_box_size=4.0),
        object_sampler=dict(uniform_mix_ratio=0.5),
        pnp=dict(mc_samples=512, num_iter=4, normalize=True, solver_cfg=dict(num_iter=10), cost_backend='auto'),
        loss_pose=dict(loss_weight=0.15, momentum=0.01),
        loss_dim=dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=1.0),
        loss_score=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_reg_pos=dict(loss_weight=0.05, beta=1.0),
        loss_reg_orient=dict(loss_weight=0.05),
        loss_velo=dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=1.0, loss_weight=0.05),
        loss_attr=dict(type='mmdet.CrossEntropyLoss', loss_weight=0.5),
        # auxiliary reprojection loss on gt RoIs (docs/method.md §5.6; the basic model has it, `no_reproj` drops it)
        # (loss_regr, the LiDAR coordinate regression, is off: head default None; coord_regr / v1b configs set it)
        loss_proj=dict(type='MVDGaussianMixtureNLLLoss', loss_weight=0.5, adaptive_weight=True, momentum=0.1)),
    train_cfg=dict(num_obj_samples_per_img=48, roi_shape=(28, 28)),
    test_cfg=dict(score_thr=0.04, max_per_img=256, nms_iou2d=0.8, nms_ioubev_thr=0.25, pnp_num_iter=5,
                  min_bbox_size=4.0, mc_samples=0))
