"""depthwise_conv2d_act: the reference against nn.Conv2d + add + activation modules, the output-dtype rule
under autocast, input errors, the dispatch, and the Triton kernels under Triton's CPU interpreter."""
import re

import pytest
import torch
from torch import nn

from sparx_mm.ops import depthwise_conv2d_act, depthwise_conv2d_act_reference, gpu_backends
from sparx_mm.ops.depthwise_conv import _output_dtype

from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter


def _inputs(b=2, c=3, h=5, w=6, k=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g, dtype=dtype), torch.randn(c, 1, k, k, generator=g, dtype=dtype),
            torch.randn(c, generator=g, dtype=dtype))


@pytest.mark.parametrize('residual', [False, True])
@pytest.mark.parametrize('activation,module', [(None, nn.Identity), ('gelu', nn.GELU), ('silu', nn.SiLU)])
@pytest.mark.parametrize('k,has_bias', [(3, False), (5, True), (7, True)])
def test_reference_equals_the_module_composition(residual, activation, module, k, has_bias):
    x, weight, bias = _inputs(k=k, dtype=torch.float64)
    conv = nn.Conv2d(3, 3, k, padding=k // 2, groups=3, bias=has_bias).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
        if has_bias:
            conv.bias.copy_(bias)
    expected = module()(x + conv(x) if residual else conv(x))
    y = depthwise_conv2d_act_reference(x, weight, bias if has_bias else None, residual, activation)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(depthwise_conv2d_act(x, weight, bias if has_bias else None, residual, activation), y)


@pytest.mark.parametrize('stride,k,activation', [(2, 3, None), (4, 5, 'gelu'), (3, 3, 'silu')])
def test_stride_samples_the_same_convolution(stride, k, activation):
    """stride s: conv2d(stride=s, padding=k // 2), i.e. the stride-1 output at every s-th row and column
    (maps that s does not divide included), in both implementations."""
    x, weight, bias = _inputs(c=4, h=9, w=7, k=k, dtype=torch.float64)
    y = depthwise_conv2d_act_reference(x, weight, bias, False, activation, stride)
    full = depthwise_conv2d_act_reference(x, weight, bias, False, activation)
    assert y.shape == (2, 4, -(-9 // stride), -(-7 // stride))
    torch.testing.assert_close(y, full[:, :, ::stride, ::stride], rtol=1e-12, atol=1e-12)
    conv = nn.Conv2d(4, 4, k, stride=stride, padding=k // 2, groups=4).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        torch.testing.assert_close(y, {None: nn.Identity(), 'gelu': nn.GELU(), 'silu': nn.SiLU()}[activation](
            conv(x)), rtol=1e-12, atol=1e-12)
    assert torch.equal(depthwise_conv2d_act(x, weight, bias, False, activation, stride=stride), y)


@pytest.mark.parametrize('x_dtype,residual,expected', [
    (torch.float32, False, torch.bfloat16), (torch.float32, True, torch.float32),
    (torch.bfloat16, False, torch.bfloat16), (torch.bfloat16, True, torch.bfloat16),
    (torch.float64, True, torch.float64)])
def test_output_dtype_rule_under_autocast(x_dtype, residual, expected):
    """The convolution runs in the autocast dtype (float64 is left alone) and the residual add promotes."""
    x, weight, bias = _inputs(dtype=x_dtype)
    if x_dtype != torch.float64:  # float32 parameters, as in mixed-precision training
        weight, bias = weight.float(), bias.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = depthwise_conv2d_act(x, weight, bias, residual, 'gelu')
        assert y.dtype == expected == _output_dtype(x, residual)
        assert torch.equal(y, depthwise_conv2d_act_reference(x, weight, bias, residual, 'gelu'))
    assert _output_dtype(x, residual) == x_dtype  # without autocast: x's dtype


@pytest.mark.parametrize('change,error,match', [
    (dict(x=torch.zeros(3, 5, 6)), ValueError, r'x must be a 4-D tensor \(B, C, H, W\), got \(3, 5, 6\)'),
    (dict(x=torch.zeros(2, 3, 5, 6, dtype=torch.int64)), TypeError, 'x must be a floating-point tensor'),
    (dict(weight=torch.zeros(3, 3, 3)), ValueError,
     r'weight must be a depthwise kernel \(C, 1, k, k\) = \(3, 1, k, k\), got \(3, 3, 3\)'),
    (dict(weight=torch.zeros(3, 2, 3, 3)), ValueError, r'weight must be a depthwise kernel'),
    (dict(weight=torch.zeros(3, 1, 3, 5)), ValueError, r'got \(3, 1, 3, 5\)'),
    (dict(weight=torch.zeros(4, 1, 3, 3)), ValueError, r'weight has 4 channels .* but x has 3'),
    (dict(weight=torch.zeros(3, 1, 4, 4)), ValueError, r'kernel size k must be odd .* got k=4'),
    (dict(weight=torch.zeros(3, 1, 11, 11)), ValueError, r'at most 9, got k=11'),
    (dict(bias=torch.zeros(4)), ValueError, r'bias must be None or a \(3,\) tensor, got \(4,\)'),
    (dict(residual=torch.zeros(2, 3, 5, 6)), TypeError, 'residual must be a bool .* got Tensor'),
    (dict(activation='relu'), ValueError, r"unknown activation 'relu'; choose one of \(None, 'gelu', 'silu'\)"),
    (dict(stride=0), ValueError, 'stride must be an int >= 1, got 0'),
    (dict(stride=2.0), ValueError, 'stride must be an int >= 1, got 2.0'),
    (dict(stride=2, residual=True), ValueError, 'residual=True needs stride 1 .* got stride 2'),
    (dict(weight=torch.zeros(3, 1, 3, 3, dtype=torch.float16)), TypeError,
     'weight is torch.float16 but x is torch.float32; without autocast they must match'),
])
@pytest.mark.parametrize('fn', [depthwise_conv2d_act, depthwise_conv2d_act_reference])
def test_bad_inputs(fn, change, error, match):
    x, weight, bias = _inputs()
    kwargs = dict(x=x, weight=weight, bias=bias, residual=False, activation=None)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        fn(**kwargs)


def test_unknown_implementation_is_a_clear_error(monkeypatch):
    x, weight, _ = _inputs()
    with pytest.raises(ValueError, match=r"unknown layer-kernel implementation 'cuda' \(from the impl argument\)"):
        depthwise_conv2d_act(x, weight, impl='cuda')
    monkeypatch.setenv(gpu_backends.LAYER_KERNELS_ENV, 'fast')
    with pytest.raises(ValueError, match=f"'fast' .*{gpu_backends.LAYER_KERNELS_ENV}.*'triton', 'reference'"):
        depthwise_conv2d_act(x, weight)


def test_forcing_triton_on_cpu_tensors_is_a_clear_error(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    x, weight, bias = _inputs()
    with pytest.raises(RuntimeError, match="'triton' .*needs CUDA tensors.* got a cpu tensor"):
        depthwise_conv2d_act(x, weight, bias, impl='triton')
    monkeypatch.setenv(gpu_backends.LAYER_KERNELS_ENV, 'triton')
    with pytest.raises(RuntimeError, match="'triton' .*needs CUDA tensors.* got a cpu tensor"):
        depthwise_conv2d_act(x, weight, bias)
    from sparx_mm.ops.triton_depthwise_conv import depthwise_conv2d_act_triton  # triton comes with torch
    with pytest.raises(RuntimeError, match='depthwise_conv2d_act_triton needs CUDA tensors'):
        depthwise_conv2d_act_triton(x, weight, bias, False, None, torch.float32)


def test_forcing_triton_for_float64_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')  # lets CPU tensors past the device check
    x, weight, bias = _inputs(dtype=torch.float64)
    with pytest.raises(TypeError, match=r"'triton' \(from the impl argument\) .* got torch.float64; use 'reference'"):
        depthwise_conv2d_act(x, weight, bias, impl='triton')


@pytest.mark.parametrize('dtype,impl,expected', [
    (torch.float32, None, 'triton'), (torch.float16, None, 'triton'), (torch.bfloat16, None, 'triton'),
    (torch.float64, None, 'reference'), (torch.float32, 'reference', 'reference')])
def test_dispatch_where_triton_runs(dtype, impl, expected, monkeypatch):
    """With triton usable (as for CUDA tensors): the Triton kernels, with the output dtype of the rule, unless
    the inputs are float64 or the reference is asked for."""
    from sparx_mm.ops import triton_depthwise_conv
    calls = intercept_triton(monkeypatch, triton_depthwise_conv, 'depthwise_conv2d_act_triton')
    x, weight, bias = _inputs(dtype=dtype)
    if expected == 'triton':
        with pytest.raises(TritonCalled):
            depthwise_conv2d_act(x, weight, bias, True, 'gelu', impl=impl)
        assert calls[0][3:] == (True, 'gelu', dtype, 1)
    else:
        y = depthwise_conv2d_act(x, weight, bias, True, 'gelu', impl=impl)
        assert torch.equal(y, depthwise_conv2d_act_reference(x, weight, bias, True, 'gelu'))


def test_triton_kernels_match_the_reference_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_depthwise_conv_cases.py', 600)
    assert float(re.search(r'WORST (\S+) of tolerance', stdout).group(1)) <= 1, stdout
    assert 'OPCHECK ok' in stdout and 'COMPILE graphs 1 breaks 0 matches eager' in stdout, stdout
    assert stdout.count('small tiles') == 3 and stdout.count('stride ') == 8, stdout
    assert stdout.count('\n') == 24, stdout  # 13 cases, 5 strided, 3 small-tile cases, opcheck, compile, summary
