"""Run by test_pointwise_conv.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must be
switched on before the kernels are defined): the fused 1x1-conv Triton kernels against the reference, the output
and the gradients of x, weight, bias, skip, skip_scale and skip_shift (the backward kernels, and cuDNN's backward
for four cases), with and without a per-sample branch scale; then the custom ops' registration and a
torch.compile capture; then a small SparX-Mamba whose blocks fold their residuals into the kernel, against the same
model on the reference path. Prints one line per
case with its largest relative errors, then 'WORST <error>' and exits non-zero when a check fails.

The interpreter has no bfloat16 matrix product (numpy has no bfloat16), so bfloat16 is checked on GPUs only
(tools/gpu_checks/check_pointwise_conv.py)."""
import os
import sys
from unittest import mock

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import pointwise_conv2d, pointwise_conv2d_and_input, pointwise_conv2d_reference  # noqa: E402
from sparx_mm.ops import triton_pointwise_conv as tpc  # noqa: E402
from helpers import backward_through_two_uses, compile_matches_eager  # noqa: E402  (the script's folder)

NAMES = ('y', 'dx', 'dweight', 'dbias', 'dskip', 'dscale', 'dshift')
# Relative to the largest reference value; float16 tensors against a float32 reference on the same rounded
# inputs (float16 rounding, 2**-11); 'autocast': float32 tensors, float16 convolution; 'tf32': float32 tensors with
# TF32 allowed (torch.backends.cudnn.allow_tf32), the output against the reference on x rounded to TF32 (the
# interpreter's product itself is exact, as the TF32 kernel's is on x's rounded and w's truncated mantissas).
TOL = {torch.float32: 1e-5, 'tf32': 1e-5, torch.float16: 2e-3, 'autocast': 2e-3}
# (batch, Cin, Cout, H, W, bias, skip form, dtype[, groups]): channel counts and map sizes that are multiples of no
# block, H != W, a 1 x 1 map, one input channel, every form of the skip path; grouped convolutions (the DMCA's
# fusion conv has 3 groups) in each dtype mode.
CASES = [(2, 40, 24, 5, 7, True, None, 'tf32'),
         (2, 24, 40, 7, 5, True, 'plain', 'tf32'),
         (1, 33, 17, 6, 6, False, 'both', 'tf32'),
         (3, 1, 5, 1, 1, True, 'scale', 'tf32'),
         (2, 20, 36, 3, 9, True, 'shift', 'tf32'),
         (2, 24, 40, 4, 9, True, 'both', torch.float32),
         (1, 33, 17, 7, 5, False, None, torch.float32),
         (2, 40, 24, 5, 7, True, 'both', torch.float16),
         (1, 24, 40, 7, 5, False, None, torch.float16),
         (2, 40, 24, 5, 7, True, 'both', 'autocast'),
         (1, 17, 30, 4, 3, True, None, 'autocast'),
         (2, 24, 18, 5, 7, True, None, 'tf32', 3),
         (2, 30, 12, 4, 6, True, 'both', torch.float32, 3),
         (2, 24, 18, 5, 7, True, 'both', torch.float16, 3),
         (1, 36, 27, 3, 5, False, None, 'autocast', 3)]
# Blocks smaller than every dimension of the cases (several K, channel and position blocks, masked edges), as
# the default tilings are at SparX's sizes.
SMALL_TILING = (16, 16, 16, 1, 1)
#: The weight-gradient kernel's (BLOCK_CO, BLOCK_CI, BLOCK_P, warps, stages) likewise; with these SHORT_SPLIT_CASE's
#: batch of 3 is cut in splits of two samples and one (six output tiles, eight programs wanted on the CPU).
SMALL_WGRAD_TILING = (16, 16, 16, 1, 1)
SHORT_SPLIT_CASE = (3, 40, 24, 5, 7, True, 'both', torch.float32)
#: Two output-channel blocks and two K blocks of SMALL_TILING a group.
SMALL_TILES_GROUPED_CASE = (2, 60, 60, 5, 7, True, 'both', 'tf32', 3)
#: Cases run again with a per-sample branch scale (stochastic depth's factors, float32 as the blocks pass them;
#: a dropped sample's 0 among them): every dtype mode, without a skip path and with each form, grouped, a batch of
#: three split between programs.
BRANCH_CASES = [CASES[0], CASES[1], CASES[5], CASES[7], CASES[9], CASES[13], SHORT_SPLIT_CASE]
BRANCH_FACTORS = (1.25, 0.0, 0.5)


