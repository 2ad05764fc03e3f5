"""Run by test_group_norm.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must be switched
on before the kernels are defined): the one-group GroupNorm kernels against the reference, forward and the
gradients of x, weight and bias. Prints one line per case (the case and the largest relative errors), then
``WORST <error>``; exits non-zero when a case is outside its tolerance."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import (group_norm_one_group, group_norm_one_group_reference,  # noqa: E402
                          group_norm_one_group_with_recipe, group_norm_one_group_with_skip)
from sparx_mm.ops import triton_group_norm as tgn  # noqa: E402
from helpers import backward_through_two_uses  # noqa: E402  (this folder: the script's sys.path[0])

# The interpreter runs a program's tile as numpy arrays: small tiles keep it fast, and make the column loops
# of the reduction kernels run several chunks and split rows between programs on small shapes.
tgn.REDUCE_TILING = (64, 4)
tgn.ELEMENTWISE_TILING = (128, 4)
tgn.SAMPLE_TILING = (32, 4)
tgn.MIN_REDUCE_PROGRAMS = 32

# Relative tolerance of each output and gradient, per input dtype: float32 is the kernels' own rounding;
# float16 / bfloat16 outputs and gradients are rounded to their dtype once (2^-11, 2^-8 of the largest value).
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# (shape, dtype, affine, mean offset): S = 63 over two 32-column chunks; a 1 x 1 map; L = 33 with C = 8;
# (B, C) rows of one element; S = 450 over 8 chunks split between programs (3, 3, 2 chunks: few rows); S = 9 with
# C = 37 in blocks of 4 (reduction) and 8 (elementwise) rows that straddle samples; a mean 30 spreads from 0
# (no sum / sum-of-squares cancellation); no weight / bias.
CASES = [((2, 5, 7, 9), torch.float32, True, 0.0), ((1, 3, 1, 1), torch.float32, True, 0.0),
         ((3, 8, 33), torch.float32, True, 0.0), ((2, 16), torch.float32, True, 0.0),
         ((3, 4, 18, 25), torch.float32, True, 0.0), ((3, 37, 3, 3), torch.float32, True, 0.0),
         ((2, 6, 5, 11), torch.float32, True, 30.0), ((2, 5, 7, 9), torch.float32, False, 0.0),
         ((2, 5, 7, 9), torch.float16, True, 0.0), ((1, 4, 18, 25), torch.bfloat16, True, 0.0),
         ((3, 8, 33), torch.bfloat16, False, 0.0)]
NAMES = ('y', 'dx', 'dweight', 'dbias')


def rel_err(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def relative_errors(shape, dtype, affine, offset):
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[1])
    channels = shape[1]
    # Per-channel offsets: the sample's mean and variance then differ from its rows' (the merge is exercised).
    x = (torch.randn(shape, generator=g) + offset + torch.randn(channels, generator=g).view(channels, *[1] * (
        len(shape) - 2))).to(dtype)
    params = [torch.randn(channels, generator=g).to(dtype), torch.randn(channels, generator=g).to(dtype)] \
        if affine else [None, None]
    upstream = torch.randn(shape, generator=g).to(dtype)
    results = []
    for impl in ('triton', 'reference'):
        leaves = [x.clone().requires_grad_()] + [None if p is None else p.clone().requires_grad_() for p in params]
        y = group_norm_one_group(*leaves, eps=1e-5, impl=impl)
        assert y.dtype == dtype and y.shape == x.shape
        y.backward(upstream)
        assert all(t is None or t.grad.dtype == dtype for t in leaves)
        results.append([y.detach()] + [t.grad for t in leaves if t is not None])
    assert torch.equal(results[1][0], group_norm_one_group_reference(x, *params, 1e-5, dtype))
    return [rel_err(a, b) for a, b in zip(*results)]


def autocast_output():
    """Under CPU autocast (bfloat16) a float32 x gives bfloat16 y, equal to the reference's up to the
    kernels' float32 rounding before the cast."""
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(2, 6, 5, 7, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = group_norm_one_group(x, w, b, impl='triton')
    assert y.dtype == torch.bfloat16
    return rel_err(y, group_norm_one_group_reference(x, w, b, 1e-5, torch.bfloat16))


def large_mean_error():
    """A mean 1000 spreads from 0, S across chunks and splits: y against float64 on the same float32 input.
    float32 sums of the values set the floor (torch's own float32 GroupNorm: 2.5e-5); a variance taken as
    E[x^2] - mean^2 would put y 6e-2 off."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 18, 25, generator=g) + 1000
    w, b = torch.randn(4, generator=g), torch.randn(4, generator=g)
    y = group_norm_one_group(x, w, b, impl='triton')
    return rel_err(y, torch.nn.functional.group_norm(x.double(), 1, w.double(), b.double(), 1e-5))


def recipe_case(shape, dtype, autocast):
    """group_norm_one_group_with_recipe: (whether y is group_norm_one_group's and the recipe, run after the
    forward pass and outside its autocast, gives it again bit for bit in its dtype; the kernels the recipe
    launched)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g) + 2).to(dtype)
    weight, bias = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        y, fn, args = group_norm_one_group_with_recipe(x, weight, bias, impl='triton')
        plain = group_norm_one_group(x, weight, bias, impl='triton')
    launched, launch = [], tgn.launch
    tgn.launch = lambda kernel, *a, **k: launched.append(kernel.__name__) or launch(kernel, *a, **k)
    try:
        again = fn(*args)
    finally:
        tgn.launch = launch
    return torch.equal(y, plain) and torch.equal(again, y) and again.dtype == plain.dtype, launched


