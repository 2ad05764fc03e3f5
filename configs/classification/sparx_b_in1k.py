# SparX-Mamba-B on ImageNet-1K (paper recipe; see _base_/sparx_in1k.py). Official release:
# sparx_mamba_base_in1k.pth, convert it with tools/model_converters/sparx_official_to_mm.py.
# Inherits SparX-Mamba-S's config for its evaluation crop (crop_pct 0.95).
_base_ = ['./sparx_s_in1k.py']

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.5),
    head=dict(in_channels=636))
