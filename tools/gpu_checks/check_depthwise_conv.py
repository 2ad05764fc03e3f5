"""GPU check, micro-benchmark and tiling sweep of the fused depthwise conv + bias + residual + activation (run on
a CUDA GPU).

    python tools/gpu_checks/check_depthwise_conv.py [--only check bench sweep] [--batch 128]
        [--cuda-graphs] [--modes MODE ...] [--fwd-tiling VALUES WARPS] [--bwd-tiling VALUES WARPS]
        [--min-programs FWD GRAD] [--max-block-w N] [--jobs N]

check: ``depthwise_conv2d_act(impl='triton')`` against the reference in float64 on the same (rounded) inputs,
forward and the gradients of x, weight and bias, on awkward shapes (H != W, widths that are not powers of two
or wider than a column block, k = 1 to 9, k larger than the map, a 1 x 1 map; with --large a float16 input
of more than 2**31 elements) for float32 / float16 / bfloat16 tensors and for float32 tensors under float16 /
bfloat16 autocast. Prints the largest relative errors (max |error| / max |reference|) and PASSED / FAILED
(exit code 1 on failure). ``--jobs N`` checks each dtype mode in a process of its own, N at once (the kernels
compile in parallel).

bench: median GPU milliseconds (gpu_common.timed: the calls queued behind a sleep kernel, so Python and launch
overhead stay out) of the forward pass and of forward + backward, the Triton op against the torch composition
(nn.Conv2d depthwise + add + activation), at SparX-T's sizes with batch 128, for float16 tensors under float16
autocast (float32 parameters) and for float32; plus the Triton forward's effective bandwidth (x read once, y
written once). --cuda-graphs times CUDA-graph replays of each step instead. The tiling options override the
kernels' module constants.

sweep: the forward kernel's and the gradient kernel's GPU milliseconds alone (no dx), at the same sizes, for
float16 and float32 tensors, for each of a set of (values, warps) tilings and the default: what FWD_TILING and
BWD_TILING were chosen by.
"""
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import depthwise_conv2d_act, depthwise_conv2d_act_reference  # noqa: E402
from sparx_mm.ops.triton_depthwise_conv import strided_shape  # noqa: E402
from gpu_common import (add_jobs_option, check_and_bench_parser, override_constants, rel_err,  # noqa: E402
                        require_cuda, run_check_grid, run_parts_in_processes, timed)

# Outputs and gradients come back in the tensors' dtype: the errors are that dtype's rounding (float16 2**-11,
# bfloat16 2**-8); weight / bias gradients are sums over the batch and the map, in float32.
TOL = {'float32': 2e-5, 'float16': 2e-3, 'bfloat16': 1.6e-2, 'autocast float16': 2e-3,
       'autocast bfloat16': 1.6e-2}
# (batch, channels, H, W, k, residual, activation, bias[, stride]); the strided ones as the DMCA's spatial
# reductions (k = stride + 1, SparX-T's stage-2 one first) and on maps the stride does not divide.
CHECK_SHAPES = [(2, 96, 56, 56, 3, True, None, False), (2, 64, 28, 28, 3, True, 'gelu', False),
                (3, 40, 14, 14, 5, False, 'silu', True), (4, 32, 7, 7, 3, False, 'gelu', True),
                (2, 16, 13, 200, 7, True, 'gelu', True), (5, 8, 1, 1, 3, True, 'silu', True),
                (2, 12, 3, 5, 9, False, None, True), (3, 24, 9, 17, 1, True, 'gelu', True),
                (1, 8, 150, 3, 5, True, 'silu', False), (2, 192, 28, 28, 5, False, None, False, 4),
                (3, 40, 14, 13, 3, False, None, False, 2), (4, 24, 9, 11, 3, False, 'gelu', True, 2)]
# --large: 2.4e9 float16 elements (4.5 GiB a tensor, ~35 GiB in all), so that element offsets pass 2**31.
LARGE_SHAPE = (3, 12288, 256, 256)
# (channels, map size, k, residual, activation, bias[, stride]): SparX-T's depthwise convolutions at 224 x 224;
# --only bench also times the DMCA's spatial reductions (strided, after them), --only sweep the others.
BENCH_CONFIGS = [(96, 56, 3, True, None, False), (384, 56, 3, True, 'gelu', False),
                 (192, 56, 5, False, 'silu', True), (576, 28, 3, False, 'gelu', True),
                 (1280, 14, 3, True, 'gelu', False), (2048, 7, 3, True, 'gelu', False)]