def rel_err(actual, expected) -> float:
    """Largest |error| relative to the largest |expected| (actual compared in expected's dtype)."""
    return float((actual.to(expected.dtype) - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def round_to_tf32(t):
    """float32 ``t`` (normal numbers) rounded to TF32's 10 mantissa bits, to nearest even: a formulation
    independent of the kernel's bit operations."""
    mantissa, exponent = torch.frexp(t.double())  # mantissa in [0.5, 1): 11 significant bits are 2048 steps
    return torch.ldexp(torch.round(mantissa * 2048) / 2048, exponent).float()


def relative_errors(case, branch=False):
    b, cin, cout, h, w, has_bias, skip, dtype = case[:8]
    groups = case[8] if len(case) > 8 else 1
    autocast, tf32 = dtype == 'autocast', dtype == 'tf32'
    dtype = torch.float32 if autocast or tf32 else dtype
    g = torch.Generator().manual_seed(cin * 10 + h)
    inputs = [torch.randn(b, cin, h, w, generator=g),
              torch.randn(cout, cin // groups, 1, 1, generator=g) * (cin // groups) ** -0.5,
              torch.randn(cout, generator=g) if has_bias else None,
              torch.randn(b, cout, h, w, generator=g) if skip else None,
              torch.randn(cout, generator=g) if skip in ('scale', 'both') else None,
              torch.randn(cout, generator=g) if skip in ('shift', 'both') else None]
    inputs = [None if t is None else t.to(dtype) for t in inputs]
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs]
    ref_leaves = [None if t is None else t.float().requires_grad_() for t in inputs]
    options = dict(groups=groups, branch_scale=torch.tensor(BRANCH_FACTORS[:b]) if branch else None)
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast('cpu', dtype=torch.float16, enabled=autocast):
            y = pointwise_conv2d(*leaves, impl='triton', **options)
            # the composition's, same autocast state
            expected_dtype = pointwise_conv2d_reference(*inputs, **options).dtype
    finally:
        torch.backends.cudnn.allow_tf32 = True
    y_ref = pointwise_conv2d_reference(*ref_leaves, **options)
    y_expected = y_ref.detach()
    dy = torch.randn(y.shape, generator=g).to(y.dtype)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, present, dy)
    ref_grads = list(torch.autograd.grad(y_ref, [t for t in ref_leaves if t is not None], dy.float()))
    if tf32 and tpc.BACKWARD == 'triton':
        # The output and dx are the TF32 forward kernel's, which rounds its x (dx: of dy, scaled by the branch
        # scale) to TF32 in registers; the interpreter's products are exact, so the weight gradient is too.
        with torch.no_grad():
            y_expected = pointwise_conv2d_reference(round_to_tf32(inputs[0]), *inputs[1:], **options)
            conv_dy = dy if not branch else dy * options['branch_scale'].view(-1, 1, 1, 1)
            ref_grads[0] = torch.nn.grad.conv2d_input(inputs[0].shape, inputs[1], round_to_tf32(conv_dy),
                                                      groups=groups)
    elif tf32:  # cuDNN's backward (exact on the CPU) of the unrounded inputs
        with torch.no_grad():
            y_expected = pointwise_conv2d_reference(round_to_tf32(inputs[0]), *inputs[1:], **options)
    assert y.dtype == expected_dtype, (y.dtype, expected_dtype)
    assert all(gr.dtype == leaf.dtype for gr, leaf in zip(grads, present))
    names = [name for name, t in zip(NAMES[1:], leaves) if t is not None]
    errors = [rel_err(a, e) for a, e in zip([y.detach()] + list(grads), [y_expected] + list(ref_grads))]
    return dict(zip(['y'] + names, errors))


def run_case(case, label='', branch=False):
    errors = relative_errors(case, branch)
    tol = TOL[case[7]]
    failed = [name for name, e in errors.items() if e > tol]
    dtype = case[7] if isinstance(case[7], str) else str(case[7])[6:]
    groups = f' groups {case[8]}' if len(case) > 8 else ''
    label += 'branch scale ' if branch else ''
    print(f'{label}{case[:7]} {dtype}{groups}', ' '.join(f'{name} {e:.1e}' for name, e in errors.items()),
          'FAIL ' + ','.join(failed) if failed else '', flush=True)
    return max(e / tol for e in errors.values()), not failed


def check_tf32_rounding():
    """The TF32 kernel's rounding of x against :func:`round_to_tf32`: random normal numbers over a wide range,
    ties (to even), and values that round up into the next binade; inf stays inf, NaN NaN, FLT_MAX overflows."""
    import triton
    import triton.language as tl

    @triton.jit
    def round_kernel(x_ptr, y_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        tl.store(y_ptr + offs, tpc._round_to_tf32(tl.load(x_ptr + offs)))

    g = torch.Generator().manual_seed(5)
    one_ulp = 2.0 ** -10
    ties = torch.tensor([1 + one_ulp / 2, 1 + 1.5 * one_ulp, -(1 + one_ulp / 2), 3 * (1 + 2.5 * one_ulp)])
    near_binade = torch.tensor([2 - one_ulp / 4, 2 - one_ulp / 2, 2 - one_ulp / 2 - 2.0 ** -20])
    values = torch.cat([torch.randn(1000, generator=g) * torch.exp2(torch.randint(-60, 60, (1000, ), generator=g)),
                        ties, near_binade]).float()
    n = triton.next_power_of_2(values.numel())
    x = torch.cat([values, torch.ones(n - values.numel())])
    y = torch.empty_like(x)
    round_kernel[(1, )](x, y, N=n)
    finite_ok = torch.equal(y[:values.numel()], round_to_tf32(values))
    specials = torch.tensor([float('inf'), float('-inf'), float('nan'), torch.finfo(torch.float32).max, 0.0, -0.0,
                             0.0, 0.0])
    out = torch.empty_like(specials)
    round_kernel[(1, )](specials, out, N=8)
    specials_ok = (out[0] == float('inf') and out[1] == float('-inf') and bool(out[2].isnan())
                   and out[3] == float('inf') and out[4] == 0 and out[5] == 0 and bool(out[5].signbit()))
    print('TF32 ROUNDING', 'ok' if finite_ok and specials_ok else f'FAIL finite {finite_ok} specials {out.tolist()}')
    return finite_ok and specials_ok


def check_backward_policy():
    """BACKWARD 'auto': cuDNN's backward for an ungrouped conv at 784 positions, the Triton backward at 196 and
    for a grouped conv at 784 (``triton_backward_is_faster``), each giving the reference's gradients."""
    calls, errors, triton_bwd, cudnn_bwd = [], [], tpc._pointwise_bwd, tpc._conv_grads_cudnn
    with mock.patch.multiple(tpc, BACKWARD='auto',
                             _pointwise_bwd=lambda *args: calls.append('triton') or triton_bwd(*args),
                             _conv_grads_cudnn=lambda *args: calls.append('cudnn') or cudnn_bwd(*args)):
        for size, groups in ((28, 1), (14, 1), (28, 2)):
            g = torch.Generator().manual_seed(size + groups)
            x = torch.randn(2, 4, size, size, generator=g, requires_grad=True)
            weight = torch.randn(6, 4 // groups, 1, 1, generator=g, requires_grad=True)
            dy = torch.randn(2, 6, size, size, generator=g)
            grads = torch.autograd.grad(pointwise_conv2d(x, weight, impl='triton', groups=groups), (x, weight), dy)
            ref = torch.autograd.grad(pointwise_conv2d_reference(x, weight, groups=groups), (x, weight), dy)
            errors += [rel_err(a, e) for a, e in zip(grads, ref)]
    ok = calls == ['cudnn', 'triton', 'triton'] and max(errors) <= 2e-3  # dx of dy rounded to TF32 (cuDNN's default)
    print(f'BACKWARD POLICY {"ok" if ok else "FAILED"}: {calls}, largest error {max(errors):.1e}')
    return ok


def check_conv_and_input():
    """pointwise_conv2d_and_input on the Triton path (the convolution's node adds the gradient of x's second use
    into dx in its dx kernel's epilogue) against the reference convolution with x used twice: gradients of x,
    weight and bias; float32 (exact products) and float16, the weight gradient from the Triton kernel or cuDNN's
    backward, and each output alone (the other's gradient None)."""
    ok = True
    for dtype, backward, uses in ((torch.float32, 'triton', 'both'), (torch.float16, 'triton', 'both'),
                                  (torch.float32, 'cudnn', 'both'), (torch.float32, 'triton', 'conv'),
                                  (torch.float32, 'triton', 'input')):
        g = torch.Generator().manual_seed(11)
        x = torch.randn(2, 24, 5, 7, generator=g).to(dtype)
        weight, bias = (torch.randn(10, 24, 1, 1, generator=g) * 0.3).to(dtype), torch.randn(10, generator=g).to(dtype)
        dy, dx_other = torch.randn(2, 10, 5, 7, generator=g).to(dtype), torch.randn(2, 24, 5, 7, generator=g).to(dtype)
        grads = []
        torch.backends.cudnn.allow_tf32 = False
        try:
            with mock.patch.object(tpc, 'BACKWARD', backward):
                for impl in ('triton', 'reference'):
                    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
                    y, x_again = pointwise_conv2d_and_input(*leaves, impl=impl)
                    if impl == 'triton':
                        assert type(x_again.grad_fn).__name__ == '_PointwiseConvAndInputBackward', x_again.grad_fn
                    else:
                        assert x_again is leaves[0]
                    grads.append(backward_through_two_uses(leaves, y, x_again, dy, dx_other, uses != 'input',
                                                           uses != 'conv'))
        finally:
            torch.backends.cudnn.allow_tf32 = True
        errors = [rel_err(a, e) for a, e in zip(*grads)]
        passed = max(errors) <= (2e-3 if dtype == torch.float16 else 1e-5)
        ok = ok and passed
        print(f'AND INPUT {str(dtype)[6:]} {backward} weight gradient, {uses}: dx {errors[0]:.1e} dweight '
              f'{errors[1]:.1e} dbias {errors[2]:.1e}{"" if passed else " FAIL"}', flush=True)
    return ok


def check_activation():
    """The activation epilogue (no gradient needed) against the reference's conv then activation, and with a
    gradient needed the composition (the kernel, then the torch activation) against the reference's gradients:
    exact GELU and SiLU, float32 (exact and TF32), float16, a grouped convolution."""
    ok = True
    for activation, dtype, tf32, groups in (('gelu', torch.float32, False, 1), ('silu', torch.float32, True, 1),
                                            ('gelu', torch.float16, False, 3)):
        g = torch.Generator().manual_seed(7)
        x = torch.randn(2, 24, 5, 7, generator=g).to(dtype)
        weight = (torch.randn(18, 24 // groups, 1, 1, generator=g) * 0.3).to(dtype)
        bias = torch.randn(18, generator=g).to(dtype)
        tol = 2e-3 if dtype == torch.float16 or tf32 else 1e-5  # TF32: dx of dy rounded to TF32 (exact products)
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            with torch.no_grad():
                y = pointwise_conv2d(x, weight, bias, impl='triton', groups=groups, activation=activation)
            x_ref = round_to_tf32(x) if tf32 else x.float()
            expected = pointwise_conv2d_reference(x_ref, weight.float(), bias.float(), groups=groups,
                                                  activation=activation)
            leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
            y_grad = pointwise_conv2d(*leaves, impl='triton', groups=groups, activation=activation)
            dy = torch.randn(y_grad.shape, generator=g).to(dtype)
            grads = torch.autograd.grad(y_grad, leaves, dy)
        finally:
            torch.backends.cudnn.allow_tf32 = True
        ref_leaves = [t.float().requires_grad_() for t in (x, weight, bias)]
        ref_grads = torch.autograd.grad(pointwise_conv2d_reference(*ref_leaves, groups=groups, activation=activation),
                                        ref_leaves, dy.float())
        errors = [rel_err(a, e) for a, e in
                  zip([y, y_grad.detach()] + list(grads), [expected, expected] + list(ref_grads))]
        passed = y.dtype == dtype and max(errors) <= tol
        ok = ok and passed
        print(f'ACTIVATION {activation} {str(dtype)[6:]}{" tf32" if tf32 else ""} groups {groups}: fused '
              f'{errors[0]:.1e}, with gradients y {errors[1]:.1e} dx {errors[2]:.1e} dweight {errors[3]:.1e} dbias '
              f'{errors[4]:.1e}{"" if passed else " FAIL"}', flush=True)
    return ok


def check_registration():
    """torch.library.opcheck of the custom ops (schema, fake tensors, autograd registration) and a torch.compile
    capture of forward + backward in one graph that matches eager."""
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 20, 3, 4, generator=g), torch.randn(6, 20, 1, 1, generator=g), \
        torch.randn(6, generator=g)
    skip, scale, shift = torch.randn(2, 6, 3, 4, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g)
    leaves = [t.requires_grad_() for t in (x, weight, bias, skip, scale, shift)]
    branch_scale = torch.tensor([1.25, 0.0])
    report = torch.library.opcheck(tpc._pointwise_fwd.op,
                                   leaves + [None, torch.float32, torch.float32, False, 1, 'none'])
    branch_report = torch.library.opcheck(tpc._pointwise_fwd.op,
                                          leaves + [branch_scale, torch.float32, torch.float32, False, 1, 'none'])
    grouped = [x, weight[:, :10].detach().clone().requires_grad_()] + leaves[2:]
    grouped_report = torch.library.opcheck(tpc._pointwise_fwd.op,
                                           grouped + [None, torch.float32, torch.float32, False, 2, 'none'])
    activation_report = torch.library.opcheck(
        tpc._pointwise_fwd.op, [t.detach() for t in leaves[:3]] + [None, None, None, None, torch.float32,
                                                                   torch.float32, False, 1, 'gelu'],
        test_utils=('test_schema', 'test_faketensor'))
    report = {**report, **{f'activation {k}': v for k, v in activation_report.items()}}
    report = {**report, **{f'groups 2 {k}': v for k, v in grouped_report.items()}}
    report = {**report, **{f'branch scale {k}': v for k, v in branch_report.items()}}
    dy = torch.randn(2, 6, 3, 4, generator=g)
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        for groups, w in ((1, weight), (2, grouped[1])):
            bwd_report = torch.library.opcheck(tpc._pointwise_bwd.op, [dy, x.detach(), w.detach(), torch.float32,
                                                                       False, groups, *needs])
            report = {**report, **{f'backward {needs} groups {groups} {k}': v for k, v in bwd_report.items()}}
    for args in ((dy, skip.detach(), scale.detach(), torch.float32), (dy, None, None, torch.float16),
                 (dy, None, scale.detach(), torch.float32, branch_scale)):
        sums_report = torch.library.opcheck(tpc._channel_grads.op, args)
        report = {**report, **{f'channel grads {k}': v for k, v in sums_report.items()}}
    ok = set(report.values()) == {'SUCCESS'}
    print('OPCHECK', 'ok' if ok else report)

    def loss(*tensors):
        return pointwise_conv2d(*tensors, impl='triton').square().sum()

    return compile_matches_eager(loss, leaves, atol=1e-5) and ok


def check_channel_grads():
    """The per-channel gradients' pass as autocast training runs it (float16 dy and skip, float32 LayerScale
    parameters): dskip = dy * scale in float16; the scale's, shift's and (dy in the convolution dtype) bias's
    gradients summed in float32, finite where a float16 sum over B x H x W (2 x 64 x 64 terms of 8) overflows;
    with the sums split between programs (a 64 x 64 map is 2 column chunks, the layout splits them). Then random
    values against torch, and the bias gradient of a dy that is not in the convolution dtype."""
    from types import SimpleNamespace
    dy = torch.full((2, 3, 64, 64), 8.0, dtype=torch.float16)
    skip = torch.ones(2, 3, 64, 64, dtype=torch.float16)
    scale = torch.tensor([0.5, 0.25, 2.0])
    ctx = SimpleNamespace(saved_tensors=(None, None, skip, scale, None), dtypes=(torch.float32, torch.float16,
                                                                           torch.float32),
                          needs_input_grad=(False, False, True, True, True, True), conv_dtype=torch.float16)
    grads = tpc._backward(ctx, dy)
    dbias, dskip, dscale, dshift = grads[2:6]
    total = torch.full((3, ), 8.0 * 2 * 64 * 64)
    ok = (grads[:2] == (None, None) and dskip.dtype == torch.float16
          and torch.equal(dskip, dy * scale.half().view(1, -1, 1, 1))
          and dscale.dtype == dshift.dtype == dbias.dtype == torch.float32
          and torch.equal(dscale, total) and torch.equal(dshift, total) and torch.equal(dbias, total)
          and bool(torch.isinf((dy * skip).sum((0, 2, 3))).all()))  # the float16 sum, for contrast
    # Random values, every combination of the optional parts, against torch.
    g = torch.Generator().manual_seed(5)
    dy, skip = torch.randn(3, 5, 7, 9, generator=g), torch.randn(3, 5, 7, 9, generator=g)
    scale, branch_scale = torch.randn(5, generator=g), torch.tensor([1.25, 0.0, 0.5])
    for with_skip in (False, True):
        for with_scale in (False, True):
            for with_branch in (False, True):
                dskip, dbranch, sums, weighted = tpc._channel_grads(dy, skip if with_skip else None,
                                                                    scale if with_scale else None, torch.float32,
                                                                    branch_scale if with_branch else None)
                sums = torch.cat([sums, (weighted if with_branch else sums[0])[None]])
                scaled_dy = dy * branch_scale.view(-1, 1, 1, 1) if with_branch else dy
                expected = torch.stack([dy.sum((0, 2, 3)), (dy * skip).sum((0, 2, 3)) if with_skip else
                                        torch.zeros(5), scaled_dy.sum((0, 2, 3))])
                ok = ok and torch.allclose(sums, expected, rtol=1e-5, atol=1e-5) and (
                    torch.equal(dskip, dy * scale.view(1, -1, 1, 1)) if with_scale else dskip.shape == (0, )) and (
                    torch.equal(dbranch, scaled_dy) if with_branch else dbranch.shape == (0, ))
    # The bias's gradient where dy is not in the convolution dtype (a float32 output under autocast): dy's sum
    # in that dtype, the same pass on the cast dy.
    expected = dy.to(torch.bfloat16).sum((0, 2, 3), dtype=torch.float32)
    ok = ok and torch.allclose(tpc.bias_grad(dy, torch.bfloat16), expected, rtol=1e-5, atol=1e-5)
    print('CHANNEL GRADS', 'ok' if ok else 'FAIL', flush=True)
    return ok


def autograd_nodes(outputs, name):
    """How many nodes of the autograd graph behind ``outputs`` are of class ``name``."""
    seen, stack = set(), [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return sum(type(n).__name__ == name for n in seen)


def check_model():
    """A small SparX-Mamba (a stage without and two with LayerScale, ganglion layers with DMCAs): the layer kernels
    (the blocks' residuals folded into their last 1x1 convs) and the float32 reference path, each against the
    model in float64, outputs and the input gradient, in eval mode and in training mode with and without
    stochastic depth (with it the layer kernels scale each sample's branch in the 1x1 conv's kernel, from the same
    draws as the reference path's DropPath; each block's norms take the skip path's gradient of x into their own
    backward pass, and each SS2D's x_proj the scan's gradient of its input, the autograd graph shows). The layer
    kernels pass within 4x the
    float32 reference's own error (or 1e-5): in training mode the input gradient at initialisation is
    ill-conditioned enough that float32 rounding alone moves it by ~5e-2."""
    from sparx_mm.models import SparXMamba
    arch = dict(depths=[1, 2, 2], dims=[8, 16, 24], ganglion_starts=[None, 0, 0], sr_ratios=[4, 2, 1])
    x = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    worst, ok = 0.0, True
    torch.backends.cudnn.allow_tf32 = False  # the exact float32 kernel (the TF32 one has its own cases)
    for mode, drop_path in (('eval', 0.0), ('train', 0.0), ('train', 0.2)):
        torch.manual_seed(0)
        model = SparXMamba(arch, drop_path_rate=drop_path).train(mode == 'train')
        model64 = SparXMamba(arch, drop_path_rate=drop_path).double().train(mode == 'train')
        model64.load_state_dict(model.state_dict())
        results = {}
        for name, net, impl in (('triton', model, 'triton'), ('float32', model, 'reference'),
                                ('float64', model64, 'reference')):
            os.environ['SPARX_LAYER_KERNELS'] = impl
            torch.manual_seed(2)  # the same stochastic-depth masks
            leaf = x.clone().to(next(net.parameters()).dtype).requires_grad_()
            feats = net(leaf)
            if name == 'triton':  # every block's two norms take x's skip-path gradient into their backward
                fused_norms = autograd_nodes(feats, '_GroupNormWithSkipBackward')
                fused_projections = autograd_nodes(feats, '_PointwiseConvAndInputBackward')
            sum(f.square().mean() for f in feats).backward()
            results[name] = [f.detach().double() for f in feats] + [leaf.grad.double()]
        os.environ.pop('SPARX_LAYER_KERNELS')
        errors = {name: [rel_err(a, e) for a, e in zip(results[name], results['float64'])]
                  for name in ('triton', 'float32')}
        out_err, grad_err = max(errors['triton'][:-1]), errors['triton'][-1]
        ref_out, ref_grad = max(errors['float32'][:-1]), errors['float32'][-1]
        scaled = max(out_err / max(4 * ref_out, 1e-5), grad_err / max(4 * ref_grad, 1e-5))
        passed = scaled <= 1 and fused_norms == 2 * sum(arch['depths']) and fused_projections == sum(arch['depths'])
        worst, ok = max(worst, scaled), ok and passed
        print(f'MODEL {mode} drop_path {drop_path}: vs float64, layer kernels outputs {out_err:.1e} input gradient '
              f'{grad_err:.1e}; float32 reference {ref_out:.1e} / {ref_grad:.1e}; {fused_norms} norms with the skip '
              f'gradient, {fused_projections} x_proj with the scan\'s{"" if passed else " FAIL"}', flush=True)
    return worst, ok


if __name__ == '__main__':
    tpc.BACKWARD = 'triton'  # the Triton backward everywhere ('auto' picks by map size)
    worst, ok = 0.0, True
    for case, branch in [(case, False) for case in CASES] + [(case, True) for case in BRANCH_CASES]:
        scaled, passed = run_case(case, branch=branch)
        worst, ok = max(worst, scaled), ok and passed
    tpc.TILING_OVERRIDE, tpc.WGRAD_TILING_OVERRIDE = SMALL_TILING, SMALL_WGRAD_TILING
    for case, branch in [(case, False) for case in CASES[:2] + CASES[5:6] + CASES[7:8]] + \
            [(SHORT_SPLIT_CASE, False), (SMALL_TILES_GROUPED_CASE, False), (SHORT_SPLIT_CASE, True)]:
        scaled, passed = run_case(case, label='small tiles ', branch=branch)
        worst, ok = max(worst, scaled), ok and passed
    tpc.TILING_OVERRIDE = tpc.WGRAD_TILING_OVERRIDE = None
    tpc.BACKWARD = 'cudnn'  # the convolution's own backward, kept to compare against
    for case, branch in [(case, False) for case in CASES[:1] + CASES[5:6] + CASES[12:13]] + [(CASES[5], True)]:
        scaled, passed = run_case(case, label='cudnn backward ', branch=branch)
        worst, ok = max(worst, scaled), ok and passed
    tpc.BACKWARD = 'triton'
    ok = check_activation() and ok
    ok = check_conv_and_input() and ok
    ok = check_backward_policy() and ok
    ok = check_tf32_rounding() and ok
    ok = check_channel_grads() and ok
    ok = check_registration() and ok
    scaled, passed = check_model()
    worst, ok = max(worst, scaled), ok and passed
    # The worst error as a fraction of its tolerance.
    print(f'WORST {worst:.3f} of tolerance')
    sys.exit(0 if ok else 1)
