"""What autograd keeps for the backward pass after one training forward pass, by the module that saved it.

    python tools/analysis_tools/saved_memory.py --arch t --batch 128 --dtype fp16 [--backbone-options JSON]

Counts each saved storage once (by the innermost module running when it was first saved; block indices folded
into '*'), then prints the total, the split by dtype and the largest module patterns. The classification model
of benchmark.py (backbone + head); fp16 / bf16 run under autocast. Where the memory of a training step goes,
and what ``ffn_recompute`` / ``norm_recompute`` save (docs/benchmarks.md).
"""
import argparse
import collections
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import DTYPES, Classifier, add_backbone_options, parse_backbone_options  # noqa: E402  (also puts the repo root on sys.path)


def saved_by_module(model: torch.nn.Module, x: torch.Tensor, autocast_dtype=None) -> dict:
    """-> {(module pattern, dtype): bytes} of the storages autograd keeps after ``model(x)`` (grad on)."""
    running = []
    hooks = []
    names = {module: re.sub(r'\.\d+', '.*', name) or '(model)' for name, module in model.named_modules()}

    def enter(module, _inputs):
        running.append(module)

    def leave(_module, _inputs, _output):
        running.pop()

    for module in names:
        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    seen = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            key = (t.device, t.untyped_storage().data_ptr())
            if key not in seen:
                seen[key] = (names.get(running[-1], '?') if running else '(outside)', t.dtype,
                             t.untyped_storage().nbytes())
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    totals = collections.Counter()
    for name, dtype, nbytes in seen.values():
        totals[(name, dtype)] += nbytes
    return dict(totals)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='t')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', default='fp16', choices=sorted(DTYPES))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--rows', type=int, default=20, help='module patterns shown')
    add_backbone_options(parser)
    args = parser.parse_args(argv)
    options = parse_backbone_options(parser, args.backbone_options, args.arch)
    model = Classifier(args.arch, **options).to(args.device).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    totals = saved_by_module(model, x, DTYPES[args.dtype])
    gib = 2 ** 30
    print(f'# saved for backward: SparX-{args.arch.upper()} {args.dtype} training forward, batch {args.batch}, '
          f'{args.size} x {args.size}' + (f', backbone options {options}' if options else ''))
    print(f'total {sum(totals.values()) / gib:.3f} GB')
    by_dtype = collections.Counter()
    for (_, dtype), nbytes in totals.items():
        by_dtype[dtype] += nbytes
    for dtype, nbytes in by_dtype.most_common():
        print(f'{nbytes / gib:8.3f} GB  {dtype}')
    for (name, dtype), nbytes in sorted(totals.items(), key=lambda kv: -kv[1])[:args.rows]:
        print(f'{nbytes / gib:8.3f} GB  {name}  {dtype}')


if __name__ == '__main__':
    main()
