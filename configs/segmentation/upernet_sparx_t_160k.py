# UperNet with SparX-Mamba-T on ADE20K, 512x512 crops, 160k iterations: the paper's recipe, which mmseg's
# Swin-T UperNet config already holds (AdamW lr 6e-5, betas 0.9/0.999, weight decay 0.01, none on "norm"
# parameters; 1500-iteration linear warm-up from 1e-6, then poly (power 1) to 0; 8 GPUs x 2 images; UPerHead
# with 512 channels and an FCN auxiliary head on stage 3, weight 0.4; SyncBN).
# Evaluation as the official SparX segmentation code: resize to (2048, 512) keeping the ratio, then to a
# multiple of 32. Validation every 16k iterations, checkpoints every 8k (keep 3, save the best mIoU).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['sparx_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='t',
        drop_path_rate=0.2,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sparx_mamba_tiny_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 320, 512]),
    auxiliary_head=dict(in_channels=320))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(val_interval=16000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=3, save_best='mIoU'))
