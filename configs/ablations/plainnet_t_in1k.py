# SparX-Mamba-T ablation: PlainNet: no ganglion layers at all (no cross-layer connections), stage-3/4 widths 384/576 to keep
# the cost. Paper Tables 5/7: 5.4 G, 27.4 M, 82.4 top-1.
# Training recipe of SparX-Mamba-T (configs/classification/sparx_t_in1k.py); see docs/variants.md.
_base_ = ['../classification/sparx_t_in1k.py']

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,  # a full arch dict in place of the base's 'arch="t"'
            depths=[2, 2, 7, 2],
            dims=[96, 192, 384, 576],
            stem='v1',
            ganglion_strides=[1, 1, 2, 1],
            ganglion_starts=[None, None, None, None],
            ganglion_windows=[None, None, 3, None])),
    head=dict(in_channels=576))
