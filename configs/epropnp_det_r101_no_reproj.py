# EPro-PnP-Det v1 "no_reproj" ablation (docs/method.md §8.1): the basic model (configs/epropnp_det_r101.py) without the
# auxiliary reprojection loss on gt RoIs. No RoI branch is built at all, so unlike the original (which keeps an unused
# regressor and needs find_unused_parameters=True) every parameter is used.
#
#   bash tools/dist_train.sh configs/epropnp_det_r101_no_reproj.py 4
_base_ = ['./epropnp_det_r101.py']

model = dict(bbox_head=dict(loss_proj=None))
