# The model-size-independent EPro-PnP-Det v2 switches (docs/method.md §10.18), shared by configs/epropnp_det_r101_v2.py
# and configs/epropnp_det_r18_synthetic_v2.py. Only variables, no `model`: mmengine refuses two `_base_` files that both
# define `model`, so a v2 config lists this file next to its v1b parent and starts its `model` from a copy of
# `v2_model` (`model = _base_.v2_model.deepcopy()`), then sets what depends on the model size (2D box branch width =
# FCOS feat_channels, depth coder, Monte-Carlo sample count). A copy, because a config that assigned the base
# variable itself would edit `v2_model` in the merged config too.
#
# Contents (docs/method.md §10.18): continuous pixel convention without dense x2d maps (docs/method.md §10.1-10.5); FCOS
# 2D box branch with GIoU x0.5 and conv_ref_offset normal(0.01) init (docs/method.md §10.13, §3.9 v2); undetached x2d in
# the positional encoding (docs/method.md §10.7); xavier pred_fc (docs/method.md §10.10); Huber (delta 2) reprojection
# loss (docs/method.md §10.14); MVD coordinate regression (sigma 0.2 learnable, delta 2, x2.5; replaces v1b's SmoothL1
# whole, hence `_delete_`) (docs/method.md §10.11); dense depth branch with the MVD loss (sigma 0.3 learnable, delta
# 0.3, x1.5) (docs/method.md §10.12); undetached pose / regularisation inputs (docs/method.md §10.8); test: no MC
# scoring by default, GN fast mode (docs/method.md §10.16).
v2_model = dict(
    data_preprocessor=dict(with_dense_x2d=False, dense_x2d_convention='v2'),
    bbox_head=dict(
        pixel_convention='v2',
        fcos_head=dict(loss_bbox2d=dict(type='mmdet.GIoULoss', loss_weight=0.5), ref_offset_init_std=0.01),
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
    test_cfg=dict(mc_scoring_ratio=0.0, pnp_fast_mode=True))
