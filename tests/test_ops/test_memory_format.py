"""convert_memory_format: NCHW <-> channels-last with the gradient in the input's layout; its input errors; the
dispatch (the transpose kernel only for maps dense in the other format, of the kernels' dtypes, within its grid);
the kernel under Triton's CPU interpreter."""
import pytest
import torch

from sparx_mm.ops import convert_memory_format, triton_transpose
from sparx_mm.ops import memory_format as mf
from .helpers import TritonCalled, intercept_triton, run_in_triton_interpreter

CL, NCHW = torch.channels_last, torch.contiguous_format


@pytest.mark.parametrize('source,target', [(NCHW, CL), (CL, NCHW)])
def test_converts_and_returns_the_gradient_in_the_inputs_layout(source, target):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=source).requires_grad_()
    y = convert_memory_format(x, target)
    assert torch.equal(y, x) and y.is_contiguous(memory_format=target)
    assert not y.is_contiguous(memory_format=source)
    grad = torch.randn(2, 3, 4, 5).contiguous(memory_format=target)
    y.backward(grad)
    # x.contiguous(memory_format=target) would hand the gradient on in the target's layout.
    assert torch.equal(x.grad, grad) and x.grad.is_contiguous(memory_format=source)
    assert not x.grad.is_contiguous(memory_format=target)


def test_a_map_already_in_the_format_is_returned_itself_and_other_strides_are_copied():
    x = torch.randn(2, 3, 4, 5)
    assert convert_memory_format(x, NCHW) is x
    cl = x.contiguous(memory_format=CL)
    assert convert_memory_format(cl, CL) is cl
    strided = torch.randn(2, 3, 8, 5)[:, :, ::2].requires_grad_()  # dense in neither format
    y = convert_memory_format(strided, CL)
    assert torch.equal(y, strided) and y.is_contiguous(memory_format=CL)
    grad = torch.randn(2, 3, 4, 5)
    y.backward(grad)  # no layout to return to: the gradient as it came
    assert torch.equal(strided.grad, grad)


def test_bad_inputs_are_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match=r'4-D \(B, C, H, W\) tensor, got \(2, 3, 4\)'):
        convert_memory_format(torch.randn(2, 3, 4), CL)
    with pytest.raises(ValueError, match='torch.contiguous_format or torch.channels_last'):
        convert_memory_format(torch.randn(2, 3, 4, 5), torch.preserve_format)
    with pytest.raises(ValueError, match='4-D'):
        convert_memory_format([1, 2], CL)
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        convert_memory_format(torch.randn(2, 3, 4, 5), CL, impl='triton')


def test_dispatch_takes_the_kernel_for_dense_maps_of_its_dtypes_within_its_grid(monkeypatch):
    calls = intercept_triton(monkeypatch, triton_transpose, 'layout_transpose')
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(TritonCalled):
        convert_memory_format(x, CL)
    with pytest.raises(TritonCalled):
        convert_memory_format(x.half().contiguous(memory_format=CL), NCHW)
    assert [c[1] for c in calls] == [True, False]
    # float64, strides of neither format, the reference forced: torch's copy.
    for y in (convert_memory_format(x.double(), CL), convert_memory_format(torch.randn(2, 3, 8, 5)[:, :, ::2], CL),
              convert_memory_format(x, CL, impl='reference')):
        assert y.is_contiguous(memory_format=CL)
    # Planes beyond the grid (more than 65535 tiles of 32 along H*W): torch's copy.
    assert not triton_transpose.plane_transpose_fits(3, 65535 * 32 + 1) and triton_transpose.plane_transpose_fits(
        3, 65535 * 32)
    wide = torch.empty(1, 1, 2, 65535 * 16 + 1, dtype=torch.float16)
    assert not mf._use_kernel(wide.expand(1, 2, -1, -1).contiguous(), CL, None)
    assert len(calls) == 2


def test_transpose_kernel_matches_torch_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_memory_format_cases.py', 600)
    assert stdout.count('exact') == 18 and 'FAIL' not in stdout, stdout
    assert 'OPCHECK ok' in stdout and 'COMPILE graphs 1 breaks 0 matches eager' in stdout, stdout
