# EPro-PnP-Det schedule (docs/method.md §8.2): AdamW 1e-4, wd 1e-4, offsets lr x0.1, NaN-safe L2 clip at 5,
# x0.1 at epochs 10 and 11, no warm-up, 12 epochs, validation every epoch. Tuned for a total batch of 12.
optim_wrapper = dict(
    type='EProPnPOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'sampling_offsets': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, begin=0, end=12, milestones=[10, 11], gamma=0.1)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# `tools/train.py --auto-scale-lr` rescales lr by (GPUs x batch per GPU) / 12.
auto_scale_lr = dict(enable=False, base_batch_size=12)
