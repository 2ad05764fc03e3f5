# SparX-Mamba-T on ImageNet-1K (paper recipe; see _base_/sparx_in1k.py). Official release:
# sparx_mamba_tiny_in1k.pth, convert it with tools/model_converters/sparx_official_to_mm.py.
_base_ = ['./_base_/sparx_in1k.py']

model = dict(
    backbone=dict(arch='t', drop_path_rate=0.2),
    head=dict(in_channels=512))
