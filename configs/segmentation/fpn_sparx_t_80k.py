# Semantic FPN with SparX-Mamba-T on ADE20K, 512x512 crops, 80k iterations.
# The official code has no Semantic FPN config; the paper follows PVT / UniFormer. We take UniFormer's
# Semantic FPN recipe (its ADE20K fpn configs, which double PVT's lr for 8 GPUs): AdamW lr 2e-4, weight
# decay 1e-4, poly decay (power 0.9, min lr 0) over 80k iterations, 8 GPUs x 2 images = batch 16; FPN with
# 256 channels and mmseg's FPNHead (128 channels). Drop path as in the UperNet configs.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['sparx_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='t',
        drop_path_rate=0.2,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sparx_mamba_tiny_in1k.pth')),
    neck=dict(in_channels=[96, 192, 320, 512]))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=None)
max_iters = 80000
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=3, save_best='mIoU'))
