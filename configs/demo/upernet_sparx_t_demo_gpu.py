# The segmentation demo trained long enough to learn, for one GPU: 8x the training scenes (256; the 32 of the
# CPU demo are memorised by a from-scratch UperNet long before it generalises), 8 crops a batch, 2000
# iterations with validation every 500. Make its data first:
#   python tools/misc/make_demo_data.py --out data/demo_x8 --train-scale 8
_base_ = ['./upernet_sparx_t_demo.py']

data_root = 'data/demo_x8/seg'
train_dataloader = dict(batch_size=8, num_workers=4, persistent_workers=True, dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=2, persistent_workers=True, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_iters = 2000
train_cfg = dict(max_iters=max_iters, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=100, end=max_iters, by_epoch=False),
]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500, max_keep_ckpts=1))
