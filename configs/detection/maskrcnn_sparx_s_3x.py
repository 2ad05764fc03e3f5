# Mask R-CNN FPN with SparX-Mamba-S on COCO, 3x schedule: maskrcnn_sparx_t_3x.py with the S backbone.
_base_ = ['./maskrcnn_sparx_t_3x.py']

model = dict(
    backbone=dict(
        arch='s', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 328, 544]))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