def with_skip_errors(shape, dtype, uses):
    """group_norm_one_group_with_skip on the Triton path (the norm's node takes the skip path's gradient into its
    dx kernel) against the reference norm with x used twice: gradients of x, weight, bias. ``uses``: 'both', or
    'norm' / 'skip' alone (the other output's gradient None)."""
    g = torch.Generator().manual_seed(7 + len(uses))
    channels = shape[1]
    x = torch.randn(shape, generator=g).to(dtype)
    w, b = torch.randn(channels, generator=g).to(dtype), torch.randn(channels, generator=g).to(dtype)
    up_y, up_skip = torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)
    grads = []
    for impl in ('triton', 'reference'):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        if impl == 'triton':
            y, skip = group_norm_one_group_with_skip(*leaves, impl='triton')
            assert type(skip.grad_fn).__name__ == '_GroupNormWithSkipBackward', skip.grad_fn
            assert torch.equal(skip, x) and skip.dtype == dtype
        else:
            y, skip = group_norm_one_group(*leaves, impl='reference'), leaves[0]
        grads.append(backward_through_two_uses(leaves, y, skip, up_y, up_skip, uses != 'skip', uses != 'norm'))
    return [rel_err(a, b) for a, b in zip(*grads)]


if __name__ == '__main__':
    ok = True
    worst = 0.0
    for shape, dtype, affine, offset in CASES:
        errors = relative_errors(shape, dtype, affine, offset)
        tol = TOL[dtype]
        dtype_ok = all(e <= tol for e in errors)
        ok &= dtype_ok
        if dtype == torch.float32:
            worst = max(worst, *errors)
        names = NAMES if affine else NAMES[:2]
        print(shape, str(dtype).split('.')[-1], 'affine' if affine else 'no affine', f'offset {offset:g}:',
              ' '.join(f'{name} {e:.1e}' for name, e in zip(names, errors)), '' if dtype_ok else 'FAIL', flush=True)
    err = autocast_output()
    ok &= err <= TOL[torch.bfloat16]
    print(f'autocast bfloat16 output: y {err:.1e}')
    err = large_mean_error()
    ok &= err <= 1e-4
    print(f'mean 1000, y vs float64: {err:.1e}')
    for shape, dtype, uses in (((2, 5, 7, 9), torch.float32, 'both'), ((3, 37, 3, 3), torch.float32, 'both'),
                               ((2, 5, 7, 9), torch.float32, 'norm'), ((2, 5, 7, 9), torch.float32, 'skip'),
                               ((2, 6, 5, 11), torch.float16, 'both')):
        errors = with_skip_errors(shape, dtype, uses)
        case_ok = all(e <= TOL[dtype] for e in errors)
        ok &= case_ok
        if dtype == torch.float32:
            worst = max(worst, *errors)
        print('with skip', shape, str(dtype).split('.')[-1], uses + ':',
              ' '.join(f'{name} {e:.1e}' for name, e in zip(('dx', 'dweight', 'dbias'), errors)),
              '' if case_ok else 'FAIL', flush=True)
    for shape, dtype, autocast in (((3, 37, 3, 3), torch.float32, False), ((2, 6, 5, 11), torch.float16, False),
                                   ((2, 5, 7, 9), torch.float32, True)):
        same, launched = recipe_case(shape, dtype, autocast)
        case_ok = same and launched == ['_normalize_kernel']
        ok &= case_ok
        print('recipe', shape, str(dtype).split('.')[-1], 'autocast bfloat16' if autocast else '',
              'same' if same else 'DIFFERENT', 'launches', launched, '' if case_ok else 'FAIL', flush=True)
    report = torch.library.opcheck(tgn._group_norm_fwd.op, (torch.randn(2, 3, 4, 5).requires_grad_(),
                                                           torch.randn(3).requires_grad_(), None, 1e-5, torch.float32))
    opcheck_ok = set(report.values()) == {'SUCCESS'}
    ok &= opcheck_ok
    print('OPCHECK', 'ok' if opcheck_ok else report)
    print(f'WORST {worst:.3e}')
    sys.exit(0 if ok else 1)
