# CPU counterpart of configs/epropnp_det_r101_v2.py on the synthetic data: configs/epropnp_det_r18_synthetic_v1b.py
# (the embedded default's sizes: ResNet-18, 64-channel FPN P3-P6, 4 heads x 8 points, 64 MC samples, 640x256 inputs,
# same iteration budget, plus the v1b switches) with every v2 switch of epropnp_det_r101_v2.py (docs/method.md §10.18):
# v2 pixel convention without dense maps, 2D box branch + GIoU, Huber reprojection loss, MVD coordinate regression,
# dense depth branch + MVD loss on the LiDAR points, undetached x2d / regularisation inputs, xavier pred_fc.
#
#   python tools/train.py configs/epropnp_det_r18_synthetic_v2.py
#   python tools/test.py configs/epropnp_det_r18_synthetic_v2.py work_dirs/epropnp_det_r18_synthetic_v2/iter_<N>.pth
_base_ = ['./epropnp_det_r18_synthetic_v1b.py', './_base_/models/epropnp_det_v2_switches.py']

# the shared v2 switches (configs/_base_/models/epropnp_det_v2_switches.py) plus the size-dependent settings: 2D box
# branch as wide as the 64-channel FCOS head, the depth branch's default coder, the small model's 64 MC samples
model = _base_.v2_model.deepcopy()
model.bbox_head.fcos_head.bbox_branch = (64, )
model.test_cfg.mc_scoring_samples = 64

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
