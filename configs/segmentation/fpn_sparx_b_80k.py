# Semantic FPN with SparX-Mamba-B on ADE20K, 80k iterations: fpn_sparx_t_80k.py with the B backbone.
_base_ = ['./fpn_sparx_t_80k.py']

model = dict(
    backbone=dict(
        arch='b', drop_path_rate=0.5, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_base_in1k.pth')),
    neck=dict(in_channels=[120, 240, 396, 636]))
