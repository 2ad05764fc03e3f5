"""GPU check, micro-benchmark and tiling sweep of the fused 1x1 conv + bias + skip path (run on a CUDA GPU).

    python tools/gpu_checks/check_pointwise_conv.py [--only check bench rows-bench sweep wgrad-sweep] [--batch 128]
        [--arch t]
        [--tiling BLOCK_CO BLOCK_P BLOCK_K WARPS STAGES] [--parts PART ...] [--jobs N]

check: ``pointwise_conv2d(impl='triton')`` against the reference in float64 on the same (rounded) inputs, the
output and the gradients of x, weight, bias, skip, skip_scale and skip_shift, on awkward shapes (channel counts
and map sizes that are multiples of no block, H != W, a 1 x 1 map, one input channel) with every form of the
skip path, grouped convolutions (the DMCA's fusion conv, 3 groups) among them, three with stochastic depth's
per-sample branch scale (a dropped sample among them), for float32 tensors (TF32 off:
the exact kernel; on: the TF32 one), float16 / bfloat16 tensors, and float32 tensors under float16 / bfloat16
autocast; the gradients from the Triton backward kernels at every shape (``BACKWARD = 'triton'``). Prints the
largest relative errors (max |error| / max |reference|) and PASSED / FAILED (exit code 1 on
failure). Then the inference-only parts of the DMCA's path: the kernel's activation epilogue (exact GELU, SiLU;
no autograd) against the float64 convolution and activation, and ``fold_batch_norm``'s kernel against its
reference. Last, ``pointwise_conv2d_and_input`` (the gradient of x's second use added in the dx kernel) at
SparX-T's x_proj shapes, each dtype mode, against the float64 reference with x used twice. 'rows': the automatic
choice in 16-bit training steps on small maps, the convolution as one cuBLAS GEMM on the map's channels-last rows
(``conv1x1_on_rows``), output and gradients against the float64 reference (``check_rows``). ``--parts`` picks
some of these (CHECK_PARTS: the grid's dtype modes, 'epilogues', 'conv-and-input', 'rows'); ``--jobs 8`` runs each
part in a process of its own, 8 at once: compiling the kernels, one process at a time, is most of the check's time
(the whole check in seven processes at once: 58 s on a fresh H100, 2026-12-06).

bench: median GPU milliseconds (gpu_common.timed) of the Triton op against the torch composition
(``nn.Conv2d`` + the skip add) at SparX-T's sixteen 1x1 convolutions and its DMCAs' grouped fusion convs at
each stage's map (batch 128): forward, and forward +
backward, the latter with the Triton backward kernels and with cuDNN's convolution backward behind the Triton
forward (``triton_pointwise_conv.BACKWARD``); float16 under autocast (float32 parameters) and float32 (TF32,
cuDNN's default); --arch t / s / b picks the model. in_proj / fc1 run without a skip path, out_proj / fc2 with
one, as the blocks use them; the fusion convs (``groups 3``) without. On maps whose positions are not a multiple of
8 (14 x 14, 7 x 7) also the Triton forward on the maps padded to one (``padded_forward``: pad, kernel, slice).

rows-bench: cuDNN's convolution against the rows GEMM on 7 x 7 maps (``rows_bench``), forward and forward +
backward, float16 / bfloat16 autocast: what ``pointwise_conv.gemm_on_rows_pays`` encodes.

sweep: the forward's time for each of a set of tilings at the same sizes, with the skip path where the
blocks use one; prints the fastest per size (what ``triton_pointwise_conv.tiling`` encodes).

wgrad-sweep: the same for the backward's weight-gradient kernel (and the bias sums), against cuDNN's weight and
bias gradients (what ``triton_pointwise_conv.wgrad_tiling`` encodes), at the maps where the model runs it.
"""
import functools
import itertools
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import (fold_batch_norm, pointwise_conv2d, pointwise_conv2d_and_input,  # noqa: E402
                          pointwise_conv2d_reference)
