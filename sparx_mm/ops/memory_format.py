"""Differentiable conversion of (B, C, H, W) maps between NCHW and channels-last (NHWC) memory.

:func:`convert_memory_format` returns ``x`` dense in the memory format asked for, and its backward pass returns the
gradient in the layout ``x`` had, so each side of a conversion reads and writes the layout it works in: SparX's
stem and downsampling layers run cuDNN's channels-last kernels between the NCHW layer operators
(``layers.FoldingSequential``), and the gradients they hand back are turned into NCHW once here instead of being
copied element by element by the operators that receive them.

On CUDA (float32 / float16 / bfloat16, triton installed) both directions are one tiled transpose a sample
(``triton_transpose.py``): NCHW memory holds a sample as a (C, H*W) matrix, channels-last memory as its (H*W, C)
transpose. torch's own copy between the two layouts reads or writes one element a 32-byte sector (SparX-T at batch
128 on an H100: 0.24-0.30 ms for each conversion of a 96 x 56 x 56 float16 map, ~0.5 TB/s; docs/benchmarks.md).
Elsewhere, for other dtypes and for maps beyond the kernel's grid, ``Tensor.contiguous(memory_format=...)``.
"""
from typing import Optional

import torch
from torch import Tensor

from . import gpu_backends

__all__ = ['MEMORY_FORMATS', 'convert_memory_format']

#: The memory formats :func:`convert_memory_format` converts between.
MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)
_NAME = 'convert_memory_format'


def _layout(x: Tensor) -> Optional[torch.memory_format]:
    """The format of MEMORY_FORMATS that ``x`` is dense in (NCHW first where both hold), else None."""
    for memory_format in MEMORY_FORMATS:
        if x.is_contiguous(memory_format=memory_format):
            return memory_format
    return None


def _check(x, memory_format):
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'{_NAME}: x must be a 4-D (B, C, H, W) tensor, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f'{_NAME}: memory_format must be torch.contiguous_format or torch.channels_last, got '
                         f'{memory_format!r}')


def _use_kernel(x: Tensor, memory_format: torch.memory_format, impl: Optional[str]) -> bool:
    """Whether the transpose kernel converts ``x`` (dense in the other format of MEMORY_FORMATS) to
    ``memory_format``."""
    if gpu_backends.layer_kernel_impl(x, impl, _NAME) == 'reference':
        return False
    from .triton_transpose import plane_transpose_fits
    source = torch.channels_last if memory_format == torch.contiguous_format else torch.contiguous_format
    b, c, h, w = x.shape
    return x.is_contiguous(memory_format=source) and plane_transpose_fits(c, h * w) and x.numel() > 0


def _converted(x: Tensor, memory_format: torch.memory_format, impl: Optional[str]) -> Tensor:
    """``x`` in ``memory_format``: the transpose kernel where :func:`_use_kernel` (a TritonOp with its backward
    pass), else torch's copy (no autograd: :class:`_ConvertMemoryFormat` runs it)."""
    if x.is_contiguous(memory_format=memory_format):
        return x
    if _use_kernel(x, memory_format, impl):
        from .triton_transpose import layout_transpose
        return layout_transpose(x, memory_format == torch.channels_last)
    return x.contiguous(memory_format=memory_format)


class _ConvertMemoryFormat(torch.autograd.Function):
    """torch's copy with the operator's backward: the gradient in x's own layout (as it came where x had
    neither)."""

    @staticmethod
    def forward(ctx, x, memory_format):
        ctx.layout = _layout(x)
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, grad):
        if ctx.layout is not None:
            grad = _converted(grad, ctx.layout, None)
        return grad, None


def convert_memory_format(x: Tensor, memory_format: torch.memory_format, impl: Optional[str] = None) -> Tensor:
    """``x`` dense in ``memory_format`` (``torch.contiguous_format`` or ``torch.channels_last``), differentiable;
    ``x`` itself where it already is. The gradient comes back in the layout ``x`` had (NCHW or channels-last),
    where ``x.contiguous(memory_format=...)`` hands it on as it came.

    ``impl`` (else ``SPARX_LAYER_KERNELS``, else automatic): 'triton' converts maps dense in the other format with
    the transpose kernel (module doc; CUDA tensors, float32 / float16 / bfloat16), 'reference' with torch's copy;
    automatic: the kernel where it can run. Other strides always take torch's copy.

    Shapes: (B, C, H, W) -> (B, C, H, W), same dtype and values.
    """
    _check(x, memory_format)
    if gpu_backends.gradient_needed(x) and not x.is_contiguous(memory_format=memory_format) \
            and not _use_kernel(x, memory_format, impl):
        return _ConvertMemoryFormat.apply(x, memory_format)
    return _converted(x, memory_format, impl)
