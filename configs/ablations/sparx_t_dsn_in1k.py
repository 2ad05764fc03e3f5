# SparX-Mamba-T ablation: DSN (DenseNet-style): S = 1 and no window in every stage, so every layer is a ganglion layer that
# sees all earlier layers of its stage (the first one the stage input). Paper Table 5: 6.0 G, 30.9 M, 83.4.
# Training recipe of SparX-Mamba-T (configs/classification/sparx_t_in1k.py); see docs/variants.md.
_base_ = ['../classification/sparx_t_in1k.py']

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,  # a full arch dict in place of the base's 'arch="t"'
            depths=[2, 2, 7, 2],
            dims=[96, 192, 320, 512],
            stem='v1',
            ganglion_strides=[1, 1, 1, 1],
            ganglion_starts=[0, 0, 0, 0],
            ganglion_windows=[None, None, None, None])),
    head=dict(in_channels=512))
