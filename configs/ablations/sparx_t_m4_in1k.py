# SparX-Mamba-T ablation: Window M = 4 in stage 3.
# Paper Table 7: 5.5 G, 27.5 M. With S = 2 stage 3 has only four ganglion layers, so no layer has more
# than three earlier ones and M = 4 builds the same network as M = 3 (27.05 M); see docs/variants.md.
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
            ganglion_windows=[None, None, 4, None])),
    head=dict(in_channels=512))
