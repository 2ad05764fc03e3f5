# Demo: SparX-Mamba-T (full size) classifying the bundled shape images, trained from scratch
# (python tools/misc/make_demo_data.py writes them to data/demo/cls as ImageNet-style class folders).
# 64 x 64 images, 96 train / 32 val, four classes; top-1 accuracy.
# Made small for a CPU: no Mixup / CutMix, RandAugment, random erasing or EMA; float32 (OptimWrapper, the
# ImageNet config's AmpOptimWrapper needs a GPU); 8 epochs.
_base_ = ['../classification/sparx_t_in1k.py']

data_root = 'data/demo/cls'
num_classes = 4  # CustomDataset takes the class names from the folders, in alphabetical order
img_size = 64

data_preprocessor = dict(num_classes=num_classes)
model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(num_classes=num_classes),
    train_cfg=None)  # no batch augments (Mixup / CutMix)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.6, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
# Small images load faster in the main process than worker processes start on a 2-core machine.
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 8
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs,
         T_max=max_epochs - 1, convert_to_iter_based=True),
]
custom_hooks = []  # no EMA
default_hooks = dict(logger=dict(interval=2), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(base_batch_size=16)
