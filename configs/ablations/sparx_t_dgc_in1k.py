# SparX-Mamba-T ablation: DGC (dense ganglion connections): the ganglion layers of T (S = 2 in stage 3), no window, each
# connected to the stage input and ALL preceding layers of its stage, normal and ganglion ('dense' rule,
# stages 2-4). Paper Table 5: 5.5 G, 28.8 M, 83.4 top-1.
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
            ganglion_windows=[None, None, None, None],
            ganglion_rules=['sparx', 'dense', 'dense', 'dense'])),
    head=dict(in_channels=512))
