"""Time the pure-PyTorch reference selective scan on the CPU.

Default sizes are those of a SparX-T stage-1 SS2D layer at 224x224 input:
batch 1, KD = 4 routes x 192 channels = 768, d_state N = 1, L = 56 * 56 = 3136.

Example::

    python tools/analysis_tools/bench_scan_cpu.py --threads 4 --backward
"""
import argparse
import statistics
import time

import torch

from sparx_mm.ops import selective_scan_reference


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--kd', type=int, default=768,
                        help='channels x routes (KD)')
    parser.add_argument('--groups', type=int, default=4,
                        help='number of B/C groups (K), must divide KD')
    parser.add_argument('--d-state', type=int, default=1)
    parser.add_argument('--length', type=int, default=3136)
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--backward', action='store_true',
                        help='also time forward + backward')
    return parser.parse_args()


def make_inputs(args, requires_grad):
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    b, kd, k, n, length = (args.batch, args.kd, args.groups, args.d_state,
                           args.length)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    tensors = dict(
        u=rand(b, kd, length),
        delta=rand(b, kd, length) * 0.5,
        A=-torch.rand(kd, n, generator=g).add(0.5),
        B=rand(b, k, n, length),
        C=rand(b, k, n, length),
        D=torch.ones(kd),
        delta_bias=torch.zeros(kd),
    )
    if requires_grad:
        for t in tensors.values():
            t.requires_grad_()
    return tensors


def time_ms(fn, warmup, iters):
    """(median, min) wall time of one call in ms; the minimum is the figure
    least disturbed by other processes on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f'batch={args.batch} KD={args.kd} K={args.groups} '
          f'N={args.d_state} L={args.length} dtype={args.dtype} '
          f'threads={torch.get_num_threads()}')

    inputs = make_inputs(args, requires_grad=False)
    with torch.no_grad():
        med, best = time_ms(lambda: selective_scan_reference(**inputs),
                            args.warmup, args.iters)
    print(f'forward:            median {med:8.2f} ms   min {best:8.2f} ms')

    if args.backward:
        inputs = make_inputs(args, requires_grad=True)

        def step():
            selective_scan_reference(**inputs).sum().backward()

        med, best = time_ms(step, args.warmup, args.iters)
        print(f'forward + backward: median {med:8.2f} ms   '
              f'min {best:8.2f} ms')


if __name__ == '__main__':
    main()
