# EPro-PnP-Det v1 "coord_regr" (docs/method.md §8.1; paper/README 0.430 NDS on nuScenes val): the basic model
# (configs/epropnp_det_r101.py) plus the auxiliary coordinate regression from LiDAR on gt RoIs (docs/method.md §5.6, v1
# form):
# per-RoI-cell mean of the LiDAR object coordinates as targets, SmoothL1(beta 0.05) on the distance / max(l, h, w),
# weighted by the head-softmax of the RoI attention, x0.25. The LiDAR object coordinates come from
# EProPnPLoadLidarObjectCoords (already in the train pipeline of configs/_base_/datasets/nus_mono3d_epropnp.py).
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_coord_regr.py 4
_base_ = ['./epropnp_det_r101.py']

model = dict(bbox_head=dict(loss_regr=dict(type='mmdet3d.EProPnPSmoothL1Loss', beta=0.05, loss_weight=0.25)))
