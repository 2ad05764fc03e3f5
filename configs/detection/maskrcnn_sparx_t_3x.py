# Mask R-CNN FPN with SparX-Mamba-T on COCO, 3x schedule with multi-scale training (36 epochs, lr
# steps at 27 and 33; DETR-style random resize of the short side to 480-800, or 400/500/600 + crop 384x600 + resize).
# The paper's recipe, which mmdet's Swin-T Mask R-CNN config already holds: AdamW lr 1e-4, betas 0.9/0.999,
# weight decay 0.05 (none on parameters named "norm": GroupNorm / LayerNorm), 1000-iteration linear warm-up
# from 0.001, 8 GPUs x 2 images; checkpoints and validation every epoch.
# The backbone starts from the official ImageNet checkpoint (--cfg-options
# model.backbone.init_cfg.checkpoint=PATH to point elsewhere) and has learnable DMCA scales, like the official
# Mask R-CNN checkpoints (which tools/model_converters/sparx_official_to_mm.py converts for this config).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['sparx_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='t',
        drop_path_rate=0.2,
        dmca_scale='learnable',
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sparx_mamba_tiny_in1k.pth')),
    neck=dict(in_channels=[96, 192, 320, 512]))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1, save_best='auto'))
