# SparX-Mamba-T ablation: Token mixer: vanilla Mamba's SSM (one causal direction = a single row-major scan route) instead of
# SS2D's four routes, without DPE. Paper Table 10: 4.8 G, 25 M, 82.9 top-1.
# Training recipe of SparX-Mamba-T (configs/classification/sparx_t_in1k.py); see docs/variants.md.
_base_ = ['../classification/sparx_t_in1k.py']

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,  # a full arch dict in place of the base's 'arch="t"'
            depths=[2, 2, 7, 2],
            dims=[96, 192, 320, 512],
            stem='v1',
            ganglion_strides=[1, 1, 2, 1],
            ganglion_starts=[None, 1, 0, 0],
            ganglion_windows=[None, None, 3, None],
            token_mixer='ssm',
            dpe=False)),
    head=dict(in_channels=512))