from sparx_mm.ops import pointwise_conv as pc  # noqa: E402
from sparx_mm.ops import triton_pointwise_conv as tpc  # noqa: E402
from sparx_mm.ops.pointwise_conv import triton_is_faster  # noqa: E402
from gpu_common import (add_jobs_option, check_and_bench_parser, rel_err, require_cuda,  # noqa: E402
                        run_check_grid, run_parts_in_processes, timed)

NAMES = ('y', 'dx', 'dweight', 'dbias', 'dskip', 'dscale', 'dshift')
# The output and input gradients come back in the tensors' dtype (float16 2**-11, bfloat16 2**-8 rounding);
# TF32 products carry 10-bit mantissas (the output, dx and the weight gradient).
TOL = {'float32': 2e-5, 'float32 tf32': 3e-3, 'float16': 2e-3, 'bfloat16': 1.6e-2, 'autocast float16': 2e-3,
       'autocast bfloat16': 1.6e-2}
DTYPE_MODES = {'float32': (torch.float32, None, False), 'float32 tf32': (torch.float32, None, True),
               'float16': (torch.float16, None, False), 'bfloat16': (torch.bfloat16, None, False),
               'autocast float16': (torch.float32, torch.float16, False),
               'autocast bfloat16': (torch.float32, torch.bfloat16, False)}
# (batch, Cin, Cout, H, W, bias, skip: None / 'plain' / 'scale' / 'shift' / 'both'[, groups[, branch scale]])
CHECK_SHAPES = [(2, 96, 192, 56, 56, True, None), (2, 192, 96, 56, 56, True, 'plain'),
                (3, 320, 1280, 14, 14, True, None), (2, 1280, 320, 14, 14, True, 'both'),
                (4, 512, 2048, 7, 7, True, 'scale'), (3, 2048, 512, 7, 7, True, 'both'),
                (2, 37, 70, 9, 13, False, 'shift'), (5, 1, 3, 1, 1, True, 'both'), (2, 200, 33, 150, 3, True, 'plain'),
                (2, 396, 792, 14, 14, True, 'both'), (2, 38, 20, 6, 5, True, None),  # Cin with factors 4 and 2
                (2, 288, 192, 56, 56, True, None, 3), (2, 960, 639, 14, 14, True, None, 3),  # SparX-T's fusion convs
                (2, 45, 21, 9, 13, False, 'both', 3),
                (3, 192, 96, 56, 56, True, 'plain', 1, True), (3, 1280, 320, 14, 14, True, 'both', 1, True),
                (3, 45, 21, 9, 13, False, 'both', 3, True)]
#: A branch scale's per-sample factors (stochastic depth's 1 / keep probability and 0, and another).
BRANCH_FACTORS = (1.25, 0.0, 0.5)
#: Stage widths of SparX-T / S / B.
ARCH_DIMS = dict(t=(96, 192, 320, 512), s=(96, 192, 328, 544), b=(120, 240, 396, 636))


