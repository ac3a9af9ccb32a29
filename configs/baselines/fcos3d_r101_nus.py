# mmdet3d 1.4's own FCOS3D (ResNet-101 caffe + DCNv2, GN head, 1600x900 input) on nuScenes, unchanged: the step-time
# baseline that tools/benchmarks/step_overhead.py times beside EPro-PnP-Det's R101 config on the same GPU.
#
#   python tools/benchmarks/step_overhead.py configs/epropnp_det_r101.py configs/baselines/fcos3d_r101_nus.py \
#       --device cuda --batch-size 3 --data-root DIR --cfg-options model.backbone.init_cfg=None
#
# (init_cfg=None: no pretrained backbone can be downloaded on the build machines; the step time does not depend on it.)
_base_ = ['mmdet3d::fcos3d/fcos3d_r101-caffe-dcn_fpn_head-gn_8xb2-1x_nus-mono3d.py']
