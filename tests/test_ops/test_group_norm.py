"""group_norm_one_group / OneGroupNorm: the reference against nn.GroupNorm(1, C), the output-dtype rule under
autocast, checkpoint compatibility, dispatch and errors, and the Triton kernels under Triton's CPU
interpreter."""
import re

import pytest
import torch
from torch import nn

from sparx_mm.ops import (OneGroupNorm, gpu_backends, group_norm_one_group, group_norm_one_group_reference,
                          group_norm_one_group_with_recipe, group_norm_one_group_with_skip)

from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SHAPES = [(2, 5, 7, 9), (1, 3, 1, 1), (3, 8, 33), (2, 16)]


def _inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    channels = shape[1]
    return (torch.randn(shape, generator=g).to(dtype), torch.randn(channels, generator=g).to(dtype),
            torch.randn(channels, generator=g).to(dtype))


@pytest.mark.parametrize('shape', SHAPES)
def test_reference_equals_nn_group_norm(shape):
    x, w, b = _inputs(shape)
    norm = nn.GroupNorm(1, shape[1], eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(w)
        norm.bias.copy_(b)
    torch.testing.assert_close(group_norm_one_group_reference(x, w, b, 1e-3, torch.float32), norm(x))
    torch.testing.assert_close(group_norm_one_group(x, w, b, eps=1e-3), norm(x))
    torch.testing.assert_close(group_norm_one_group(x), nn.GroupNorm(1, shape[1], affine=False)(x))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_output_dtype_is_the_input_dtype_without_autocast(dtype):
    x, w, b = _inputs((2, 4, 3, 5), dtype)
    y = group_norm_one_group(x, w, b)
    assert y.dtype == dtype
    assert torch.equal(y, group_norm_one_group_reference(x, w, b, 1e-5, dtype))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_output_dtype_is_the_autocast_dtype_under_autocast(dtype):
    """Under autocast the output is what the autocast convolution after nn.GroupNorm reads: its float32 output
    cast to the autocast dtype. The convolution's outputs are then equal."""
    x, w, b = _inputs((2, 4, 3, 5), dtype)
    norm = nn.GroupNorm(1, 4)
    conv = nn.Conv2d(4, 6, 1)
    with torch.no_grad():
        norm.weight.copy_(w)
        norm.bias.copy_(b)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = group_norm_one_group(x, w, b)
        assert y.dtype == torch.bfloat16
        assert torch.equal(y, norm(x.float()).to(torch.bfloat16))
        assert torch.equal(conv(y), conv(norm(x)))


def test_one_group_norm_loads_group_norm_checkpoints_and_matches_it():
    torch.manual_seed(0)
    official = nn.GroupNorm(1, 6)
    with torch.no_grad():
        official.weight.normal_()
        official.bias.normal_()
    norm = OneGroupNorm(6)
    norm.load_state_dict(official.state_dict())
    assert list(norm.state_dict()) == ['weight', 'bias']
    assert (norm.num_groups, norm.num_channels, norm.eps, norm.affine) == (1, 6, 1e-5, True)
    nn.GroupNorm(1, 6).load_state_dict(norm.state_dict())
    x = torch.randn(2, 6, 5, 4, requires_grad=True)
    upstream = torch.randn(2, 6, 5, 4)
    results = []
    for module in (official, norm):
        y = module(x)
        grads = torch.autograd.grad(y, [x, module.weight, module.bias], upstream)
        results.append([y, *grads])
    for ours, expected in zip(results[1], results[0]):
        torch.testing.assert_close(ours, expected)
    plain = OneGroupNorm(6, eps=1e-3, affine=False)
    assert plain.weight is None and plain.bias is None and not list(plain.state_dict())
    torch.testing.assert_close(plain(x), nn.GroupNorm(1, 6, eps=1e-3, affine=False)(x))


def test_low_precision_gradients_come_back_in_the_inputs_dtypes():
    x, w, b = (t.requires_grad_() for t in _inputs((2, 4, 3, 5), torch.bfloat16))
    group_norm_one_group(x, w, b).float().square().sum().backward()
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == torch.bfloat16


def test_with_skip_on_the_reference_path_is_the_norm_and_x_itself():
    x, w, b = (t.requires_grad_() for t in _inputs((2, 4, 3, 5)))
    norm = OneGroupNorm(4)
    y, skip = group_norm_one_group_with_skip(x, w, b, impl='reference')
    assert skip is x and torch.equal(y, group_norm_one_group_reference(x, w, b, 1e-5, torch.float32))
    y, skip = norm.forward_with_skip(x)
    assert skip is x and torch.equal(y, norm(x))
    with pytest.raises(ValueError, match=r'weight must be \(C,\) = \(4,\) .* got shape \(3,\)'):
        group_norm_one_group_with_skip(x, torch.ones(3))


def test_with_recipe_on_the_reference_path_recomputes_the_norm_in_the_forward_dtype():
    x, w, b = _inputs((2, 4, 3, 5))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y, fn, args = group_norm_one_group_with_recipe(x, w, b, impl='reference')
    again = fn(*args)  # outside autocast: the recipe keeps the output dtype chosen under it
    assert y.dtype == again.dtype == torch.bfloat16 and torch.equal(again, y)
    assert torch.equal(y, group_norm_one_group_reference(x, w, b, 1e-5, torch.bfloat16))
    norm = OneGroupNorm(4)
    y, fn, args = norm.forward_with_recipe(x)
    assert torch.equal(y, norm(x)) and torch.equal(fn(*args), y)
    with pytest.raises(ValueError, match=r'bias must be \(C,\) = \(4,\) .* got shape \(2,\)'):
        group_norm_one_group_with_recipe(x, None, torch.ones(2))


def test_with_skip_dispatches_to_its_triton_entry_point(monkeypatch):
    from sparx_mm.ops import triton_group_norm
    calls = intercept_triton(monkeypatch, triton_group_norm, 'group_norm_one_group_with_skip_triton')
    x = torch.randn(2, 3, 4)
    with pytest.raises(TritonCalled):
        group_norm_one_group_with_skip(x)
    assert calls[0][0] is x and calls[0][3:] == (1e-5, torch.float32)


@pytest.mark.parametrize('args,error,match', [
    ((torch.zeros(5),), ValueError, r'x must be \(B, C, \*spatial\) with at least 2 dimensions, got shape \(5,\)'),
    ((torch.zeros(2, 5, 3, dtype=torch.int64),), TypeError, 'x must be a floating-point tensor .* got torch.int64'),
    ((torch.zeros(2, 5, 3), torch.ones(4)), ValueError,
     r'weight must be \(C,\) = \(5,\) for x of shape \(2, 5, 3\), or None; got shape \(4,\)'),
    ((torch.zeros(2, 5, 3), None, torch.ones(5, 1)), ValueError, r'bias must be \(C,\) = \(5,\) .* got shape \(5, 1\)'),
    (([[1.0]],), TypeError, 'x must be a tensor, got list'),
])
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        group_norm_one_group(*args)


def test_unknown_implementation_is_a_clear_error(monkeypatch):
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"unknown layer-kernel implementation 'fast' \(from the impl argument\)"):
        group_norm_one_group(x, impl='fast')
    monkeypatch.setenv(gpu_backends.LAYER_KERNELS_ENV, 'cuda')
    with pytest.raises(ValueError, match="unknown layer-kernel implementation 'cuda' .*SPARX_LAYER_KERNELS"):
        group_norm_one_group(x)


