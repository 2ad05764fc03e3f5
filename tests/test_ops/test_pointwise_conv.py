"""pointwise_conv2d: the reference against nn.Conv2d + LayerScale + add modules, the output-dtype rule under
autocast, stochastic depth's per-sample branch scale, input errors, the dispatch, and the Triton kernel under
Triton's CPU interpreter (with a small SparX-Mamba whose blocks fold their residuals into it)."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparx_mm.models.layers import DropPath, LayerScale, PointwiseConv, SkipPath
from sparx_mm.ops import add_skip_path, pointwise_conv2d, pointwise_conv2d_and_input, pointwise_conv2d_reference
from sparx_mm.ops.pointwise_conv import _dtypes

from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter


def _inputs(b=2, cin=4, cout=3, h=5, w=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(b, cin, h, w, generator=g, dtype=dtype),
                weight=torch.randn(cout, cin, 1, 1, generator=g, dtype=dtype),
                bias=torch.randn(cout, generator=g, dtype=dtype),
                skip=torch.randn(b, cout, h, w, generator=g, dtype=dtype),
                skip_scale=torch.randn(cout, generator=g, dtype=dtype),
                skip_shift=torch.randn(cout, generator=g, dtype=dtype))


@pytest.mark.parametrize('layer_scale', [False, True])
def test_reference_is_the_blocks_composition_bit_for_bit(layer_scale):
    """``LS(x) + conv(y)`` as the blocks wrote it before the fusion: the same float32 bits."""
    t = _inputs()
    conv = nn.Conv2d(4, 3, 1)
    ls = LayerScale(3, 0.5) if layer_scale else nn.Identity()
    with torch.no_grad():
        conv.weight.copy_(t['weight'])
        conv.bias.copy_(t['bias'])
        if layer_scale:
            ls.weight.copy_(t['skip_scale'].view(3, 1, 1, 1))
            ls.bias.copy_(t['skip_shift'])
    expected = ls(t['skip']) + conv(t['x'])
    skip = SkipPath.of(t['skip'], ls)
    assert torch.equal(pointwise_conv2d_reference(t['x'], conv.weight, conv.bias, *skip), expected)
    assert torch.equal(pointwise_conv2d(t['x'], conv.weight, conv.bias, *skip), expected)
    assert torch.equal(skip.add_to(conv(t['x'])), expected)
    module = PointwiseConv(4, 3)
    module.load_state_dict(conv.state_dict())  # the same parameters and keys as nn.Conv2d
    assert torch.equal(module(t['x'], skip), expected)
    assert torch.equal(module(t['x']), conv(t['x']))


@pytest.mark.parametrize('x_dtype', [torch.float32, torch.bfloat16])
def test_layer_scale_under_autocast_is_the_official_depthwise_conv(x_dtype):
    """The official LayerScale is ``F.conv2d(x, weight, bias, groups=C)``: under autocast its output has the
    autocast dtype whatever x's, and so LayerScale's, the reference skip path's and the fused operator's (the
    residual stream stays in the autocast dtype); the values equal the conv's up to one rounding."""
    t = _inputs(cin=3, dtype=x_dtype)
    ls = LayerScale(3)
    with torch.no_grad():
        ls.weight.copy_(t['skip_scale'].float().view(3, 1, 1, 1))
        ls.bias.copy_(t['skip_shift'].float())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        official = F.conv2d(t['skip'], ls.weight, ls.bias, groups=3)
        ours = ls(t['skip'])
        skip = SkipPath.of(t['skip'], ls)
        fused = pointwise_conv2d(t['x'], t['weight'].float(), t['bias'].float(), *skip)
        composed = F.conv2d(t['x'], t['weight'].float(), t['bias'].float()) + official
    assert official.dtype == ours.dtype == fused.dtype == composed.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), official.float(), rtol=8e-3, atol=8e-3)
    torch.testing.assert_close(fused.float(), composed.float(), rtol=2e-2, atol=2e-2)
    without = ls(t['skip'])  # outside autocast: x's dtype promoted with the float32 parameters
    assert without.dtype == torch.float32


