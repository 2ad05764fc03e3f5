# SparX-Swin-B on ImageNet-1K (paper Table 9: 88 M params, 16.2 G FLOPs, 83.9 top-1); see docs/variants.md.
# Recipe of SparX-Mamba-B: _base_/sparx_in1k.py with drop path 0.5 and evaluation crop_pct 0.95.
_base_ = ['./_base_/sparx_in1k.py']

model = dict(
    backbone=dict(type='SparXSwin', arch='b', drop_path_rate=0.5),
    head=dict(in_channels=616))

crop_pct = 0.95  # evaluation resize 224 / 0.95 = 235, as SparX-Mamba-B
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(224 / crop_pct), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
