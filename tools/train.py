"""Train with an mmdet (detection), mmseg (segmentation) or mmpretrain (classification) config.

The config's ``default_scope`` picks the package whose modules are registered; SparX-Mamba comes from
``sparx_mm``. Examples::

    python tools/train.py configs/demo/maskrcnn_sparx_t_demo.py --work-dir work_dirs/demo_det
    python tools/train.py CONFIG --resume                 # continue from work_dir's last checkpoint
    python tools/train.py CONFIG --resume work_dirs/x/epoch_4.pth
    python tools/train.py CONFIG --cfg-options train_dataloader.dataset.data_root=/data/coco/
    bash tools/dist_train.sh CONFIG 8 [ARGS]              # 8 GPUs, one node

Set-up mistakes (missing config or data, unknown arch, a checkpoint of another model) end with one
``error: ...`` line and exit code 2.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), 'misc'))
import tool_common as common  # noqa: E402 (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before torch loads)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Train a SparX model (mmdet / mmseg / mmpretrain config, picked by default_scope)')
    parser.add_argument('config', help='train config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints (default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='CHECKPOINT',
        help='resume from CHECKPOINT; without a path, from the last checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config settings, e.g. train_cfg.max_epochs=2 model.backbone.arch=s')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local_rank, newer launchers --local-rank (or LOCAL_RANK).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.amp and not common.has_accelerator():
        raise common.ToolError('--amp needs a GPU (mmengine\'s AmpOptimWrapper does not run on the CPU); '
                               'leave --amp out to train in float32')
    cfg, scope = common.load_config(args.config, args.cfg_options)
    common.set_launcher(cfg, args.launcher)
    common.set_work_dir(cfg, args.config, args.work_dir)

    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr') or 'base_batch_size' not in cfg.auto_scale_lr:
            raise common.ToolError(f'--auto-scale-lr: {args.config} has no auto_scale_lr.base_batch_size; '
                                   'add it with --cfg-options auto_scale_lr.base_batch_size=N')
        cfg.auto_scale_lr.enable = True

    checkpoint_to_check = None
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
        checkpoint_to_check = args.resume
    elif cfg.get('load_from'):
        checkpoint_to_check = cfg.load_from
    if checkpoint_to_check and '://' not in checkpoint_to_check and not osp.isfile(checkpoint_to_check):
        what = '--resume checkpoint' if args.resume else 'load_from checkpoint'
        raise common.ToolError(f'{what} not found: {checkpoint_to_check}')

    common.check_data_paths(cfg, ('train', 'val'))
    if args.amp:
        if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        common.cpu_optim_wrapper_fallback(cfg)

    common.register_scope(scope)

    if 'runner_type' not in cfg:
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    if checkpoint_to_check:
        # Resuming needs the whole model; load_from may leave out or reshape parts (fine-tuning).
        common.check_checkpoint_fits(runner.model, checkpoint_to_check,
                                     what='--resume checkpoint' if args.resume else 'load_from checkpoint',
                                     whole_model=bool(args.resume))
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(common.run_main(main))