STRIDED_BENCH_CONFIGS = [(96, 56, 9, False, None, False, 8), (192, 28, 5, False, None, False, 4),
                         (320, 14, 3, False, None, False, 2)]
# (values a thread holds, warps) tried by --only sweep, for either kernel.
SWEEP_TILINGS = [(9, 4), (18, 2), (18, 4), (36, 2), (36, 4), (36, 8), (72, 4)]
DTYPE_MODES = {'float32': (torch.float32, None), 'float16': (torch.float16, None), 'bfloat16': (torch.bfloat16, None),
               'autocast float16': (torch.float32, torch.float16), 'autocast bfloat16': (torch.float32, torch.bfloat16)}


def check_case(shape, mode, device):
    """Relative errors of y, dx, dweight, dbias of the Triton op (``mode`` in DTYPE_MODES) against the float64
    reference on the same inputs, and whether the dtypes follow the rules."""
    b, c, h, w, k, residual, activation, has_bias, *rest = shape
    stride = rest[0] if rest else 1
    dtype, autocast = DTYPE_MODES[mode]
    g = torch.Generator(device='cpu').manual_seed(c * 31 + h + k)
    x = torch.randn(b, c, h, w, generator=g).to(device, dtype)
    params = [(torch.randn(c, 1, k, k, generator=g) / k).to(device, dtype)]
    if has_bias:
        params.append(torch.randn(c, generator=g).to(device, dtype))
    leaves = [t.requires_grad_() for t in [x] + params]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    with torch.autocast('cuda', dtype=autocast or torch.float16, enabled=autocast is not None):
        y = depthwise_conv2d_act(leaves[0], leaves[1], leaves[2] if has_bias else None, residual, activation,
                                 impl='triton', stride=stride)
        with torch.no_grad():
            expected_dtype = depthwise_conv2d_act_reference(*[t.detach() for t in leaves[:2]],
                                                            leaves[2].detach() if has_bias else None, residual,
                                                            activation, stride).dtype
    y_ref = depthwise_conv2d_act_reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if has_bias else None,
                                           residual, activation, stride)
    dy = torch.randn(y.shape, generator=g).to(device, y.dtype)
    y.backward(dy)
    y_ref.backward(dy.double())
    dtypes_ok = y.dtype == expected_dtype and all(t.grad.dtype == t.dtype for t in leaves)
    errors = {'y': rel_err(y.detach(), y_ref.detach())}
    for name, leaf, ref in zip(('dx', 'dweight', 'dbias'), leaves, ref_leaves):
        errors[name] = rel_err(leaf.grad, ref.grad)
    return errors, dtypes_ok


def check_large(device):
    """Forward and gradients on a float16 input of more than 2**31 elements; the float64 reference runs on the
    last four channels (each channel is independent), whose element offsets are past 2**31."""
    b, c, h, w = LARGE_SHAPE
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, c, h, w, generator=g, device=device, dtype=torch.float16).requires_grad_()
    weight = (torch.randn(c, 1, 3, 3, generator=g, device=device) / 3).half().requires_grad_()
    bias = torch.randn(c, generator=g, device=device).half().requires_grad_()
    y = depthwise_conv2d_act(x, weight, bias, True, 'gelu', impl='triton')
    dy = torch.randn(y.shape, generator=g, device=device, dtype=y.dtype)
    y.backward(dy)
    last = slice(c - 4, c)
    ref_leaves = [t.detach()[:, last].double().requires_grad_() for t in (x, weight, bias)]
    y_ref = depthwise_conv2d_act_reference(*ref_leaves, True, 'gelu')
    y_ref.backward(dy[:, last].double())
    errors = {'y': rel_err(y.detach()[:, last], y_ref.detach())}
    for name, leaf, ref in zip(('dx', 'dweight', 'dbias'), (x, weight, bias), ref_leaves):
        errors[name] = rel_err(leaf.grad[:, last] if name == 'dx' else leaf.grad[last], ref.grad)
    ok = all(err <= TOL['float16'] for err in errors.values())
    print(f'{"" if ok else "FAIL "}float16 {LARGE_SHAPE} k3 residual gelu bias, last 4 channels: '
          + ', '.join(f'{name} {err:.1e}' for name, err in errors.items()))
    return ok


