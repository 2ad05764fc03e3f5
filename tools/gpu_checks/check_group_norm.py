"""GPU check and micro-benchmark of the one-group GroupNorm Triton kernels (run on a CUDA machine).

    python tools/gpu_checks/check_group_norm.py [--only check bench] [--batch 128]
        [--reduce-tiling TILE WARPS] [--elementwise-tiling TILE WARPS] [--min-reduce-programs N]

check: ``group_norm_one_group(impl='triton')`` against the reference (``F.group_norm`` in float32 on the same
inputs) on awkward shapes (maps that are not multiples of the blocks, a 1 x 1 map, (B, C) and (B, C, L)
inputs, B = 1 with large maps, whose rows are split between programs, a mean far from zero, no affine),
float32 / float16 / bfloat16 inputs, with and without fp16 / bf16 autocast: outputs, and the gradients of x,
weight and bias; ``group_norm_one_group_with_skip`` (x's skip-path gradient added in the dx kernel) against the
reference with x used twice; ``group_norm_one_group_with_recipe``'s recipe (the normalising launch alone on the
forward pass's statistics) against the output, bit for bit. Prints the largest relative errors, then PASSED or
FAILED (exit code 1).

bench: milliseconds (CUDA events, median) of the forward pass and of forward + backward, the Triton op
against ``nn.GroupNorm(1, C)``, at SparX-T's sizes for batch 128: float32 without autocast, and float16
inputs under fp16 autocast; then a float32 input under fp16 autocast. Under autocast nn.GroupNorm returns
float32, which the next convolution casts to float16: the 'torch+cast' column adds that cast. The fwd GB/s
column is the Triton forward pass's bytes (x read twice, y written once) over its time. GPU times are
taken with the calls queued back to back behind a sleep kernel, so host-side overhead (Python, launches,
custom-op dispatch) stays out of them; the last line gives that host time per call.
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import (group_norm_one_group, group_norm_one_group_reference,  # noqa: E402
                          group_norm_one_group_with_recipe, group_norm_one_group_with_skip)
from gpu_common import check_and_bench_parser, override_constants, rel_err, require_cuda, timed  # noqa: E402

# Largest relative error of a tensor (to its largest magnitude), by the dtype it comes in: both sides round the
# same float32 values, so float16 / bfloat16 differ by at most one rounding (2^-10, 2^-7 of the largest).
TOL = {torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# (shape, mean offset, affine)
CHECK_CASES = [((2, 5, 7, 9), 0.0, True), ((1, 3, 1, 1), 0.0, True), ((3, 8, 33), 0.0, True), ((2, 16), 0.0, True),
               ((4, 37, 13, 11), 0.0, True), ((2, 96, 56, 56), 0.0, True), ((3, 512, 7, 7), 0.0, True),
               ((1, 64, 200, 333), 0.0, True), ((1, 7, 70001), 0.0, True), ((2, 320, 14, 14), 100.0, True),
               ((2, 65, 9, 9), 0.0, False), ((2, 6, 5, 2), 0.0, True)]  # the last: 10 columns, a factor of 2
AUTOCAST = (None, torch.float16, torch.bfloat16)
# SparX-T's norm sizes (channels, H, W) at 224 x 224.
BENCH_SIZES = [(96, 56, 56), (192, 28, 28), (320, 14, 14), (512, 7, 7)]


def make_inputs(shape, offset, affine, dtype, device, seed):
    g = torch.Generator(device='cpu').manual_seed(seed)
    channels = shape[1]
    per_channel = torch.randn(channels, generator=g).view(channels, *[1] * (len(shape) - 2))
    x = (torch.randn(shape, generator=g) + per_channel + offset).to(device, dtype)
    params = [torch.randn(channels, generator=g).to(device, dtype) for _ in range(2)] if affine else [None, None]
    return x, params


def check_case(shape, offset, affine, dtype, autocast_dtype, device, seed):
    """{name: relative error} and {name: tolerance} of y, dx, dweight, dbias: Triton against the reference."""
    x, params = make_inputs(shape, offset, affine, dtype, device, seed)
    g = torch.Generator(device='cpu').manual_seed(seed + 1)
    upstream = torch.randn(shape, generator=g).to(device, autocast_dtype or dtype)
    results = []
    for impl in ('triton', 'reference'):
        leaves = [x.clone().requires_grad_()] + [None if p is None else p.clone().requires_grad_() for p in params]
        with torch.autocast('cuda', dtype=autocast_dtype or torch.float16, enabled=autocast_dtype is not None):
            y = group_norm_one_group(*leaves, impl=impl)
        y.backward(upstream)
        results.append([('y', y.detach())] + [(name, t.grad) for name, t in zip(('dx', 'dweight', 'dbias'), leaves)
                                              if t is not None])
    assert torch.equal(results[1][0][1], group_norm_one_group_reference(x, *params, 1e-5, results[1][0][1].dtype))
    errors = {name: rel_err(ours, ref) for (name, ours), (_, ref) in zip(*results)}
    tols = {name: TOL[ours.dtype] for name, ours in results[0]}
    return errors, tols


def check(device):
    ok = True
    worst = {}
    for case_index, (shape, offset, affine) in enumerate(CHECK_CASES):
        for dtype in TOL:
            for autocast_dtype in AUTOCAST:
                errors, tols = check_case(shape, offset, affine, dtype, autocast_dtype, device, seed=case_index)
                key = (str(dtype).split('.')[-1], 'none' if autocast_dtype is None else
                       str(autocast_dtype).split('.')[-1])
                for name, err in errors.items():
                    worst[key + (name,)] = max(worst.get(key + (name,), 0.0), err)
                    if not err <= tols[name]:
                        ok = False
                        print(f'FAIL {shape} offset {offset:g} affine {affine} x {key[0]} autocast {key[1]} '
                              f'{name}: rel err {err:.2e} > {tols[name]:.0e}')
    print('largest relative errors, Triton vs reference (x dtype / autocast dtype):')
    for key in sorted({k[:2] for k in worst}):
        row = ', '.join(f'{name} {worst[key + (name,)]:.1e}' for name in ('y', 'dx', 'dweight', 'dbias'))
        print(f'  {key[0]:>8} / {key[1]:<8} {row}')
    return ok


def check_with_skip(device):
    """group_norm_one_group_with_skip (the skip path's gradient of x added in the norm's dx kernel) against the
    reference norm with x used twice, at SparX-T's stage-1 and stage-3 maps and an awkward one: dx, dweight, dbias
    (float32 exact; float16 x under fp16 autocast, as training runs the blocks)."""
    ok, worst = True, {}
    for shape in ((2, 96, 56, 56), (3, 320, 14, 14), (4, 37, 13, 11)):
        for dtype, autocast_dtype in ((torch.float32, None), (torch.float16, torch.float16)):
            x, params = make_inputs(shape, 0.0, True, dtype, device, seed=shape[1])
            g = torch.Generator(device='cpu').manual_seed(shape[1] + 1)
            up_y, up_skip = (torch.randn(shape, generator=g).to(device, autocast_dtype or dtype) for _ in range(2))
            grads = []
            for impl in ('triton', 'reference'):
                leaves = [t.clone().requires_grad_() for t in [x] + params]
                with torch.autocast('cuda', dtype=autocast_dtype or torch.float16, enabled=autocast_dtype is not None):
                    if impl == 'triton':
                        y, skip = group_norm_one_group_with_skip(*leaves, impl='triton')
                    else:
                        y, skip = group_norm_one_group(*leaves, impl='reference'), leaves[0]
                torch.autograd.backward([y, skip], [up_y, up_skip.to(skip.dtype)])
                grads.append([t.grad for t in leaves])
            key = str(dtype).split('.')[-1]
            for name, ours, ref in zip(('dx', 'dweight', 'dbias'), *grads):
                err = rel_err(ours, ref)
                worst[key, name] = max(worst.get((key, name), 0.0), err)
                if not err <= TOL[ours.dtype]:
                    ok = False
                    print(f'FAIL with skip {shape} {key} {name}: rel err {err:.2e} > {TOL[ours.dtype]:.0e}')
    print('with the skip path\'s gradient, largest relative errors: ' +
          ', '.join(f'{dtype} {name} {err:.1e}' for (dtype, name), err in worst.items()))
    return ok


def check_recipe(device):
    """group_norm_one_group_with_recipe at SparX-B's SS2D out_norm maps (float32 scan outputs, batch 4) and an
    awkward one, without and under fp16 autocast: the output as group_norm_one_group's and the recipe's
    recomputation (run outside the autocast, as a backward pass would) the same bits in the same dtype."""
    ok = True
    for shape in ((4, 240, 56, 56), (4, 792, 14, 14), (4, 1272, 7, 7), (3, 37, 13, 11)):
        x, params = make_inputs(shape, 0.0, True, torch.float32, device, seed=shape[1])
        for autocast_dtype in (None, torch.float16):
            with torch.autocast('cuda', dtype=torch.float16, enabled=autocast_dtype is not None):
                y, fn, args = group_norm_one_group_with_recipe(x, *params, impl='triton')
                plain = group_norm_one_group(x, *params, impl='triton')
            again = fn(*args)
            if not (torch.equal(y, plain) and torch.equal(again, y) and again.dtype == plain.dtype):
                ok = False
                print(f'FAIL recipe {shape} autocast {autocast_dtype}: the recomputed output differs')
    print(f'the recipe\'s recomputation: {"bit for bit" if ok else "DIFFERENT"} (4 shapes, with / without autocast)')
    return ok


def bench_row(batch, channels, h, w, dtype, autocast_dtype, device):
    g = torch.Generator(device='cpu').manual_seed(0)
    x = torch.randn(batch, channels, h, w, generator=g).to(device, dtype).requires_grad_()
    torch_norm = nn.GroupNorm(1, channels).to(device)
    ours = lambda: group_norm_one_group(x, torch_norm.weight, torch_norm.bias, impl='triton')  # noqa: E731
    theirs = lambda: torch_norm(x)  # noqa: E731
    cast_dtype = autocast_dtype or dtype
    theirs_cast = lambda: torch_norm(x).to(cast_dtype)  # noqa: E731
    upstream = torch.randn(x.shape, generator=g).to(device, cast_dtype)

    def forward_backward(fn):
        return lambda: torch.autograd.grad(fn(), [x, torch_norm.weight, torch_norm.bias], upstream)

    with torch.autocast('cuda', dtype=autocast_dtype or torch.float16, enabled=autocast_dtype is not None):
        with torch.no_grad():
            fwd = [timed(theirs), timed(theirs_cast), timed(ours)]
        fwd_bwd = [timed(forward_backward(theirs_cast)), timed(forward_backward(ours))]
    moved = x.numel() * (2 * x.element_size() + torch.empty((), dtype=cast_dtype).element_size())
    return fwd, fwd_bwd, moved / fwd[2][0] / 1e6


def bench(batch, device):
    from sparx_mm.ops import triton_group_norm as tgn
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; reduce tiling {tgn.REDUCE_TILING}, elementwise '
          f'tiling {tgn.ELEMENTWISE_TILING}, min reduce programs {tgn.MIN_REDUCE_PROGRAMS}; GPU ms (median)')
    print(f'{"C x H x W":>12} {"x":>5} {"autocast":>8} | {"fwd torch":>9} {"torch+cast":>10} {"triton":>7} '
          f'{"speedup":>7} {"GB/s":>5} | {"f+b torch":>9} {"triton":>7} {"speedup":>7}')
    rows = [(size, dtype, autocast) for size in BENCH_SIZES
            for dtype, autocast in ((torch.float32, None), (torch.float16, torch.float16))]
    rows.append(((192, 56, 56), torch.float32, torch.float16))
    name = lambda d: 'off' if d is None else str(d).split('.')[-1].replace('float', 'fp')  # noqa: E731
    for (channels, h, w), dtype, autocast_dtype in rows:
        fwd, fwd_bwd, gbs = bench_row(batch, channels, h, w, dtype, autocast_dtype, device)
        (torch_fwd, _), (cast_fwd, _), (ours_fwd, _) = fwd
        (torch_fb, _), (ours_fb, _) = fwd_bwd
        print(f'{f"{channels}x{h}x{w}":>12} {name(dtype):>5} {name(autocast_dtype):>8} | {torch_fwd:9.3f} '
              f'{cast_fwd:10.3f} {ours_fwd:7.3f} {cast_fwd / ours_fwd:6.2f}x {gbs:5.0f} | {torch_fb:9.3f} '
              f'{ours_fb:7.3f} {torch_fb / ours_fb:6.2f}x', flush=True)
    # Host time does not depend on the size: the small batch-1 map shows it with the GPU idle.
    fwd, fwd_bwd, _ = bench_row(1, 64, 8, 8, torch.float16, torch.float16, device)
    print(f'host time per call (us): forward torch+cast {fwd[1][1] * 1e3:.0f}, triton {fwd[2][1] * 1e3:.0f}; '
          f'forward + backward torch+cast {fwd_bwd[0][1] * 1e3:.0f}, triton {fwd_bwd[1][1] * 1e3:.0f}')


def main():
    parser = check_and_bench_parser(__doc__)
    parser.add_argument('--reduce-tiling', type=int, nargs=2, metavar=('TILE', 'WARPS'), default=None,
                        help='elements per tile and warps of the two reduction kernels instead of the defaults')
    parser.add_argument('--elementwise-tiling', type=int, nargs=2, metavar=('TILE', 'WARPS'), default=None,
                        help='the same for the two elementwise kernels')
    parser.add_argument('--min-reduce-programs', type=int, default=None,
                        help='programs the reduction kernels split rows for, instead of the default')
    args = parser.parse_args()
    require_cuda('check_group_norm.py')
    from sparx_mm.ops import triton_group_norm as tgn
    override_constants(tgn, args, dict(reduce_tiling='REDUCE_TILING', elementwise_tiling='ELEMENTWISE_TILING',
                                       min_reduce_programs='MIN_REDUCE_PROGRAMS'))
    device = torch.device('cuda')
    print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)
    ok = True
    if 'check' in args.only:
        ok = check(device)
        ok = check_with_skip(device) and ok
        ok = check_recipe(device) and ok
        print('PASSED' if ok else 'FAILED')  # the verdict of all three checks
    if 'bench' in args.only:
        bench(args.batch, device)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
