# Runtime shared by all configs: mmdet3d scope, logging, checkpoints, visualiser, distributed defaults.
default_scope = 'mmdet3d'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='Det3DVisualizationHook'))
# EProPnPRestoreTorchRNGHook: torch's RNG state in the checkpoints, so that --resume continues exactly
custom_hooks = [dict(type='EmptyCacheHook', after_epoch=True), dict(type='EProPnPRestoreTorchRNGHook')]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl with GPUs; tools/train.py switches to gloo (and CPU DDP) automatically when CUDA is unavailable.
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
