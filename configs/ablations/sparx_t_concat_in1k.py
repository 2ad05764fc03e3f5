# SparX-Mamba-T ablation: DMCA ablation "Concat": no DMCA; ganglion layers concatenate their input with the earlier features
# and fuse them with a ConvFFN (paper Table 6).
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
            aggregator='concat')),
    head=dict(in_channels=512))
