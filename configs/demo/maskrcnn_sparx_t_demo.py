# Demo: Mask R-CNN with the full SparX-Mamba-T backbone, trained from scratch on the bundled shapes COCO data
# (python tools/misc/make_demo_data.py writes it to data/demo). 128 x 128 images, 32 train / 12 val, four
# classes, 2-4 objects an image; one command trains and tests it on a CPU: bash tools/misc/run_demo.sh
# (docs/demo.md). Everything else (model, AdamW and its paramwise settings, CocoMetric bbox + segm) is the
# COCO config's.
_base_ = ['../detection/maskrcnn_sparx_t_1x.py']

data_root = 'data/demo/coco/'
classes = ('circle', 'triangle', 'square', 'star')
metainfo = dict(classes=classes, palette=[(220, 60, 60), (60, 180, 75), (60, 100, 220), (240, 200, 40)])
img_scale = (128, 128)

model = dict(
    # No pretrained weights: the demo trains from scratch, with nothing to download.
    backbone=dict(init_cfg=None, drop_path_rate=0.1),
    # The objects are 17 - 56 pixels wide: anchors of 16 - 256 pixels (scale 4 at strides 4 - 64).
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)), mask_head=dict(num_classes=len(classes))),
    # At most 4 objects an image: 64 sampled RoIs an image for training (COCO: 512) and 100 proposals /
    # 20 detections an image for testing (COCO: 1000 / 100) keep the RoI and mask heads cheap on a CPU.
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Small images load faster in the main process than worker processes start on a 2-core machine.
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# From scratch, few iterations: a higher lr than the COCO config's 1e-4 (for 16 images a batch), a short
# warm-up, gradient clipping.
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=max_epochs))
log_processor = dict(window_size=4)
# 4 images per GPU on one GPU; --auto-scale-lr scales the lr for other totals.
auto_scale_lr = dict(enable=False, base_batch_size=4)
randomness = dict(seed=0)
