# UperNet with SparX-Mamba-B on ADE20K, 160k iterations: upernet_sparx_t_160k.py with the B backbone.
_base_ = ['./upernet_sparx_t_160k.py']

model = dict(
    backbone=dict(
        arch='b', drop_path_rate=0.5, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_base_in1k.pth')),
    decode_head=dict(in_channels=[120, 240, 396, 636]),
    auxiliary_head=dict(in_channels=396))
default_hooks = dict(checkpoint=dict(interval=16000))
