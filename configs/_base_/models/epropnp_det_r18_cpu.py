# Small CPU variant of EPro-PnP-Det for the synthetic quick-start: ResNet-18 (no DCN, random init unless the
# user overrides `model.backbone.init_cfg`), FPN P3-P6 with 64 channels, dense levels P3-P5 at stride 8, FCOS on
# P3-P6 with one stacked conv, 4 heads x 8 points (32 correspondences), 64 Monte-Carlo samples.
# Same head code and losses as the paper model (epropnp_det_r101.py); only sizes differ.
_base_ = ['./epropnp_det_r101.py']
model = dict(
    backbone=dict(_delete_=True, type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(in_channels=[128, 256, 512], out_channels=64, num_outs=4),
    bbox_head=dict(
        in_channels=64, strides=(8, 16, 32, 64), output_stride=8, dense_lvl_range=(0, 3), det_lvl_range=(0, 4),
        embed_dims=64, num_heads=4, num_points=8,
        fcos_head=dict(feat_channels=64, stacked_convs=1, regress_ranges=((-1, 48), (48, 96), (96, 192), (192, 1e8)),
                       cls_branch=(64, ), centerness_branch=(32, ), offset_branch=(64, ), emb_branch=(64, ),
                       dcn_on_last_conv=False, norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)),
        dense_branch=dict(lvl_feat_channels=(64, 32, 32), norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
                          positional_encoding=dict(type='EProPnPSinePositionalEncoding', num_feats=32)),
        sampler=dict(ffn_cfg=dict(feedforward_channels=256, num_fcs=2, ffn_drop=0.1)),
        point_subnet=dict(feedforward_channels=64),
        pnp=dict(mc_samples=64, num_iter=4, solver_cfg=dict(num_iter=10), cost_backend='auto')),
    train_cfg=dict(num_obj_samples_per_img=16),
    test_cfg=dict(max_per_img=100))
