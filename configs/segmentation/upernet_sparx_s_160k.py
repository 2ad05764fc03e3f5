# UperNet with SparX-Mamba-S on ADE20K, 160k iterations: upernet_sparx_t_160k.py with the S backbone.
_base_ = ['./upernet_sparx_t_160k.py']

model = dict(
    backbone=dict(
        arch='s', drop_path_rate=0.4, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_small_in1k.pth')),
    decode_head=dict(in_channels=[96, 192, 328, 544]),
    auxiliary_head=dict(in_channels=328))
