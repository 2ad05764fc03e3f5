# Mask R-CNN FPN with SparX-Swin-T on COCO, 1x schedule (paper Table 9: 270 G / 45 M); everything but
# the backbone as maskrcnn_sparx_t_1x.py (the SparX-Mamba-T recipe, learnable DMCA scales). The backbone
# starts from a SparX-Swin-T ImageNet checkpoint trained with configs/classification/sparx_swin_t_in1k.py.
_base_ = ['./maskrcnn_sparx_t_1x.py']

model = dict(
    backbone=dict(
        type='SparXSwin', arch='t', drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/sparx_swin_t_in1k.pth')),
    neck=dict(in_channels=[96, 192, 320, 576]))
