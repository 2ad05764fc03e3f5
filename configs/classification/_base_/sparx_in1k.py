# The paper's ImageNet-1K recipe for SparX-Mamba (official scripts/train_sparx_mamba_*.sh + train.py):
# 8 GPUs x 256 images, 300 epochs + 10 cool-down epochs at the minimum lr, AdamW lr 4e-3, weight decay 0.05
# (none on biases, norms and 1-D parameters, like timm's filter), 20 warm-up epochs from 1e-6, cosine to 1e-5,
# gradient clipping 5, native AMP, EMA 0.9998, label smoothing 0.1, Mixup 0.8 / CutMix 1.0 (one of the two per
# batch), RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, seed 42.
# Left as mmpretrain does it: timm disables colour jitter when RandAugment is on, so none is configured; the
# official "random" train interpolation is bicubic here.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['sparx_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SparXMamba', arch='t', out_indices=(3, ), out_norm=None, drop_path_rate=0.2),
    neck=None,
    head=dict(
        type='SparXClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# Evaluation resize = 224 / crop_pct (timm); the variant configs set it.
crop_pct = 0.9
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(224 / crop_pct), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=256, num_workers=10)
val_dataloader = dict(batch_size=256, num_workers=10, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

base_lr = 4e-3
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=5.0),
)
warmup_epochs, cosine_epochs, cooldown_epochs = 20, 300, 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / base_lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=cosine_epochs,
         T_max=cosine_epochs - warmup_epochs, convert_to_iter_based=True),
    dict(type='ConstantLR', factor=1e-5 / base_lr, by_epoch=True, begin=cosine_epochs,
         end=cosine_epochs + cooldown_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=cosine_epochs + cooldown_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=2048)
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
randomness = dict(seed=42)
