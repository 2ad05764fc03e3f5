"""Run by test_depthwise_conv.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must be
switched on before the kernels are defined): the fused depthwise-conv Triton kernels against the reference,
forward and the gradients of x, weight and bias, then the custom ops' registration and a torch.compile
capture. Prints one line per case with its largest relative errors, then 'WORST <error>' and exits non-zero
when a check fails."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import depthwise_conv2d_act, depthwise_conv2d_act_reference  # noqa: E402
from sparx_mm.ops import triton_depthwise_conv as tdc  # noqa: E402
from helpers import compile_matches_eager  # noqa: E402  (this folder: the script's sys.path[0])

NAMES = ('y', 'dx', 'dweight', 'dbias')
# Relative to the largest reference value. float16 inputs, parameters, outputs and gradients are compared with
# a float32 reference on the same rounded inputs: the errors are float16's rounding (2**-11).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, 'autocast': 1e-2}
# (batch, channels, H, W, k, residual, activation, bias, dtype): H != W, W not a power of two, k 1 to 9,
# SparX's four uses (x + dw3x3(x); gelu(h + dw3x3(h)); silu(dw5x5(x) + b); gelu(dw3x3(y) + b)), a 1 x 1 map,
# k larger than the map, float16 and autocast (float32 tensors, bfloat16 convolution).
CASES = [(2, 3, 9, 7, 3, True, None, False, torch.float32),
         (2, 3, 6, 10, 3, True, 'gelu', False, torch.float32),
         (1, 4, 7, 5, 5, False, 'silu', True, torch.float32),
         (2, 2, 5, 5, 3, False, 'gelu', True, torch.float32),
         (1, 2, 6, 3, 7, True, 'silu', True, torch.float32),
         (3, 2, 1, 1, 3, True, 'gelu', True, torch.float32),
         (1, 2, 2, 3, 9, False, None, True, torch.float32),
         (2, 2, 4, 4, 1, True, 'silu', True, torch.float32),
         (2, 3, 9, 7, 3, True, 'gelu', True, torch.float16),
         (1, 2, 5, 6, 5, False, 'silu', True, torch.float16),
         (1, 2, 3, 2, 7, True, None, False, torch.float16),
         (2, 3, 5, 6, 3, True, 'gelu', True, 'autocast'),
         (2, 3, 5, 6, 5, False, 'silu', True, 'autocast')]
# Strided (the DMCA's spatial reductions, k = stride + 1; no residual): (case, stride), maps that the stride
# does not divide among them.
STRIDED_CASES = [((2, 3, 9, 7, 5, False, None, False, torch.float32), 4),
                 ((2, 4, 6, 7, 3, False, 'gelu', True, torch.float16), 2),
                 ((1, 3, 8, 8, 3, False, None, False, 'autocast'), 2),
                 ((2, 2, 7, 10, 5, False, 'silu', True, torch.float32), 3),
                 ((1, 2, 3, 2, 3, False, None, True, torch.float32), 4)]
# Tiles small enough that every map has several column blocks and every tile several planes, across two
# samples, and rows cut into runs (checked below): what the defaults do at SparX's sizes, scaled down. One
# position a thread of one warp: 32-element tiles.
SMALL_TILING = dict(FWD_TILING=(1, 1), BWD_TILING=(1, 1), MAX_BLOCK_W=4, MIN_PROGRAMS=(16, 16))
LOOP_CASES = [((3, 5, 7, 6, 3, True, 'gelu', True, torch.float32), 1),
              ((4, 3, 5, 9, 5, False, 'silu', True, torch.float32), 1),
              ((3, 5, 17, 18, 3, False, 'gelu', True, torch.float32), 2)]


def relative_errors(case, stride=1):
    b, c, h, w, k, residual, activation, has_bias, dtype = case
    autocast = dtype == 'autocast'
    dtype = torch.float32 if autocast else dtype
    g = torch.Generator().manual_seed(b * 100 + h * 10 + k)
    x = torch.randn(b, c, h, w, generator=g).to(dtype)
    weight = (torch.randn(c, 1, k, k, generator=g) / k).to(dtype)
    bias = torch.randn(c, generator=g).to(dtype) if has_bias else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    leaves = [t.clone().requires_grad_() for t in inputs]
    ref_leaves = [t.float().requires_grad_() for t in inputs]
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        y = depthwise_conv2d_act(*leaves[:2], leaves[2] if has_bias else None, residual, activation,
                                 impl='triton', stride=stride)
        # The dtype rule: the composition's output dtype under the same autocast state.
        expected_dtype = depthwise_conv2d_act_reference(*inputs[:2], bias, residual, activation, stride).dtype
    y_ref = depthwise_conv2d_act_reference(*ref_leaves[:2], ref_leaves[2] if has_bias else None, residual,
                                           activation, stride)
    assert y.shape == y_ref.shape == (b, c, -(-h // stride), -(-w // stride)) and y.is_contiguous()
    dy = torch.randn(y.shape, generator=g).to(y.dtype)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, dy.float())
    assert y.dtype == expected_dtype, (y.dtype, expected_dtype)
    assert all(gr.dtype == leaf.dtype for gr, leaf in zip(grads, leaves))
    return [float((t.float() - e).abs().max() / e.abs().max().clamp_min(1e-12))
            for t, e in zip([y.detach()] + list(grads), [y_ref.detach()] + list(ref_grads))]


def run_case(case, label='', stride=1):
    errors = relative_errors(case, stride)
    tol = TOL[case[-1]]
    failed = [name for name, e in zip(NAMES, errors) if e > tol]
    dtype = case[-1] if case[-1] == 'autocast' else str(case[-1])[6:]
    print(f'{label}{case[:-1]} {dtype}', ' '.join(f'{name} {e:.1e}' for name, e in zip(NAMES, errors)),
          'FAIL ' + ','.join(failed) if failed else '', flush=True)
    return max(e / tol for e in errors), not failed


def check_small_tiles():
    """The loop cases with SMALL_TILING: several column blocks and runs of rows, tiles across two samples."""
    defaults = {name: getattr(tdc, name) for name in SMALL_TILING}
    ok, worst = True, 0.0
    try:
        for name, value in SMALL_TILING.items():
            setattr(tdc, name, value)
        for case, stride in LOOP_CASES:
            b, c, h, w, k = case[:5]
            out_shape = tdc.strided_shape((b, c, h, w), stride)
            # The strided backward's dx kernel tiles the input's map.
            for _, block_p, _, run_rows, grid in (tdc._fwd_tiling(out_shape, k), tdc._grad_tiling(out_shape, k),
                                                  tdc._fwd_tiling((b, c, h, w), k)):
                assert grid[0] > 1 and grid[1] > 1 and grid[2] > 1 and run_rows > 1, \
                    'the tiling must split planes, columns and rows'
                assert c % block_p, 'some tiles must hold planes of two samples'
            scaled, passed = run_case(case, f'small tiles stride {stride} ', stride)
            worst, ok = max(worst, scaled), ok and passed
    finally:
        for name, value in defaults.items():
            setattr(tdc, name, value)
    return worst, ok


def check_registration():
    """torch.library.opcheck of both custom ops (schemas, fake tensors, autograd registration) and a
    torch.compile capture of forward + backward in one graph that matches eager."""
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 3, 4, 5, generator=g), torch.randn(3, 1, 3, 3, generator=g), \
        torch.randn(3, generator=g)
    reports = [torch.library.opcheck(tdc._dwconv_fwd.op, [t.clone().requires_grad_() for t in (x, weight, bias)] +
                                     [residual, 'gelu', torch.float32, stride])
               for residual, stride in ((True, 1), (False, 2))]
    for activation, dy_shape, stride in (('none', (2, 3, 4, 5), 1), ('silu', (2, 3, 4, 5), 1),
                                         ('gelu', (2, 3, 2, 3), 2)):
        reports.append(torch.library.opcheck(tdc._dwconv_grad.op, (torch.randn(dy_shape, generator=g), x, weight,
                                                                   None, False, activation, stride)))
    reports.append(torch.library.opcheck(tdc._dwconv_transposed.op, (torch.randn(2, 3, 2, 3, generator=g), weight,
                                                                     4, 5, 2, torch.float32)))
    ok = all(set(report.values()) == {'SUCCESS'} for report in reports)
    print('OPCHECK', 'ok' if ok else reports)

    def loss(x, weight, bias):
        y = depthwise_conv2d_act(x, weight, bias, True, 'silu', impl='triton')
        return (y.square().sum() + depthwise_conv2d_act(y, weight, bias, False, 'gelu', impl='triton', stride=2).sum())

    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    return compile_matches_eager(loss, leaves, atol=1e-6) and ok


if __name__ == '__main__':
    worst, ok = 0.0, True
    for case in CASES:
        scaled, passed = run_case(case)
        worst, ok = max(worst, scaled), ok and passed
    for case, stride in STRIDED_CASES:
        scaled, passed = run_case(case, f'stride {stride} ', stride)
        worst, ok = max(worst, scaled), ok and passed
    scaled, passed = check_small_tiles()
    worst, ok = max(worst, scaled), ok and passed
    ok = check_registration() and ok
    # The worst error as a fraction of its tolerance.
    print(f'WORST {worst:.3f} of tolerance')
    sys.exit(0 if ok else 1)