def test_forcing_triton_on_cpu_tensors_is_a_clear_error(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    x = torch.zeros(2, 3, 4)
    with pytest.raises(RuntimeError, match="'triton' .*needs CUDA tensors.* got a cpu tensor"):
        group_norm_one_group(x, impl='triton')
    monkeypatch.setenv(gpu_backends.LAYER_KERNELS_ENV, 'triton')
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        group_norm_one_group(x)
    from sparx_mm.ops.triton_group_norm import group_norm_one_group_triton  # triton comes with torch's install
    with pytest.raises(RuntimeError, match='group_norm_one_group_triton needs CUDA tensors'):
        group_norm_one_group_triton(x, None, None, 1e-5, torch.float32)


@pytest.mark.parametrize('dtype,shape,impl,expected', [
    (torch.float32, (2, 3, 4), None, 'triton'), (torch.bfloat16, (2, 3), None, 'triton'),
    (torch.float64, (2, 3, 4), None, 'reference'), (torch.float32, (0, 3, 4), None, 'reference'),
    (torch.float32, (2, 3, 4), 'reference', 'reference'), (torch.float64, (2, 3, 4), 'triton', TypeError)])
def test_dispatch_where_triton_runs(dtype, shape, impl, expected, monkeypatch):
    """With triton usable (as on CUDA): the kernels unless x is float64 (reference when the choice is automatic,
    an error when 'triton' is forced) or empty (nothing to launch)."""
    from sparx_mm.ops import triton_group_norm
    intercept_triton(monkeypatch, triton_group_norm, 'group_norm_one_group_triton')
    x = torch.randn(shape, dtype=dtype)
    if expected == 'triton':
        with pytest.raises(TritonCalled):
            group_norm_one_group(x, impl=impl)
    elif expected is TypeError:
        with pytest.raises(TypeError, match=r"'triton' \(from the impl argument\) .* got torch.float64"):
            group_norm_one_group(x, impl=impl)
    else:
        assert torch.equal(group_norm_one_group(x, impl=impl), group_norm_one_group_reference(x, None, None, 1e-5,
                                                                                              dtype))


def test_triton_kernels_match_the_reference_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_group_norm_cases.py', 600)
    assert float(re.search(r'WORST (\S+)', stdout).group(1)) < 2e-5, stdout
    assert 'OPCHECK ok' in stdout and 'autocast bfloat16 output' in stdout, stdout
    assert stdout.count('with skip') == 5 and 'FAIL' not in stdout, stdout
    # the recipe (a recomputation's normalising pass alone) gives y bit for bit: float32, float16, under autocast
    assert stdout.count(" same launches ['_normalize_kernel']") == 3, stdout
    # eleven cases, autocast, large mean, five with a skip path, three recipes, custom op, summary
    assert stdout.count('\n') == 23, stdout
