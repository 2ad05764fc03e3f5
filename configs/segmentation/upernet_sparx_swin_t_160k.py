# UperNet with SparX-Swin-T on ADE20K, 160k iterations (paper Table 9: 948 G / 57 M, 45.5 mIoU); everything
# but the backbone as upernet_sparx_t_160k.py. The backbone starts from a SparX-Swin-T ImageNet checkpoint
# trained with configs/classification/sparx_swin_t_in1k.py.
_base_ = ['./upernet_sparx_t_160k.py']

model = dict(
    backbone=dict(
        type='SparXSwin', arch='t', drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/sparx_swin_t_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 320, 576]),
    auxiliary_head=dict(in_channels=320))