def run_checks(device, large, modes):
    ok = run_check_grid(check_case, {mode: TOL[mode] for mode in modes}, CHECK_SHAPES, device)
    if large:
        ok = check_large(device) and ok
    return ok


def graph_replay(step):
    """``step`` captured in a CUDA graph (after warm-up on a side stream, as capture requires): its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def bench_row(conv, act, residual, activation, x, autocast, cuda_graphs):
    """ms of the Triton op's forward, the composition's, then both again with the backward pass."""
    dy = torch.randn(strided_shape(x.shape, conv.stride[0]), device=x.device, dtype=x.dtype)

    def fused():
        return depthwise_conv2d_act(x, conv.weight, conv.bias, residual, activation, impl='triton',
                                    stride=conv.stride[0])

    def composition():
        y = conv(x)
        return act(x + y if residual else y)

    row = []
    for grad in (False, True):
        for fn in (fused, composition):
            def step():
                # No autocast cache: a CUDA graph must not keep the cast weights of its capture.
                with torch.autocast('cuda', dtype=torch.float16, enabled=autocast, cache_enabled=False), \
                        torch.set_grad_enabled(grad):
                    y = fn()
                if grad:
                    y.backward(dy)
            row.append(timed(graph_replay(step) if cuda_graphs else step)[0])
    return row


def bench(device, batch, cuda_graphs):
    from sparx_mm.ops import triton_depthwise_conv as tdc
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; forward (values, warps) {tdc.FWD_TILING}, gradient '
          f'(values, warps) {tdc.BWD_TILING}, MIN_PROGRAMS {tdc.MIN_PROGRAMS}, MAX_BLOCK_W {tdc.MAX_BLOCK_W}; ms'
          f'{" of CUDA-graph replays" if cuda_graphs else " (eager steps, GPU time)"}')
    print(f'{"C":>5} {"HxW":>5} {"k":>1} {"op":>12} {"dtype":>5} {"triton fwd":>10} {"torch fwd":>9} {"speedup":>7} '
          f'{"GB/s":>5} {"triton f+b":>10} {"torch f+b":>9} {"speedup":>7}')
    acts = {None: nn.Identity(), 'gelu': nn.GELU(), 'silu': nn.SiLU()}
    for channels, size, k, residual, activation, has_bias, *rest in BENCH_CONFIGS + STRIDED_BENCH_CONFIGS:
        stride = rest[0] if rest else 1
        conv = nn.Conv2d(channels, channels, k, stride=stride, padding=k // 2, groups=channels,
                         bias=has_bias).to(device)
        op = ('x+' if residual else '') + f'dw{k}' + (f'/{stride}' if stride > 1 else '') + ('+b' if has_bias else '') \
            + (f' {activation}' if activation else '')
        for mode, dtype, autocast in (('fp16', torch.float16, True), ('fp32', torch.float32, False)):
            x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).requires_grad_()
            row = bench_row(conv, acts[activation], residual, activation, x, autocast, cuda_graphs)
            gbps = (x.numel() + math.prod(strided_shape(x.shape, stride))) * x.element_size() / (row[0] * 1e-3) / 1e9
            print(f'{channels:>5} {size:>2}x{size:<2} {k:>1} {op:>12} {mode:>5} {row[0]:>10.3f} {row[1]:>9.3f} '
                  f'{row[1] / row[0]:>6.2f}x {gbps:>5.0f} {row[2]:>10.3f} {row[3]:>9.3f} {row[3] / row[2]:>6.2f}x',
                  flush=True)


def sweep(device, batch):
    from sparx_mm.ops import triton_depthwise_conv as tdc
    sizes = ', '.join(f'{c}x{size}x{size} k{k} {act or "none"}' for c, size, k, _, act, _ in BENCH_CONFIGS)
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; kernel ms at SparX-T\'s sizes ({sizes}) and their sum')
    defaults = dict(forward=tdc.FWD_TILING, gradient=tdc.BWD_TILING)
    for dtype in (torch.float16, torch.float32):
        data = []
        for channels, size, k, residual, activation, has_bias in BENCH_CONFIGS:
            x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
            weight = torch.randn(channels, 1, k, k, device=device) / k
            bias = torch.randn(channels, device=device) if has_bias else None
            data.append((x, weight, bias, torch.randn_like(x), residual, activation or 'none'))
        for kernel, name in (('forward', 'FWD_TILING'), ('gradient', 'BWD_TILING')):
            for tiling in SWEEP_TILINGS + [t for t in [defaults[kernel]] if t not in SWEEP_TILINGS]:
                setattr(tdc, name, tiling)
                times = []
                for x, weight, bias, dy, residual, activation in data:
                    if kernel == 'forward':
                        step = lambda: tdc._dwconv_fwd(x, weight, bias, residual, activation, x.dtype, 1)  # noqa: E731
                    else:
                        step = lambda: tdc._dwconv_grad(dy, x, weight, bias, residual, activation, 1)  # noqa: E731
                    times.append(timed(step)[0])
                label = 'default ' if tiling == defaults[kernel] else ''
                print(f'{str(dtype)[6:]:>7} {kernel:>8} {label}{tiling}: ' + ' '.join(f'{t:.3f}' for t in times)
                      + f' sum {sum(times):.3f}', flush=True)
            setattr(tdc, name, defaults[kernel])


#: Options that set triton_depthwise_conv's constants: a check in processes of its own passes them on.
_CONSTANT_OPTIONS = dict(fwd_tiling='FWD_TILING', bwd_tiling='BWD_TILING', min_programs='MIN_PROGRAMS',
                         max_block_w='MAX_BLOCK_W')


def _mode_argvs(args):
    """The check as one process a dtype mode (``--jobs``): each run's arguments, the constants' options passed on
    and ``--large`` with the first."""
    constants = []
    for option in _CONSTANT_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            constants += [f'--{option.replace("_", "-")}', *map(str, value if isinstance(value, list) else [value])]
    return [['--only', 'check', '--modes', mode, *constants, *(['--large'] if args.large and i == 0 else [])]
            for i, mode in enumerate(args.modes)]


def main(argv=None):
    parser = check_and_bench_parser(__doc__, extra_parts=('sweep', ))
    parser.add_argument('--cuda-graphs', action='store_true',
                        help='time CUDA-graph replays of each step instead of eager steps')
    parser.add_argument('--large', action='store_true',
                        help='also check a float16 input of more than 2**31 elements (~35 GiB of GPU memory)')
    parser.add_argument('--modes', nargs='+', choices=tuple(TOL), default=tuple(TOL), metavar='MODE',
                        help=f'dtype modes to check (default all: {", ".join(TOL)}); the kernels compile for each, '
                             'so several processes with a few modes each finish sooner')
    parser.add_argument('--fwd-tiling', type=int, nargs=2, metavar=('VALUES', 'WARPS'), default=None,
                        help='values a thread holds and warps of the forward / dx kernel instead of FWD_TILING')
    parser.add_argument('--bwd-tiling', type=int, nargs=2, metavar=('VALUES', 'WARPS'), default=None,
                        help='values a thread holds and warps of the gradient kernel (BWD_TILING)')
    parser.add_argument('--min-programs', type=int, nargs=2, metavar=('FWD', 'GRAD'), default=None,
                        help='programs each kernel aims for, rows cut into runs below it (MIN_PROGRAMS)')
    parser.add_argument('--max-block-w', type=int, default=None, help='widest column block (MAX_BLOCK_W)')
    add_jobs_option(parser, 'dtype modes (--large with the first)')
    args = parser.parse_args(argv)
    require_cuda('check_depthwise_conv.py')
    from sparx_mm.ops import triton_depthwise_conv as tdc
    override_constants(tdc, args, _CONSTANT_OPTIONS)
    device = torch.device('cuda')
    print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)
    ok = True
    if 'check' in args.only:
        if args.jobs > 1 and len(args.modes) > 1:
            ok = run_parts_in_processes(os.path.abspath(__file__), _mode_argvs(args), args.jobs)
        else:
            ok = run_checks(device, args.large, args.modes)
        print('DEPTHWISE CONV CHECK PASSED' if ok else 'DEPTHWISE CONV CHECK FAILED', flush=True)
    if 'bench' in args.only:
        bench(device, args.batch, args.cuda_graphs)
    if 'sweep' in args.only:
        sweep(device, args.batch)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
