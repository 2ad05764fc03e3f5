# Demo: UperNet with the full SparX-Mamba-T backbone, trained from scratch on the bundled shapes data in
# ADE20K layout (python tools/misc/make_demo_data.py writes it to data/demo). 128 x 128 images, 32 train /
# 12 val, four classes. As in ADE20K, label 0 of the PNG maps is background / unlabelled and ignored
# (reduce_zero_label=True: 0 -> 255, 1..4 -> 0..3), so mIoU is over the four shape classes.
# Made small for a CPU: 128 x 128 crops, UPerHead with 128 channels (the ADE20K config: 512), 40 iterations.
_base_ = ['../segmentation/upernet_sparx_t_160k.py']

data_root = 'data/demo/seg'
classes = ('circle', 'triangle', 'square', 'star')
metainfo = dict(classes=classes, palette=[[220, 60, 60], [60, 180, 75], [60, 100, 220], [240, 200, 40]])
crop_size = (128, 128)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=None, drop_path_rate=0.1),  # from scratch: nothing to download
    # Most pixels are background (ignored): average the loss over the labelled ones only.
    decode_head=dict(channels=128, num_classes=len(classes), loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=dict(channels=64, num_classes=len(classes), loss_decode=dict(avg_non_ignore=True)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.png',
               seg_map_suffix='.png', reduce_zero_label=True)
# Small images load faster in the main process than worker processes start on a 2-core machine.
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='PackSegInputs')]])
]

max_iters = 40
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=8),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=8, end=max_iters, by_epoch=False),
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
