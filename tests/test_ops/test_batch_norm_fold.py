"""fold_batch_norm: the folded convolution against the convolution followed by an inference-mode BatchNorm, input
errors, the dispatch (gradients take the reference), and the Triton kernel under Triton's CPU interpreter."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparx_mm.ops import fold_batch_norm, fold_batch_norm_reference, triton_batch_norm_fold

from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter


def _conv_and_bn(conv: nn.Conv2d, affine: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(conv.out_channels, affine=affine).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        if affine:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    return conv, bn


@pytest.mark.parametrize('conv,affine', [
    (nn.Conv2d(6, 9, 1), True), (nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), True),
    (nn.Conv2d(6, 9, 3, stride=2, padding=1, groups=3), False), (nn.Conv2d(4, 5, 3, bias=False), False)])
def test_folded_convolution_is_the_convolution_then_the_batch_norm(conv, affine):
    conv, bn = _conv_and_bn(conv, affine)
    x = torch.randn(2, conv.in_channels, 9, 11)
    weight, bias = fold_batch_norm(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                   bn.eps)
    with torch.no_grad():
        expected = bn(conv(x))
        folded = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert weight.shape == conv.weight.shape and bias.shape == (conv.out_channels, )
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_float64_weights_fold_in_float64_and_half_weights_keep_their_dtype():
    conv, bn = _conv_and_bn(nn.Conv2d(3, 4, 1).double())
    bn.double()
    weight, bias = fold_batch_norm(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                   bn.eps)
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, weight, bias), bn(conv(x)), rtol=1e-12, atol=1e-12)
    half = fold_batch_norm(conv.weight.half(), None, bn.running_mean.float(), bn.running_var.float(), None, None,
                           1e-5)
    assert [t.dtype for t in half] == [torch.float16, torch.float16]


def test_gradients_flow_through_the_automatic_choice(monkeypatch):
    """With a gradient needed the automatic choice is the reference (the kernel has no backward pass), even where
    triton is usable; forcing 'triton' then is a clear error."""
    calls = intercept_triton(monkeypatch, triton_batch_norm_fold, 'fold_batch_norm_triton')
    conv, bn = _conv_and_bn(nn.Conv2d(3, 4, 1))
    args = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    weight, bias = fold_batch_norm(*args)
    (weight.sum() + bias.sum()).backward()
    assert conv.weight.grad is not None and bn.weight.grad is not None and bn.bias.grad is not None and not calls
    with pytest.raises(ValueError, match="'triton' has no backward pass, and a gradient is needed here"):
        fold_batch_norm(*args, impl='triton')
    with torch.no_grad(), pytest.raises(TritonCalled):
        fold_batch_norm(*args)


@pytest.mark.parametrize('change,match', [
    (dict(weight=torch.zeros(4)), r'weight must be a floating-point convolution weight .* got \(4,\)'),
    (dict(weight=torch.zeros(4, 3, 1, 1, dtype=torch.int32)), 'weight must be a floating-point'),
    (dict(bias=torch.zeros(5)), r'bias must be a \(Cout,\) = \(4,\) tensor for weight \(4, 3, 1, 1\), got \(5,\)'),
    (dict(running_var=None), 'running_var is None; only a BatchNorm that tracks running statistics folds'),
    (dict(bn_weight=torch.zeros(4, 1)), r'bn_weight must be a \(Cout,\) = \(4,\) tensor'),
    (dict(running_mean=torch.zeros(4, device='meta')), 'running_mean is on meta but weight is on cpu'),
    (dict(eps=-1.0), 'eps must be a float >= 0, got -1.0'), (dict(eps=1), 'eps must be a float >= 0, got 1')])
@pytest.mark.parametrize('fn', [fold_batch_norm, fold_batch_norm_reference])
def test_bad_inputs(fn, change, match):
    kwargs = dict(weight=torch.zeros(4, 3, 1, 1), bias=torch.zeros(4), running_mean=torch.zeros(4),
                  running_var=torch.ones(4), bn_weight=torch.ones(4), bn_bias=torch.zeros(4), eps=1e-5)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


def test_triton_kernel_matches_the_reference_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_batch_norm_fold_cases.py', 600)
    assert float(re.search(r'WORST (\S+) of tolerance', stdout).group(1)) <= 1, stdout
    assert 'OPCHECK ok' in stdout and stdout.count('\n') == 7, stdout
