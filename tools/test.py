"""Test (evaluate) a checkpoint with an mmdet (detection), mmseg (segmentation) or mmpretrain
(classification) config.

The config's ``default_scope`` picks the package whose modules are registered; SparX-Mamba comes from
``sparx_mm``. Examples::

    python tools/test.py configs/demo/maskrcnn_sparx_t_demo.py work_dirs/demo_det/epoch_1.pth
    python tools/test.py CONFIG CHECKPOINT --out results.pkl          # also dump the predictions
    python tools/test.py CONFIG CHECKPOINT --show-dir vis             # draw the predictions
    bash tools/dist_test.sh CONFIG CHECKPOINT 8 [ARGS]                # 8 GPUs, one node

Set-up mistakes (missing config, data or checkpoint, unknown arch, a checkpoint of another model) end with
one ``error: ...`` line and exit code 2.
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
        description='Test a SparX model (mmdet / mmseg / mmpretrain config, picked by default_scope)')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='folder for the logs and metrics (default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument('--out', metavar='FILE.pkl', help='dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw the predictions into this folder')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config settings, e.g. test_dataloader.dataset.data_root=/data/coco/')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation from the config's tta_model / tta_pipeline")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, scope, show_dir):
    """Draw every test prediction into show_dir, with the downstream package's visualization hook."""
    show_dir = osp.abspath(show_dir)
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise common.ToolError('--show-dir: the config has no default_hooks.visualization hook')
    if scope == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    elif scope == 'mmseg':
        hook.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = show_dir
    else:  # mmpretrain
        hook.update(enable=True, interval=1, out_dir=show_dir)


def enable_tta(cfg, scope):
    if scope == 'mmpretrain' and not cfg.get('tta_model'):
        # mmpretrain's own default: average the scores of the image and its horizontal flip.
        cfg.tta_model = dict(type='AverageClsScoreTTA')
        if not cfg.get('tta_pipeline'):
            pipeline = list(cfg.test_dataloader.dataset.pipeline)
            flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
            cfg.tta_pipeline = pipeline[:-1] + [dict(type='TestTimeAug', transforms=[flips, [pipeline[-1]]])]
    if not cfg.get('tta_model') or not cfg.get('tta_pipeline'):
        raise common.ToolError('--tta: the config has no tta_model / tta_pipeline')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def add_dump_metric(runner, scope, out):
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump  # masks as RLE, like mmdet's own test.py
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise common.ToolError(f'config file not found: {args.config}')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise common.ToolError(f'checkpoint not found: {args.checkpoint}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise common.ToolError(f'--out must name a .pkl or .pickle file, got {args.out}')
    cfg, scope = common.load_config(args.config, args.cfg_options)
    common.set_launcher(cfg, args.launcher)
    common.set_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, scope, args.show_dir)
    if args.tta:
        enable_tta(cfg, scope)
    common.check_data_paths(cfg, ('test', ))

    common.register_scope(scope)

    if 'runner_type' not in cfg:
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    common.check_checkpoint_fits(runner.model, args.checkpoint)
    if args.out:
        add_dump_metric(runner, scope, args.out)
    runner.test()
    return 0


if __name__ == '__main__':
    sys.exit(common.run_main(main))
