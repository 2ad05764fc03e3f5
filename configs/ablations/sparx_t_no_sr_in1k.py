# SparX-Mamba-T ablation: DMCA ablation "w/o SR": no spatial reduction of queries and keys in any stage (sr_ratio 1, where,
# as in the official stage 4, the projected query stands in for x) (paper Table 8).
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
            sr_ratios=[1, 1, 1, 1])),
    head=dict(in_channels=512))
