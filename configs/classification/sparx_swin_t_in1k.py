# SparX-Swin-T on ImageNet-1K (paper Table 9: 26 M params, 4.7 G FLOPs, 82.6 top-1): SparX-Mamba-T's layout
# with Swin's shifted-window attention as the token mixer (docs/variants.md). The paper trains it with
# SparX-Mamba's recipe (_base_/sparx_in1k.py); no official checkpoint exists.
_base_ = ['./_base_/sparx_in1k.py']

model = dict(
    backbone=dict(type='SparXSwin', arch='t', drop_path_rate=0.2),
    head=dict(in_channels=576))
