# Mask R-CNN FPN with SparX-Mamba-B on COCO, 3x schedule: maskrcnn_sparx_t_3x.py with the B backbone.
_base_ = ['./maskrcnn_sparx_t_3x.py']

model = dict(
    backbone=dict(
        arch='b', drop_path_rate=0.45, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_base_in1k.pth')),
    neck=dict(in_channels=[120, 240, 396, 636]))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
