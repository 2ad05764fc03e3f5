"""Parameters and FLOPs of SparX-Mamba models, counted as the SparX paper counts them.

    # the ImageNet classifiers (SparXMamba + GroupNorm -> pool -> Linear(1000)) at 224x224
    python tools/analysis_tools/get_flops.py --arch t s b [--size 224]

    # any config of configs/ (mmdet / mmseg / mmpretrain); the input defaults to the paper's size:
    # 800x1280 for mmdet, 512x2048 for mmseg, 224x224 for mmpretrain
    python tools/analysis_tools/get_flops.py configs/detection/maskrcnn_sparx_t_1x.py
    python tools/analysis_tools/get_flops.py configs/segmentation/upernet_sparx_t_160k.py --shape 512 2048

One multiply-add = 1 flop; conv, linear, norms, adaptive pooling and upsampling are counted by mmengine's
FlopAnalyzer (fvcore's rules), elementwise ops are not, the selective scan is added analytically
(9*B*L*D*N + B*D*L, D = 4*d_inner) and the DMCA channel attention is left out of the headline (printed on a
line of its own). ``sparx_mm/utils/flops.py`` has the details; docs/flops.md the measured numbers.
Prints one table per model and, for several models, a summary.
"""
import argparse
import os
import sys
import time
import warnings

os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Params and FLOPs of SparX-Mamba models (the paper\'s counting rules).',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('configs', nargs='*', help='config files (mmdet / mmseg / mmpretrain)')
    parser.add_argument('--arch', nargs='+', default=[], choices=['t', 's', 'b'],
                        help='classification models to count')
    parser.add_argument('--size', type=int, nargs='+', default=[224],
                        help='input size of --arch models: S or H W (default 224)')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input of the configs\' models: S or H W (default: the paper\'s size per task)')
    parser.add_argument('--num-proposals', type=int, default=1000,
                        help='fixed proposals fed to a two-stage detector\'s RoI head (default 1000)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config settings, as in mmengine (e.g. model.backbone.arch=s)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s; 1 is often faster on a busy machine)')
    parser.add_argument('--brief', action='store_true', help='summary table only')
    parser.add_argument('--verbose', action='store_true', help='show mmengine\'s tracer / unsupported-op warnings')
    args = parser.parse_args(argv)
    if not args.configs and not args.arch:
        parser.error('give config files and/or --arch t s b')
    for name in ('size', 'shape'):
        value = getattr(args, name)
        if value is not None and len(value) not in (1, 2):
            parser.error(f'--{name} takes one or two integers')
        if value is not None:
            setattr(args, name, tuple(value) * (3 - len(value)))
    return args


def _cfg_options(pairs):
    from mmengine.config import DictAction
    options = {}
    if pairs:
        action = DictAction(option_strings=['--cfg-options'], dest='cfg_options')
        namespace = argparse.Namespace()
        action(None, namespace, pairs)
        options = namespace.cfg_options
    return options


def summary(reports):
    header = ('model', 'input', 'params', 'FLOPs', '+DMCA attn', 'paper', 'FLOPs vs paper')
    rows = []
    for r in reports:
        paper, diff = '-', '-'
        if r.paper is not None:
            paper = f'{r.paper[0]} M / {r.paper[1]} G'
            diff = f'{100 * (r.flops / 1e9 / r.paper[1] - 1):+.1f} %'
        rows.append((r.name, 'x'.join(str(s) for s in r.input_shape[-2:]), f'{r.params / 1e6:.2f} M',
                     f'{r.flops / 1e9:.3f} G', f'{r.flops_with_attention / 1e9:.3f} G', paper, diff))
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    fmt = lambda row: '| ' + ' | '.join(f'{c:<{w}}' for c, w in zip(row, widths)) + ' |'  # noqa: E731
    return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in rows])


def main(argv=None):
    args = parse_args(argv)
    if not args.verbose:
        warnings.filterwarnings('ignore')
    import torch

    from sparx_mm.utils.flops import count_classifier_flops, count_config_flops, format_report

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    reports = []
    jobs = [('arch', a) for a in args.arch] + [('config', c) for c in args.configs]
    for kind, item in jobs:
        start = time.time()
        if kind == 'arch':
            report = count_classifier_flops(item, args.size)
        else:
            report = count_config_flops(item, args.shape, num_proposals=args.num_proposals,
                                        cfg_options=_cfg_options(args.cfg_options))
        reports.append(report)
        if not args.brief:
            print(format_report(report))
            print(f'(counted in {time.time() - start:.1f} s)\n', flush=True)
    if args.brief or len(reports) > 1:
        print(summary(reports))


if __name__ == '__main__':
    main()
