# Semantic FPN with SparX-Mamba-S on ADE20K, 80k iterations: fpn_sparx_t_80k.py with the S backbone.
_base_ = ['./fpn_sparx_t_80k.py']

model = dict(
    backbone=dict(
        arch='s', drop_path_rate=0.4, init_cfg=dict(checkpoint='checkpoints/sparx_mamba_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 328, 544]))