@pytest.mark.parametrize('scale,shift', [(False, False), (True, False), (False, True), (True, True)])
def test_skip_path_forms(scale, shift):
    t = _inputs(dtype=torch.float64)
    s = t['skip_scale'] if scale else None
    b = t['skip_shift'] if shift else None
    expected = t['skip'] * (1 if s is None else s.view(1, -1, 1, 1)) + (0 if b is None else b.view(1, -1, 1, 1)) + \
        torch.nn.functional.conv2d(t['x'], t['weight'], t['bias'])
    y = pointwise_conv2d(t['x'], t['weight'], t['bias'], t['skip'], s, b)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(add_skip_path(y, t['skip'], s, b), expected + t['skip'] * (1 if s is None else s.view(
        1, -1, 1, 1)) + (0 if b is None else b.view(1, -1, 1, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('with_skip', [False, True])
def test_branch_scale_is_stochastic_depth_of_the_convolution(with_skip):
    """``LS(skip) + drop_path(conv(x))`` with DropPath's factors: the reference's composition, bit for bit in float64
    (the factors 0 and 1 / keep); SkipPath.add_to (the branches that cannot fold the sum) the same; the gradients
    of x and the parameters scaled per sample, the skip path's not."""
    t = {k: v.double().requires_grad_() for k, v in _inputs(b=3).items()}
    drop = DropPath(0.25).train()
    torch.manual_seed(3)
    factors = drop.sample_scale(3, torch.device('cpu'), torch.float64)
    assert set(factors.tolist()) <= {0.0, 1 / 0.75}
    factors = torch.tensor([1 / 0.75, 0.0, 1 / 0.75], dtype=torch.float64)  # both kinds, whatever the draws
    skip = (t['skip'], t['skip_scale'], t['skip_shift']) if with_skip else ()
    y = pointwise_conv2d(t['x'], t['weight'], t['bias'], *skip, branch_scale=factors)
    conv = F.conv2d(t['x'], t['weight'], t['bias'])
    expected = conv * factors.view(-1, 1, 1, 1)
    if with_skip:
        expected = t['skip'] * t['skip_scale'].view(1, -1, 1, 1) + t['skip_shift'].view(1, -1, 1, 1) + expected
        assert torch.equal(SkipPath(*skip, branch_scale=factors).add_to(conv), expected)
    assert torch.equal(y, expected)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [t['x'], t['weight']] + list(skip), dy)
    expected_grads = torch.autograd.grad(conv, [t['x'], t['weight']], dy * factors.view(-1, 1, 1, 1))
    torch.testing.assert_close(grads[:2], expected_grads, rtol=1e-12, atol=1e-12)
    assert torch.equal(grads[0][1], torch.zeros_like(grads[0][1]))  # the dropped sample's input takes nothing
    if with_skip:
        torch.testing.assert_close(grads[2], dy * t['skip_scale'].view(1, -1, 1, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('x_dtype,skip_dtype,with_scale,expected', [
    (torch.float32, None, False, torch.bfloat16),  # no skip: the convolution's (autocast) dtype
    (torch.bfloat16, torch.bfloat16, False, torch.bfloat16),
    # LayerScale's scale and shift (float32) as the official depthwise 1x1 conv's parameters: the autocast dtype
    (torch.bfloat16, torch.bfloat16, True, torch.bfloat16),
    (torch.float32, torch.float32, True, torch.bfloat16),
    (torch.bfloat16, torch.float32, False, torch.float32),
    (torch.float64, torch.float64, True, torch.float64)])
def test_output_dtype_rule_under_autocast(x_dtype, skip_dtype, with_scale, expected):
    t = _inputs(dtype=x_dtype)
    weight, bias = (t['weight'], t['bias']) if x_dtype == torch.float64 else (t['weight'].float(), t['bias'].float())
    skip = None if skip_dtype is None else t['skip'].to(skip_dtype)
    scale, shift = (t['skip_scale'].float(), t['skip_shift'].float()) if with_scale else (None, None)
    if x_dtype == torch.float64 and with_scale:
        scale, shift = scale.double(), shift.double()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = pointwise_conv2d(t['x'], weight, bias, skip, scale, shift)
        assert y.dtype == expected == _dtypes(t['x'], skip, scale, shift)[1]
        assert torch.equal(y, pointwise_conv2d_reference(t['x'], weight, bias, skip, scale, shift))


@pytest.mark.parametrize('change,error,match', [
    (dict(x=torch.zeros(3, 5, 6)), ValueError, r'x must be a 4-D tensor \(B, Cin, H, W\), got \(3, 5, 6\)'),
    (dict(x=torch.zeros(2, 4, 5, 6, dtype=torch.int64)), TypeError, 'x must be a floating-point tensor'),
    (dict(weight=torch.zeros(3, 4, 3, 3)), ValueError, r'weight must be a 1x1 kernel \(Cout, Cin / groups, 1, 1\), '
                                                       r'got \(3, 4, 3, 3\)'),
    (dict(weight=torch.zeros(3, 4)), ValueError, r'weight must be a 1x1 kernel'),
    (dict(weight=torch.zeros(3, 5, 1, 1)), ValueError, r'weight takes 5 input channels .* but x has 4'),
    (dict(groups=0), ValueError, 'groups must be a positive int, got 0'),
    (dict(activation='relu'), ValueError, r"unknown activation 'relu'; choose one of \(None, 'gelu', 'silu'\)"),
    (dict(activation='gelu'), ValueError, r"an activation \('gelu'\) applies to the convolution without a skip path"),
    (dict(groups=2.0), ValueError, 'groups must be a positive int, got 2.0'),
    (dict(groups=2), ValueError, r'weight takes 4 input channels a group \(shape \(3, 4, 1, 1\), groups=2\) but x '
                                 r'has 4'),
    (dict(weight=torch.zeros(3, 2, 1, 1), groups=2), ValueError,
     r'the output channels \(weight \(3, 2, 1, 1\)\) must be a multiple of groups=2'),
    (dict(bias=torch.zeros(4)), ValueError, r'bias must be None or a \(Cout,\) = \(3,\) tensor, got \(4,\)'),
    (dict(skip=torch.zeros(2, 4, 5, 6)), ValueError, r"skip must be the output's shape \(B, Cout, H, W\) = "
                                                     r"\(2, 3, 5, 6\), got \(2, 4, 5, 6\)"),
    (dict(skip=torch.zeros(2, 3, 5, 6, dtype=torch.int32)), TypeError, 'skip must be a floating-point tensor'),
    (dict(skip=None), ValueError, 'skip_scale / skip_shift scale and shift the skip path; pass skip too'),
    (dict(skip_scale=torch.zeros(3, 1, 1, 1)), ValueError, r'skip_scale must be None or a \(Cout,\) = \(3,\) '
                                                           r'tensor, got \(3, 1, 1, 1\)'),
    (dict(skip_shift=torch.zeros(2)), ValueError, r'skip_shift must be None or a \(Cout,\)'),
    (dict(weight=torch.zeros(3, 4, 1, 1, dtype=torch.float16)), TypeError,
     'weight is torch.float16 but x is torch.float32; without autocast they must match'),
    (dict(skip=torch.zeros(2, 3, 5, 6, device='meta')), ValueError, 'skip is on meta but x is on cpu'),
    (dict(branch_scale=torch.ones(3)), ValueError, r'branch_scale must be a \(B,\) = \(2,\) tensor, one factor a '
                                                   r'sample, got \(3,\)'),
    (dict(branch_scale=torch.ones(2, 1, 1, 1)), ValueError, r'branch_scale must be a \(B,\) = \(2,\) tensor'),
    (dict(branch_scale=[1.0, 0.0]), ValueError, r'branch_scale must be a \(B,\) = \(2,\) tensor, one factor a '
                                                r'sample, got list'),
    (dict(branch_scale=torch.ones(2, dtype=torch.int64)), TypeError,
     'branch_scale must be a floating-point tensor, got torch.int64'),
    (dict(branch_scale=torch.ones(2, requires_grad=True)), ValueError,
     "branch_scale is a constant .* takes no gradient; pass it detached"),
    (dict(branch_scale=torch.ones(2), skip=None, skip_scale=None, skip_shift=None, activation='silu'), ValueError,
     r"branch_scale scales the convolution before a skip path is added; it does not combine with an activation"),
    (dict(branch_scale=torch.ones(2, device='meta')), ValueError, 'branch_scale is on meta but x is on cpu'),
])
@pytest.mark.parametrize('fn', [pointwise_conv2d, pointwise_conv2d_reference])
def test_bad_inputs(fn, change, error, match):
    kwargs = _inputs()
    kwargs.update(change)
    with pytest.raises(error, match=match):
        fn(**kwargs)


def test_forcing_triton_on_cpu_tensors_is_a_clear_error(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    t = _inputs()
    with pytest.raises(RuntimeError, match="pointwise_conv2d: 'triton' .*needs CUDA tensors.* got a cpu tensor"):
        pointwise_conv2d(**t, impl='triton')
    from sparx_mm.ops.triton_pointwise_conv import pointwise_conv2d_triton  # triton comes with torch
    with pytest.raises(RuntimeError, match='pointwise_conv2d_triton needs CUDA tensors'):
        pointwise_conv2d_triton(*t.values(), None, torch.float32, torch.float32)


def test_forcing_triton_for_float64_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')  # lets CPU tensors past the device check
    with pytest.raises(TypeError, match=r"'triton' \(from the impl argument\) .* got torch.float64; use 'reference'"):
        pointwise_conv2d(**_inputs(dtype=torch.float64), impl='triton')


@pytest.mark.parametrize('dtype,impl,autocast,size,expected', [
    (torch.float32, None, False, 16, ('triton', torch.float32, torch.float32)),
    (torch.float16, None, False, 32, ('triton', torch.float16, torch.float16)),
    (torch.float32, None, True, 32, ('triton', torch.bfloat16, torch.bfloat16)),  # scaled skip path: autocast's
    (torch.float32, None, False, 7, 'reference'),  # small maps: cuDNN measured faster
    (torch.float16, None, False, 14, ('triton', torch.float16, torch.float16)),  # 196 positions, skip path
    (torch.float16, 'triton', False, 7, ('triton', torch.float16, torch.float16)),  # forced: everywhere
    (torch.float64, None, False, 32, 'reference'), (torch.float32, 'reference', False, 32, 'reference')])
def test_dispatch_where_triton_runs(dtype, impl, autocast, size, expected, monkeypatch):
    """With triton usable (as for CUDA tensors): the Triton kernel with the conv and output dtypes of the rule
    where it measured faster than cuDNN (or when forced), unless the inputs are float64 or the reference is asked
    for."""
    from sparx_mm.ops import triton_pointwise_conv
    calls = intercept_triton(monkeypatch, triton_pointwise_conv, 'pointwise_conv2d_triton')
    t = _inputs(dtype=dtype, h=size, w=size)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        if expected == 'reference':
            assert torch.equal(pointwise_conv2d(**t, impl=impl), pointwise_conv2d_reference(**t))
            return
        with pytest.raises(TritonCalled):
            pointwise_conv2d(**t, impl=impl)
    assert ('triton', ) + calls[0][7:9] == expected


@pytest.mark.parametrize('activation', ['gelu', 'silu'])
def test_activation_runs_in_the_kernel_only_without_gradients(activation, monkeypatch):
    """The reference is the convolution then the activation; where triton is usable the kernel takes the activation
    when no gradient is needed, and runs without it (the activation composed after) when one is."""
    t = _inputs()
    conv_only = dict(x=t['x'], weight=t['weight'], bias=t['bias'])
    expected = nn.GELU()(F.conv2d(t['x'], t['weight'], t['bias'])) if activation == 'gelu' else \
        nn.SiLU()(F.conv2d(t['x'], t['weight'], t['bias']))
    assert torch.equal(pointwise_conv2d(**conv_only, activation=activation), expected)
    from sparx_mm.ops import triton_pointwise_conv
    calls = intercept_triton(monkeypatch, triton_pointwise_conv, 'pointwise_conv2d_triton')
    big = _inputs(h=16, w=16)  # a map where the automatic choice is the kernel
    with torch.no_grad(), pytest.raises(TritonCalled):
        pointwise_conv2d(big['x'], big['weight'], big['bias'], activation=activation)
    with pytest.raises(TritonCalled):
        pointwise_conv2d(big['x'].requires_grad_(), big['weight'], big['bias'], activation=activation)
    assert calls[0][-1] == activation and len(calls[1]) == 10 and calls[1][3] is None


def test_grouped_convolution_dispatch_and_module(monkeypatch):
    """PointwiseConv(groups=3) is nn.Conv2d(groups=3) on the reference path, bit for bit, with its parameter
    shapes; with triton usable its groups reach the Triton entry point."""
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 9, 1, groups=3)
    layer = PointwiseConv(12, 9, groups=3)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(2, 12, 5, 6)
    assert torch.equal(layer(x), conv(x))
    assert torch.equal(pointwise_conv2d_reference(x, conv.weight, conv.bias, groups=3), conv(x))
    from sparx_mm.ops import triton_pointwise_conv
    calls = intercept_triton(monkeypatch, triton_pointwise_conv, 'pointwise_conv2d_triton')
    with pytest.raises(TritonCalled):
        layer(torch.randn(2, 12, 16, 16))
    assert calls[0][9] == 3


def test_conv_and_input_on_the_reference_path_and_its_dispatch(monkeypatch):
    """pointwise_conv2d_and_input is (the convolution, x itself) on the reference path, takes the checks of
    pointwise_conv2d, and reaches its Triton entry point with the conv and output dtypes of the rule (16 x 16: a map
    where the automatic choice is the kernel)."""
    t = _inputs()
    y, x_again = pointwise_conv2d_and_input(t['x'], t['weight'], t['bias'])
    assert x_again is t['x'] and torch.equal(y, F.conv2d(t['x'], t['weight'], t['bias']))
    with pytest.raises(ValueError, match=r'weight takes 4 input channels a group .* but x has 3'):
        pointwise_conv2d_and_input(t['x'][:, :3], t['weight'])
    from sparx_mm.ops import triton_pointwise_conv
    calls = intercept_triton(monkeypatch, triton_pointwise_conv, 'pointwise_conv2d_and_input_triton')
    big = _inputs(h=16, w=16, dtype=torch.float16)
    with pytest.raises(TritonCalled):
        pointwise_conv2d_and_input(big['x'], big['weight'])
    assert calls[0][0] is big['x'] and calls[0][2:] == (None, torch.float16, torch.float16)


@pytest.mark.parametrize('positions,expected', [(3136, True), (784, True), (196, True), (128, True), (127, False),
                                                (49, False)])
def test_size_policy_follows_the_measurements(positions, expected):
    from sparx_mm.ops.pointwise_conv import triton_is_faster
    assert triton_is_faster(positions) is expected


@pytest.mark.parametrize('cin,cout,positions,dtype,expected', [
    (396, 792, 196, torch.float16, (128, 64, 32, 4, 3)),    # to at most 4x more channels: 64 wide on cin
    (792, 396, 196, torch.float16, (64, 128, 32, 4, 3)),    # to fewer: 64 wide on cout
    (396, 264, 196, torch.bfloat16, (64, 128, 32, 4, 3)),   # a DMCA fusion conv's group
    (1584, 396, 196, torch.float16, (128, 128, 32, 4, 3)),  # to 4x fewer: 32-position chunks, full tile
    (396, 1584, 196, torch.float16, (128, 128, 64, 8, 3)),  # to 4x more: the default
    (120, 80, 3136, torch.float16, (64, 64, 64, 4, 3)),     # small groups on large maps
    (480, 120, 3136, torch.float16, (128, 128, 64, 8, 3)),
    (396, 792, 196, torch.float32, (128, 128, 32, 8, 3)),   # float32: the default
])
def test_weight_gradient_tiling_follows_the_sweep(cin, cout, positions, dtype, expected):
    """wgrad_tiling's rules: the H100 sweep's choices (its docstring) by position count, channel ratio and dtype."""
    from sparx_mm.ops import triton_pointwise_conv as tpc
    assert tpc.wgrad_tiling(cin, cout, positions, dtype) == expected


@pytest.mark.parametrize('positions,expected', [(196, (128, 128, 32, 4, 3)), (3136, (128, 128, 64, 4, 3)),
                                                (49, (128, 64, 64, 8, 3))])
def test_16_bit_forward_tiling_takes_32_channel_chunks_at_128_to_511_positions(positions, expected):
    from sparx_mm.ops import triton_pointwise_conv as tpc
    for dtype in (torch.float16, torch.bfloat16):
        assert tpc.tiling(396, 792, positions, dtype) == expected


@pytest.mark.parametrize('batch,h,w,groups', [(2 ** 16, 256, 128, 1), (2, 4, 4, 2 ** 16)])
def test_launches_beyond_the_kernels_indexing_are_a_clear_error(batch, h, w, groups):
    """The kernels count (sample, position) pairs in int32 (position tiles run on across samples) and put the
    groups on a grid axis of at most 65535: larger launches are refused before anything is allocated (meta
    tensors here), forward and weight gradient alike."""
    from sparx_mm.ops import triton_pointwise_conv as tpc
    x = torch.empty(batch, 2 * groups, h, w, device='meta', dtype=torch.float16)
    weight = torch.empty(2 * groups, 2, device='meta', dtype=torch.float16)
    match = (rf'{batch} samples of {h} x {w} positions \({groups} group\(s\)\) exceed the kernels\' 2\*\*31 - 1 '
             r'sample-positions or 65535 groups; split the batch')
    with pytest.raises(ValueError, match=match):
        tpc._launch(x, weight, None, None, None, None, x, torch.float16, False, groups)
    with pytest.raises(ValueError, match=match):
        tpc._launch_wgrad(x, x, torch.float16, False, groups)


def test_triton_kernel_matches_the_reference_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_pointwise_conv_cases.py', 900)
    assert float(re.search(r'WORST (\S+) of tolerance', stdout).group(1)) <= 1, stdout
    assert 'OPCHECK ok' in stdout and 'COMPILE graphs 1 breaks 0 matches eager' in stdout, stdout
    assert stdout.count('small tiles') == 7, stdout
    assert stdout.count('cudnn backward') == 4, stdout
    assert stdout.count('groups 3') == 8, stdout  # 7 cases and an activation case
    assert stdout.count('branch scale') == 9, stdout  # 7 cases, one with small tiles, one with cuDNN's backward
    assert stdout.count('MODEL ') == 3, stdout
    # five blocks: two norms each take x's skip-path gradient, each SS2D's x_proj the scan's gradient of x
    assert stdout.count('; 10 norms with the skip gradient, 5 x_proj with the scan') == 3, stdout
    assert stdout.count('AND INPUT ') == 5, stdout
    assert 'TF32 ROUNDING ok' in stdout, stdout
    assert stdout.count('ACTIVATION ') == 3, stdout
    assert "BACKWARD POLICY ok: ['cudnn', 'triton', 'triton']" in stdout, stdout
    # The per-channel gradients' pass: float16 skip-path gradients, float32 sums past float16's range.
    assert 'CHANNEL GRADS ok' in stdout, stdout
    # 15 cases and 7 with a branch scale, 7 small-tile cases, 4 with cuDNN's backward, 3 activations, 5 with x's
    # second use, the backward policy, rounding, channel grads, opcheck, compile, 3 models, summary
    assert stdout.count('\n') == 50, stdout


@pytest.mark.parametrize('value,expected', [('', 'auto'), ('auto', 'auto'), ('triton', 'triton'),
                                            (' cudnn ', 'cudnn'), ('cuDNN', None), ('torch', None)])
def test_the_backward_switch_accepts_auto_triton_and_cudnn_only(monkeypatch, value, expected):
    from sparx_mm.ops import triton_pointwise_conv
    monkeypatch.setenv('SPARX_POINTWISE_BACKWARD', value)
    if expected is None:
        with pytest.raises(ValueError, match=r"SPARX_POINTWISE_BACKWARD='.*': accepted are auto .* triton .* and "
                                             r"cudnn"):
            triton_pointwise_conv._backward_by_environment()
    else:
        assert triton_pointwise_conv._backward_by_environment() == expected


@pytest.mark.parametrize('positions,groups,expected', [(3136, 1, False), (784, 1, False), (196, 1, True),
                                                       (49, 1, True), (3136, 3, True), (784, 3, True)])
def test_backward_policy_follows_the_measurements(positions, groups, expected):
    from sparx_mm.ops.triton_pointwise_conv import triton_backward_is_faster
    assert triton_backward_is_faster(positions, groups) is expected


@pytest.mark.parametrize('cin,cout,h,w,with_bias', [(16, 24, 7, 7, True), (13, 21, 7, 5, True), (37, 8, 1, 1, False),
                                                    (8, 70, 3, 4, False)])
def test_conv1x1_on_rows_is_the_convolution(cin, cout, h, w, with_bias):
    """The rows GEMM (channels padded to multiples of 8 where they are not) gives F.conv2d's output and gradients,
    NCHW-contiguous, in float32, and within bfloat16 rounding in bfloat16."""
    from sparx_mm.ops.pointwise_conv import conv1x1_on_rows
    t = _inputs(cin=cin, cout=cout, h=h, w=w, seed=cin)
    leaves = [t['x'], t['weight'], t['bias'] if with_bias else None]
    grads = []
    for fn in (conv1x1_on_rows, F.conv2d):
        args = [None if a is None else a.clone().requires_grad_() for a in leaves]
        y = fn(*args)
        y.backward(torch.arange(y.numel(), dtype=y.dtype).view_as(y).sin())
        grads.append([y.detach()] + [a.grad for a in args if a is not None])
    assert grads[0][0].is_contiguous() and grads[0][0].shape == (2, cout, h, w)
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    half = [None if a is None else a.bfloat16() for a in leaves]
    torch.testing.assert_close(conv1x1_on_rows(*half).float(), F.conv2d(*half).float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('autocast,grad,size,groups,impl,expected', [
    (True, True, 7, 1, None, True),                   # 16-bit training step on a small map
    (True, False, 7, 1, None, False),                 # inference keeps cuDNN
    (False, True, 7, 1, None, False),                 # float32 keeps cuDNN (TF32 as cudnn.allow_tf32 says)
    (True, True, 16, 1, None, False),                 # the Triton kernel's maps
    (True, True, 7, 3, None, False),                  # grouped
    (True, True, 7, 1, 'reference', False),           # forced reference: F.conv2d
])
def test_the_rows_gemm_runs_in_16_bit_training_steps_on_small_maps(autocast, grad, size, groups, impl, expected,
                                                                  monkeypatch):
    """gemm_on_rows_pays on a GPU (CUDA stood in for): 16-bit convolutions (here CPU autocast's bfloat16) with a
    gradient to follow, where the Triton kernel does not run, one group, the automatic choice; and
    pointwise_conv2d then runs conv1x1_on_rows, its skip path and gradients as the reference's."""
    from sparx_mm.ops import gpu_backends
    from sparx_mm.ops import pointwise_conv as pc
    monkeypatch.delenv(gpu_backends.LAYER_KERNELS_ENV, raising=False)
    monkeypatch.setattr(gpu_backends, 'triton_usable', lambda x: False)
    t = _inputs(cin=12, cout=6, h=size, w=size)
    weight = t['weight'][:, :12 // groups].clone().requires_grad_(grad)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        assert not pc.gemm_on_rows_pays(t['x'], weight, t['bias'], groups, impl)  # a CPU tensor: never
        monkeypatch.setattr(pc, '_on_cuda', lambda x: True)
        assert pc.gemm_on_rows_pays(t['x'], weight, t['bias'], groups, impl) is expected
        calls = []
        monkeypatch.setattr(pc, 'conv1x1_on_rows', lambda *a: calls.append(a) or F.conv2d(*a))
        skip = {k: t[k] for k in ('skip', 'skip_scale', 'skip_shift')} if groups == 1 else {}
        y = pointwise_conv2d(t['x'], weight, t['bias'], **skip, groups=groups, impl=impl)
        assert torch.equal(y, pointwise_conv2d_reference(t['x'], weight, t['bias'], **skip, groups=groups))
    assert len(calls) == (1 if expected else 0)
    monkeypatch.setenv(gpu_backends.LAYER_KERNELS_ENV, 'reference')
    assert not pc.gemm_on_rows_pays(t['x'], weight, t['bias'], groups, None)
