# Minimal runner config for the foundation tests (tools/train.py and tools/dist_train.sh on CPU).
custom_imports = dict(imports=['tests.helpers.toy_dist'], allow_failed_imports=False)
model = dict(type='ToyDistProbeModel')
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(type='ToyDistProbeDataset'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=True, max_epochs=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='ToyDistProbeHook')]
env_cfg = dict(dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
