# UperNet with SparX-Swin-B on ADE20K, 160k iterations (paper Table 9: 1201 G / 118 M, 48.6 mIoU); everything
# but the backbone as upernet_sparx_b_160k.py (drop path 0.5). The backbone starts from a SparX-Swin-B
# ImageNet checkpoint trained with configs/classification/sparx_swin_b_in1k.py.
_base_ = ['./upernet_sparx_b_160k.py']

model = dict(
    backbone=dict(
        type='SparXSwin', arch='b', drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/sparx_swin_b_in1k.pth')),
    decode_head=dict(in_channels=[120, 240, 396, 616]),
    auxiliary_head=dict(in_channels=396))
