# Mask R-CNN FPN with SparX-Swin-B on COCO, 3x schedule (paper Table 9: 518 G / 107 M); everything but
# the backbone as maskrcnn_sparx_b_3x.py (the SparX-Mamba-B recipe, drop path 0.45). The backbone starts
# from a SparX-Swin-B ImageNet checkpoint trained with configs/classification/sparx_swin_b_in1k.py.
_base_ = ['./maskrcnn_sparx_b_3x.py']

model = dict(
    backbone=dict(
        type='SparXSwin', arch='b', drop_path_rate=0.45,
        init_cfg=dict(checkpoint='checkpoints/sparx_swin_b_in1k.pth')),
    neck=dict(in_channels=[120, 240, 396, 616]))
