"""Top CUDA kernels of one SparX-Mamba forward (or training step) under torch.profiler.

    python tools/gpu_checks/profile_model.py --arch t --batch 128 --dtype fp32 [--train]
"""
import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

_TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_TOOLS, 'analysis_tools'))
from benchmark import DTYPES, Classifier  # noqa: E402  (also puts the repo root on sys.path)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--arch', default='t')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES))
    parser.add_argument('--train', action='store_true')
    parser.add_argument('--rows', type=int, default=25)
    parser.add_argument('--name-width', type=int, default=70, help='characters of each kernel name shown')
    args = parser.parse_args()
    model = Classifier(args.arch).cuda().train(args.train)
    x = torch.randn(args.batch, 3, args.size, args.size, device='cuda')
    autocast = torch.autocast('cuda', dtype=DTYPES[args.dtype], enabled=DTYPES[args.dtype] is not None)

    def step():
        with autocast, torch.set_grad_enabled(args.train):
            out = model(x)
        if args.train:
            out.float().sum().backward()

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=args.rows,
                                    max_name_column_width=args.name_width))


if __name__ == '__main__':
    main()
