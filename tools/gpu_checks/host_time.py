"""Host time of SparX-Mamba steps and of one Triton launch (docs/benchmarks.md, "Host time").

    python tools/gpu_checks/host_time.py [--arch t] [--batch 1] [--iters 50] [--launch-ab] [--profile N]

For fp32 inference, fp16 inference and an fp16 training step (forward + backward, no optimizer): the minimum,
first quartile and median wall time of one step with the device synchronised before and after it. At batch 1
the GPU's share is negligible, so on CUDA this is the host's time a step (Python, dispatch, kernel launches);
the minimum is the figure least moved by the lent machines' noisy hosts. ``--launch-ab`` times every setting
again with the cached Triton launch switched off (``sparx_mm.ops.triton_launch.ENABLED = False``) in the same
process. On CUDA the script also times one launch of a small Triton kernel (GroupNorm's normalise kernel)
both ways. ``--profile N`` prints the N functions of most own time under cProfile for two training steps.
Runs on the CPU too (``--device cpu``: the reference paths, no Triton launches).
"""
import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'analysis_tools'))
from benchmark import Classifier, autocast_for, synchronize  # noqa: E402  (also puts the repo root on sys.path)
from sparx_mm.models import SparXMamba  # noqa: E402
from sparx_mm.ops import triton_launch  # noqa: E402

SETTINGS = (('infer', 'fp32'), ('infer', 'fp16'), ('train', 'fp16'))


def make_step(model, x, mode, dtype):
    """One inference pass (under inference_mode) or forward + backward, under autocast to ``dtype`` (a key of
    benchmark.DTYPES; fp32: none)."""
    def step():
        with autocast_for(x.device, dtype):
            if mode == 'infer':
                with torch.inference_mode():
                    model(x)
            else:
                model(x).float().sum().backward()
    return step


def step_times(step, device, warmup, iters):
    """(min, first quartile, median) seconds of ``step`` with the device synchronised around each call."""
    times = []
    for i in range(warmup + iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 4], times[len(times) // 2]


def launch_micro(device, launches=3000):
    """us a launch of GroupNorm's normalise kernel on a tiny map, the cached launch and Triton's own."""
    from sparx_mm.ops import triton_group_norm as gn
    x = torch.randn(8, 64, 14, 14, device=device, dtype=torch.float16)
    weight, bias = torch.randn(64, device=device), torch.randn(64, device=device)
    y, stats = torch.empty_like(x), torch.rand(2, 8, device=device)
    rows, cols = 8 * 64, 14 * 14
    grid, meta = gn._elementwise_launch(rows, cols)

    def one():
        triton_launch.launch(gn._normalize_kernel, grid, x, y, weight, bias, stats, rows, 64, cols,
                             HAS_WEIGHT=True, HAS_BIAS=True, **meta)
    result = {}
    for enabled in (True, False):
        triton_launch.ENABLED = enabled
        for _ in range(50):
            one()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(launches):
            one()
        result[enabled] = (time.perf_counter() - start) / launches * 1e6  # issue time: the GPU runs behind
        synchronize(device)
    triton_launch.ENABLED = True
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='t', choices=sorted(SparXMamba.arch_zoo))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--launch-ab', action='store_true',
                        help="also time every setting with Triton's own launch instead of the cached one")
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='print the N functions of most own time under cProfile for two training steps')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be 1 or more, got {args.iters}')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda needs a CUDA GPU; use --device cpu for the reference paths')
    model = Classifier(args.arch).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    print(f'# SparX-{args.arch.upper()} host time a step, batch {args.batch}, {args.size} x {args.size}, '
          f'{torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"}; ms over {args.iters} steps')
    print(f'{"mode":>5} {"dtype":>7} {"launch":>8} {"min":>8} {"p25":>8} {"median":>8}')
    launches = (True, False) if args.launch_ab else (True, )
    try:
        for mode, dtype in SETTINGS:
            model.train(mode == 'train')
            step = make_step(model, x, mode, dtype)
            for enabled in launches:
                triton_launch.ENABLED = enabled
                low, quartile, median = step_times(step, device, args.warmup, args.iters)
                print(f'{mode:>5} {dtype:>7} {"cached" if enabled else "triton":>8} '
                      f'{low * 1e3:8.2f} {quartile * 1e3:8.2f} {median * 1e3:8.2f}', flush=True)
    finally:
        triton_launch.ENABLED = True
    if device.type == 'cuda':
        micro = launch_micro(device)
        print(f'one Triton launch (GroupNorm normalise kernel): cached {micro[True]:.1f} us, '
              f"Triton's own {micro[False]:.1f} us")
    if args.profile:
        model.train()
        step = make_step(model, x, 'train', 'fp16')
        step()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(2):
            step()
        synchronize(device)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats('tottime').print_stats(args.profile)
        print(text.getvalue())


if __name__ == '__main__':
    main()
