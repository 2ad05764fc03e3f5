# SparX-Mamba-S on ImageNet-1K (paper recipe; see _base_/sparx_in1k.py). Official release:
# sparx_mamba_small_in1k.pth, convert it with tools/model_converters/sparx_official_to_mm.py.
_base_ = ['./_base_/sparx_in1k.py']

model = dict(
    backbone=dict(arch='s', drop_path_rate=0.3),
    head=dict(in_channels=544))

crop_pct = 0.95  # evaluation resize 224 / 0.95 = 235 (timm default_cfg of S and B)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(224 / crop_pct), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