def bench_sizes(arch):
    """(Cin, Cout, map size, skip, groups): the model's 1x1 convs at 224 x 224 (in_proj, out_proj, fc1, fc2 of
    each stage, and the grouped fusion conv of a DMCA of that stage's width, 3C -> 2C rounded down to a multiple
    of 3)."""
    return [(c_in, c_out, size, skip, groups) for c, size in zip(ARCH_DIMS[arch], (56, 28, 14, 7))
            for c_in, c_out, skip, groups in ((c, 2 * c, False, 1), (2 * c, c, True, 1), (c, 4 * c, False, 1),
                                              (4 * c, c, True, 1), (3 * c, 2 * c // 3 * 3, False, 3))]


SWEEP_TILINGS = [(co, p, k, w, s) for co, p, k, (w, s) in
                 itertools.product((64, 128), (64, 128), (32, 64), ((4, 3), (8, 3), (4, 4)))]


def _groups(shape):
    return shape[7] if len(shape) > 7 else 1


def _options(shape, device):
    """The operator's keyword arguments for a check shape: its groups and its branch scale (float32, as the blocks
    pass it) or None."""
    branch = len(shape) > 8 and shape[8]
    return dict(groups=_groups(shape),
                branch_scale=torch.tensor(BRANCH_FACTORS[:shape[0]], device=device) if branch else None)


def _inputs(shape, dtype, device, g):
    b, cin, cout, h, w, has_bias, skip = shape[:7]
    cin_group = cin // _groups(shape)
    x = torch.randn(b, cin, h, w, generator=g).to(device, dtype)
    weight = (torch.randn(cout, cin_group, 1, 1, generator=g) * cin_group ** -0.5).to(device, dtype)
    bias = torch.randn(cout, generator=g).to(device, dtype) if has_bias else None
    s = torch.randn(b, cout, h, w, generator=g).to(device, dtype) if skip else None
    scale = torch.randn(cout, generator=g).to(device, dtype) if skip in ('scale', 'both') else None
    shift = torch.randn(cout, generator=g).to(device, dtype) if skip in ('shift', 'both') else None
    return [x, weight, bias, s, scale, shift]


def check_case(shape, mode, device, impl='triton'):
    dtype, autocast, tf32 = DTYPE_MODES[mode]
    g = torch.Generator().manual_seed(shape[1] * 7 + shape[3])
    inputs = _inputs(shape, dtype, device, g)
    leaves = [None if t is None else t.requires_grad_() for t in inputs]
    ref_leaves = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast('cuda', dtype=autocast or torch.float16, enabled=autocast is not None):
            y = pointwise_conv2d(*leaves, impl=impl, **_options(shape, device))
            with torch.no_grad():
                expected_dtype = pointwise_conv2d_reference(*[None if t is None else t.detach() for t in leaves],
                                                            **_options(shape, device)).dtype
        dy = torch.randn(y.shape, generator=g).to(device, y.dtype)
        y.backward(dy)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    options = _options(shape, device)
    if options['branch_scale'] is not None:
        options['branch_scale'] = options['branch_scale'].double()
    y_ref = pointwise_conv2d_reference(*ref_leaves, **options)
    y_ref.backward(dy.double())
    dtypes_ok = y.dtype == expected_dtype and all(t.grad.dtype == t.dtype for t in leaves if t is not None)
    errors = {'y': rel_err(y.detach(), y_ref.detach())}
    for name, leaf, ref in zip(NAMES[1:], leaves, ref_leaves):
        if leaf is not None:
            errors[name] = rel_err(leaf.grad, ref.grad)
    return errors, dtypes_ok


#: The rows GEMM's check shapes: CHECK_SHAPES' small ungrouped maps (channels that are multiples of 8 and of none,
#: a 1 x 1 map, every skip path) and SparX-B's stage-4 convs (636 channels: padded rows), one with a branch scale.
ROWS_SHAPES = [shape for shape in CHECK_SHAPES if shape[3] * shape[4] < 128 and _groups(shape) == 1] + [
    (2, 636, 2544, 7, 7, True, None), (2, 2544, 636, 7, 7, True, 'both'), (3, 396, 396, 7, 7, True, 'plain', 1, True)]
#: The dtype modes in which the automatic choice takes the rows GEMM (16-bit convolutions).
ROWS_MODES = ('float16', 'bfloat16', 'autocast float16', 'autocast bfloat16')


def check_rows(device) -> bool:
    """The automatic choice in 16-bit training steps on small maps, the convolution as one GEMM on the map's rows
    (``pointwise_conv.conv1x1_on_rows``), against the float64 reference: the output and every gradient at
    ROWS_SHAPES in each of ROWS_MODES; fails too if the rows GEMM did not run at every call."""
    calls = []
    rows_gemm = pc.conv1x1_on_rows

    def counted(*args):
        calls.append(args[0].shape)
        return rows_gemm(*args)
    pc.conv1x1_on_rows = counted
    try:
        print('rows GEMM (automatic choice, gradients on):')
        ok = run_check_grid(functools.partial(check_case, impl=None), {mode: TOL[mode] for mode in ROWS_MODES},
                            ROWS_SHAPES, device)
    finally:
        pc.conv1x1_on_rows = rows_gemm
    if len(calls) != len(ROWS_SHAPES) * len(ROWS_MODES):
        print(f'FAIL rows GEMM: ran at {len(calls)} of {len(ROWS_SHAPES) * len(ROWS_MODES)} calls')
        ok = False
    return ok


def check_inference_epilogues(device) -> bool:
    """The activation epilogue (no gradient: the kernels apply it) in each dtype mode at two of SparX-T's DMCA
    shapes (the shortcut projection at 14 x 14, a grouped one at 28 x 28), and fold_batch_norm's kernel against its
    reference (float32 weights of SparX-B's widest DMCA convs; float16 weights)."""
    ok, worst = True, {}
    for mode, tol in TOL.items():
        dtype, autocast, tf32 = DTYPE_MODES[mode]
        for (b, cin, cout, size, groups), activation in (((4, 1280, 640, 14, 1), 'gelu'),
                                                         ((3, 576, 384, 28, 3), 'silu')):
            g = torch.Generator().manual_seed(cin + size)
            x = torch.randn(b, cin, size, size, generator=g).to(device, dtype)
            weight = (torch.randn(cout, cin // groups, 1, 1, generator=g) * (cin // groups) ** -0.5).to(device, dtype)
            bias = torch.randn(cout, generator=g).to(device, dtype)
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                with torch.no_grad(), torch.autocast('cuda', dtype=autocast or torch.float16,
                                                     enabled=autocast is not None):
                    y = pointwise_conv2d(x, weight, bias, impl='triton', groups=groups, activation=activation)
            finally:
                torch.backends.cudnn.allow_tf32 = True
            expected = pointwise_conv2d_reference(x.double(), weight.double(), bias.double(), groups=groups,
                                                  activation=activation)
            err = rel_err(y, expected)
            worst[mode] = max(worst.get(mode, 0.0), err)
            if not err <= tol:
                ok = False
                print(f'FAIL activation {activation} {mode} {(b, cin, cout, size, groups)}: rel err {err:.2e}')
    print('activation epilogue, largest relative errors: ' + ', '.join(f'{m} {e:.1e}' for m, e in worst.items()))
    for dtype, tol in ((torch.float32, 1e-6), (torch.float16, 1e-3)):
        g = torch.Generator().manual_seed(3)
        weight = torch.randn(1272, 636, 1, 1, generator=g).to(device, dtype)
        stats = [torch.randn(1272, generator=g).to(device), (torch.rand(1272, generator=g) + 0.1).to(device),
                 torch.randn(1272, generator=g).to(device), torch.randn(1272, generator=g).to(device)]
        bias = torch.randn(1272, generator=g).to(device, dtype)
        with torch.no_grad():
            folded = fold_batch_norm(weight, bias, *stats, 1e-5, impl='triton')
            expected = fold_batch_norm(weight, bias, *stats, 1e-5, impl='reference')
        errors = [rel_err(a, e) for a, e in zip(folded, expected)]
        ok &= max(errors) <= tol
        print(f'fold_batch_norm {str(dtype)[6:]}: weight {errors[0]:.1e}, bias {errors[1]:.1e}'
              f'{"" if max(errors) <= tol else "  FAIL"}')
    return ok


def _bench_tensors(batch, c_in, c_out, size, skip, groups, dtype, device):
    x = torch.randn(batch, c_in, size, size, device=device, dtype=dtype)
    conv = torch.nn.Conv2d(c_in, c_out, 1, groups=groups).to(device)
    s = torch.randn(batch, c_out, size, size, device=device, dtype=dtype) if skip else None
    return x, conv, s


def width_padding(h: int, w: int, multiple: int = 8) -> int:
    """Columns to add on the right of an h x w map for its positions to be a multiple of ``multiple``."""
    return next(pad for pad in range(multiple) if h * (w + pad) % multiple == 0)


def padded_forward(x, weight, bias, skip, groups, impl='triton'):
    """``pointwise_conv2d`` on x (and the skip path) padded on the right to a multiple of 8 positions a map, the
    padding's columns sliced off the output in a copy. Where a map's positions are not a multiple of 8 (7 x 7: 49),
    16-bit rows align to 2 bytes only and the kernel copies x element by element; padded (7 x 8) they are 16-byte
    copies. Bench's 'padded fwd': what staging such maps in padded planes would gain, the pad and the slice
    included, measured without changing the kernel."""
    pad = (0, width_padding(*x.shape[-2:]))
    y = pointwise_conv2d(F.pad(x, pad), weight, bias, None if skip is None else F.pad(skip, pad), impl=impl,
                         groups=groups)
    return y[..., :x.shape[-1]].contiguous()


def bench(device, batch, arch):
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; ms (GPU time of eager steps); padded fwd: the Triton '
          'forward on maps padded to a multiple of 8 positions, pad and slice included (padded_forward; "-" where '
          'they are one already); f+b: forward + backward with the Triton backward, with cuDNN\'s backward behind '
          'the Triton forward, and the torch composition')
    print(f'{"Cin":>5} {"Cout":>5} {"groups":>6} {"HxW":>5} {"skip":>4} {"dtype":>5} {"triton fwd":>10} '
          f'{"torch fwd":>9} {"speedup":>7} {"padded fwd":>10} {"triton f+b":>10} {"cudnn bwd":>9} {"torch f+b":>9} '
          f'{"speedup":>7}')
    for c_in, c_out, size, skip, groups in bench_sizes(arch):
        for mode, dtype, autocast in (('fp16', torch.float16, True), ('fp32', torch.float32, False)):
            x, conv, s = _bench_tensors(batch, c_in, c_out, size, skip, groups, dtype, device)
            x.requires_grad_()
            dy = torch.randn(batch, c_out, size, size, device=device, dtype=dtype)
            row = []
            for grad, impl in ((False, 'triton'), (False, 'torch'), (True, 'triton'), (True, 'cudnn'),
                               (True, 'torch')):
                def step():
                    with torch.autocast('cuda', dtype=torch.float16, enabled=autocast), torch.set_grad_enabled(grad):
                        if impl == 'torch':
                            y = conv(x) if s is None else s + conv(x)
                        else:
                            y = pointwise_conv2d(x, conv.weight, conv.bias, s, impl='triton', groups=groups)
                    if grad:
                        y.backward(dy)
                default, tpc.BACKWARD = tpc.BACKWARD, ('cudnn' if impl == 'cudnn' else 'triton')
                try:
                    row.append(timed(step)[0])
                finally:
                    tpc.BACKWARD = default
            padded = '-'
            if width_padding(size, size):
                def padded_step():
                    with torch.autocast('cuda', dtype=torch.float16, enabled=autocast), torch.no_grad():
                        padded_forward(x, conv.weight, conv.bias, s, groups)
                padded = f'{timed(padded_step)[0]:.3f}'
            print(f'{c_in:>5} {c_out:>5} {groups:>6} {size:>2}x{size:<2} {"yes" if skip else "no":>4} {mode:>5} '
                  f'{row[0]:>10.3f} {row[1]:>9.3f} {row[1] / row[0]:>6.2f}x {padded:>10} {row[2]:>10.3f} '
                  f'{row[3]:>9.3f} {row[4]:>9.3f} {row[4] / row[2]:>6.2f}x', flush=True)


def rows_bench(device, batch, arch):
    """cuDNN's convolution (with the skip add) against the rows GEMM (``conv1x1_on_rows``, then the add) at the
    model's 1x1 convs on 7 x 7 maps (no groups) and a stage-3 / stage-4-width square conv at 7 x 7 (the DMCA's
    spatially reduced maps), float16 / bfloat16 autocast: forward and forward + backward ms."""
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; ms (GPU time of eager steps), cuDNN / rows GEMM')
    print(f'{"Cin":>5} {"Cout":>5} {"skip":>4} {"dtype":>8} {"cudnn fwd":>9} {"rows fwd":>8} {"cudnn f+b":>9} '
          f'{"rows f+b":>8} {"speedup":>7}')
    sizes = [(c_in, c_out, skip) for c_in, c_out, size, skip, groups in bench_sizes(arch)
             if size == 7 and groups == 1] + [(c, c, False) for c in ARCH_DIMS[arch][2:]]
    for c_in, c_out, skip in sizes:
        for dtype in (torch.float16, torch.bfloat16):
            x, conv, s = _bench_tensors(batch, c_in, c_out, 7, skip, 1, dtype, device)
            x.requires_grad_()
            dy = torch.randn(batch, c_out, 7, 7, device=device, dtype=dtype)
            row = []
            for grad in (False, True):
                for on_rows in (False, True):
                    def step():
                        with torch.autocast('cuda', dtype=dtype), torch.set_grad_enabled(grad):
                            y = (pc.conv1x1_on_rows(x, conv.weight, conv.bias) if on_rows
                                 else F.conv2d(x, conv.weight, conv.bias))
                            y = y if s is None else s + y
                        if grad:
                            y.backward(dy)
                    row.append(timed(step)[0])
            print(f'{c_in:>5} {c_out:>5} {"yes" if skip else "no":>4} {str(dtype)[6:]:>8} {row[0]:>9.3f} '
                  f'{row[1]:>8.3f} {row[2]:>9.3f} {row[3]:>8.3f} {row[2] / row[3]:>6.2f}x', flush=True)


def sweep(device, batch, arch):
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; forward ms, fastest of {len(SWEEP_TILINGS)} tilings '
          '(BLOCK_CO, BLOCK_P, BLOCK_K, warps, stages), and the default tiling')
    with torch.no_grad():
        for dtype in (torch.float16, torch.float32):
            for c_in, c_out, size, skip, groups in bench_sizes(arch):
                x, conv, s = _bench_tensors(batch, c_in, c_out, size, skip, groups, dtype, device)
                weight, bias = conv.weight.to(dtype), conv.bias.to(dtype)
                expected = F.conv2d(x, weight, bias, groups=groups) + (0 if s is None else s)
                results = []
                for tiling in SWEEP_TILINGS + [None]:
                    tpc.TILING_OVERRIDE = tiling
                    try:
                        y = pointwise_conv2d(x, weight, bias, s, impl='triton', groups=groups)
                        if rel_err(y, expected) > 1e-2:
                            print(f'WRONG {tiling}: rel err {rel_err(y, expected):.1e}')
                            continue
                        results.append((timed(lambda: pointwise_conv2d(x, weight, bias, s, impl='triton',
                                                                       groups=groups))[0], tiling))
                    except Exception as exc:  # out of shared memory / registers for this size
                        print(f'skip {tiling}: {type(exc).__name__}')
                    finally:
                        tpc.TILING_OVERRIDE = None
                best = min(r for r in results if r[1] is not None)
                default = [r[0] for r in results if r[1] is None]
                cudnn = timed(lambda: F.conv2d(x, weight, bias, groups=groups) + (0 if s is None else s))[0]
                skip_text = 'yes' if skip else 'no'
                print(f'{str(dtype)[6:]:>7} {c_in:>5}->{c_out:<5} groups {groups} {size:>2}x{size:<2} '
                      f'skip {skip_text:>3}: '
                      f'best {best[0]:.3f} {best[1]}, default {default[0] if default else float("nan"):.3f}, '
                      f'cuDNN + adds {cudnn:.3f}', flush=True)


WGRAD_SWEEP_TILINGS = [(co, ci, p, w, 3) for co, ci, p, w in itertools.product((64, 128), (64, 128), (32, 64), (4, 8))]


def wgrad_sweep(device, batch, arch):
    print(f'# {torch.cuda.get_device_name()}, batch {batch}; weight + bias gradient ms, fastest of '
          f'{len(WGRAD_SWEEP_TILINGS)} tilings (BLOCK_CO, BLOCK_CI, BLOCK_P, warps, stages), the default tiling, and '
          "cuDNN's (in the convolution dtype, NCHW maps)")
    for dtype in (torch.float16, torch.float32):
        for c_in, c_out, size, _, groups in bench_sizes(arch):
            if not triton_is_faster(size * size):
                continue  # the model keeps cuDNN's convolution (forward and backward) at these maps
            x = torch.randn(batch, c_in, size, size, device=device, dtype=dtype)
            dy = torch.randn(batch, c_out, size, size, device=device, dtype=dtype)
            expected = torch.einsum('bgop,bgip->goi', dy.double().view(batch, groups, c_out // groups, -1),
                                    x.double().view(batch, groups, c_in // groups, -1)).reshape(c_out, -1)
            results = []
            for tiling in WGRAD_SWEEP_TILINGS + [None]:
                tpc.WGRAD_TILING_OVERRIDE = tiling
                try:
                    def wgrad():
                        return tpc._launch_wgrad(dy, x, dtype, True, groups), tpc.bias_grad(dy, dtype)
                    if rel_err(wgrad()[0], expected) > TOL['float32 tf32']:
                        print(f'WRONG {tiling}: rel err {rel_err(wgrad()[0], expected):.1e}')
                        continue
                    results.append((timed(wgrad)[0], tiling))
                except Exception as exc:  # out of shared memory / registers for this size
                    print(f'skip {tiling}: {type(exc).__name__}')
                finally:
                    tpc.WGRAD_TILING_OVERRIDE = None
            weight = torch.empty(c_out, c_in // groups, 1, 1, device=device, dtype=dtype)
            cudnn = timed(lambda: torch.ops.aten.convolution_backward(
                dy, x, weight, [c_out], [1, 1], [0, 0], [1, 1], False, [0, 0], groups, [False, True, True]))[0]
            best = min(r for r in results if r[1] is not None)
            default = [r[0] for r in results if r[1] is None]
            print(f'{str(dtype)[6:]:>7} {c_in:>5}->{c_out:<5} groups {groups} {size:>2}x{size:<2}: '
                  f'best {best[0]:.3f} {best[1]}, '
                  f'default {default[0] if default else float("nan"):.3f}, cuDNN {cudnn:.3f}', flush=True)


def check_conv_and_input(device) -> bool:
    """pointwise_conv2d_and_input (the gradient of x's second use added in the dx kernel's epilogue) against the
    float64 reference with x used twice, at SparX-T's x_proj shapes (stage 1: 192 -> 32 at 56 x 56, the weight
    gradient from cuDNN under 'auto'; stage 3: 640 -> 88 at 14 x 14, from the Triton kernel), each dtype mode:
    dx, dweight."""
    ok, worst = True, {}
    for mode, tol in TOL.items():
        dtype, autocast, tf32 = DTYPE_MODES[mode]
        for b, cin, cout, size in ((2, 192, 32, 56), (3, 640, 88, 14)):
            g = torch.Generator().manual_seed(cin)
            x = torch.randn(b, cin, size, size, generator=g).to(device, dtype)
            weight = (torch.randn(cout, cin, 1, 1, generator=g) * cin ** -0.5).to(device, dtype)
            dy = torch.randn(b, cout, size, size, generator=g).to(device, autocast or dtype)
            dx_other = torch.randn(b, cin, size, size, generator=g).to(device, dtype)
            leaves = [t.clone().requires_grad_() for t in (x, weight)]
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                with torch.autocast('cuda', dtype=autocast or torch.float16, enabled=autocast is not None):
                    y, x_again = pointwise_conv2d_and_input(*leaves, impl='triton')
                torch.autograd.backward([y, x_again], [dy, dx_other])
            finally:
                torch.backends.cudnn.allow_tf32 = True
            ref = [t.double().requires_grad_() for t in (x, weight)]
            torch.autograd.backward([pointwise_conv2d_reference(*ref), ref[0]], [dy.double(), dx_other.double()])
            for name, ours, expected in zip(('dx', 'dweight'), leaves, ref):
                err = rel_err(ours.grad, expected.grad)
                worst[mode, name] = max(worst.get((mode, name), 0.0), err)
                if not err <= tol:
                    ok = False
                    print(f'FAIL and input {mode} {(b, cin, cout, size)} {name}: rel err {err:.2e} > {tol:.0e}')
    print('conv and input, largest relative errors: ' +
          ', '.join(f'{mode} {name} {err:.1e}' for (mode, name), err in worst.items()))
    return ok


#: --parts of the check: the grid's dtype modes, then the inference epilogues (and the BatchNorm fold), then
#: pointwise_conv2d_and_input, then the rows GEMM of 16-bit training steps on small maps.
CHECK_PARTS = tuple(TOL) + ('epilogues', 'conv-and-input', 'rows')


def run_checks(device, parts) -> bool:
    """The check's ``parts`` (CHECK_PARTS) in this process."""
    ok = True
    modes = {mode: TOL[mode] for mode in parts if mode in TOL}
    if modes:
        # the Triton backward at every shape ('auto' hands large ungrouped maps to cuDNN)
        default, tpc.BACKWARD = tpc.BACKWARD, 'triton'
        try:
            ok = run_check_grid(check_case, modes, CHECK_SHAPES, device)
        finally:
            tpc.BACKWARD = default
    if 'epilogues' in parts:
        ok = check_inference_epilogues(device) and ok
    if 'conv-and-input' in parts:
        ok = check_conv_and_input(device) and ok
    if 'rows' in parts:
        ok = check_rows(device) and ok
    return ok


def main(argv=None):
    parser = check_and_bench_parser(__doc__, extra_parts=('rows-bench', 'sweep', 'wgrad-sweep'))
    parser.add_argument('--tiling', type=int, nargs=5, default=None,
                        metavar=('BLOCK_CO', 'BLOCK_P', 'BLOCK_K', 'WARPS', 'STAGES'),
                        help='one tiling for every size instead of triton_pointwise_conv.tiling')
    parser.add_argument('--arch', default='t', choices=sorted(ARCH_DIMS), help='whose 1x1 convs to time (default t)')
    parser.add_argument('--parts', nargs='+', choices=CHECK_PARTS, default=CHECK_PARTS, metavar='PART',
                        help=f'what the check covers (default all: {", ".join(CHECK_PARTS)})')
    add_jobs_option(parser, 'the parts')
    args = parser.parse_args(argv)
    require_cuda('check_pointwise_conv.py')
    device = torch.device('cuda')
    if args.tiling:
        tpc.TILING_OVERRIDE = tuple(args.tiling)
    ok = True
    if 'check' in args.only:
        if args.jobs > 1 and len(args.parts) > 1:
            tiling = ['--tiling', *map(str, args.tiling)] if args.tiling else []
            ok = run_parts_in_processes(os.path.abspath(__file__),
                                        [['--only', 'check', '--parts', part, *tiling] for part in args.parts],
                                        args.jobs)
        else:
            ok = run_checks(device, args.parts)
        print('PASSED' if ok else 'FAILED', flush=True)
    if 'bench' in args.only:
        bench(device, args.batch, args.arch)
    if 'rows-bench' in args.only:
        rows_bench(device, args.batch, args.arch)
    if 'sweep' in args.only:
        sweep(device, args.batch, args.arch)
    if 'wgrad-sweep' in args.only:
        wgrad_sweep(device, args.batch, args.arch)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
