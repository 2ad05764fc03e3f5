"""1x1 convolution fused with its bias and the block's skip path: one pass over memory.

For ``x`` (B, Cin, H, W), ``weight`` (Cout, Cin, 1, 1), ``bias`` (Cout,) or None and an optional ``skip``
(B, Cout, H, W) with an optional per-channel ``skip_scale`` / ``skip_shift`` (Cout,)::

    pointwise_conv2d(x, weight, bias, skip, skip_scale, skip_shift)
        = conv2d(x, weight, bias) + (skip * skip_scale + skip_shift)

SparX uses it for every 1x1 convolution of a block: SS2D's ``in_proj`` and ConvFFN's ``fc1`` (no skip), and
SS2D's ``out_proj`` and ConvFFN's ``fc2`` with the block's residual ``LS(x) + branch(...)`` folded in (LayerScale
is the skip path's scale and shift). On GPUs PyTorch runs such a convolution as cuDNN's NHWC GEMM between two
layout conversions of the NCHW maps, then adds the bias in a separate pass that cannot vectorise, then the skip
in a third: at SparX-T's stage-1 sizes the bias add alone takes three times the GEMM. The Triton kernel reads
the NCHW map directly as the GEMM's operand, one sample a program column, and adds the bias and the skip path
to the float32 accumulator before the one store. Where cuDNN measured faster (small maps; 16-bit convolutions with a
skip path on 14 x 14 maps) the automatic choice keeps it (``triton_pointwise_conv.triton_is_faster``).

Output dtype (both implementations): the convolution runs in ``conv_dtype`` = the autocast dtype when autocast
is enabled for x's device type and x is not float64, else x's dtype; without a skip the output has
``conv_dtype``, with one ``torch.promote_types(skip path dtype, conv_dtype)`` (the skip path's dtype being that of
``skip * skip_scale + skip_shift``): what the torch composition produces under autocast. float32 convolutions
use TF32 in the Triton kernel exactly when ``torch.backends.cudnn.allow_tf32`` lets cuDNN use it (the default),
so the fused op rounds as the convolution it replaces does.

:func:`pointwise_conv2d_reference` is the definition with plain torch ops; :func:`pointwise_conv2d` checks its
inputs and runs the Triton kernel (``triton_pointwise_conv.py``, CUDA tensors) or the reference, as
:func:`sparx_mm.ops.gpu_backends.layer_kernel_impl` chooses.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gpu_backends
from .selective_scan import requested_choice

__all__ = ['add_skip_path', 'pointwise_conv2d', 'pointwise_conv2d_reference']

_NAME = 'pointwise_conv2d'


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _autocast_on(x: Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64


def _check_inputs(x, weight, bias, skip, skip_scale, skip_shift):
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'{_NAME}: x must be a 4-D tensor (B, Cin, H, W), got {_shape(x)}')
    if not x.is_floating_point():
        raise TypeError(f'{_NAME}: x must be a floating-point tensor, got {x.dtype}')
    if not isinstance(weight, Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f'{_NAME}: weight must be a 1x1 kernel (Cout, Cin, 1, 1), got {_shape(weight)}')
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f'{_NAME}: weight takes {weight.shape[1]} input channels (shape {_shape(weight)}) but x '
                         f'has {x.shape[1]} (shape {_shape(x)})')
    cout = weight.shape[0]
    for name, t in (('bias', bias), ('skip_scale', skip_scale), ('skip_shift', skip_shift)):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != (cout, )):
            raise ValueError(f'{_NAME}: {name} must be None or a (Cout,) = ({cout},) tensor, got {_shape(t)}')
    if skip is None:
        if skip_scale is not None or skip_shift is not None:
            raise ValueError(f'{_NAME}: skip_scale / skip_shift scale and shift the skip path; pass skip too')
    else:
        expected = (x.shape[0], cout) + tuple(x.shape[2:])
        if not isinstance(skip, Tensor) or tuple(skip.shape) != expected:
            raise ValueError(f'{_NAME}: skip must be the output\'s shape (B, Cout, H, W) = {expected}, got '
                             f'{_shape(skip)}')
        if not skip.is_floating_point():
            raise TypeError(f'{_NAME}: skip must be a floating-point tensor, got {skip.dtype}')
    for name, t in (('weight', weight), ('bias', bias), ('skip', skip), ('skip_scale', skip_scale),
                    ('skip_shift', skip_shift)):
        if t is not None and t.device != x.device:
            raise ValueError(f'{_NAME}: {name} is on {t.device} but x is on {x.device}')
    # F.conv2d's rule, which the reference follows: without autocast the parameters must have x's dtype.
    for name, t in (('weight', weight), ('bias', bias)):
        if t is not None and t.dtype != x.dtype and not _autocast_on(x):
            raise TypeError(f'{_NAME}: {name} is {t.dtype} but x is {x.dtype}; without autocast they must match '
                            '(as for F.conv2d)')


def _skip_path(skip, skip_scale, skip_shift):
    """``skip * scale + shift`` as LayerScale computes it (one addcmul), or the parts that are given."""
    if skip_scale is not None and skip_shift is not None:
        return torch.addcmul(skip_shift.view(1, -1, 1, 1), skip, skip_scale.view(1, -1, 1, 1))
    if skip_scale is not None:
        return skip * skip_scale.view(1, -1, 1, 1)
    if skip_shift is not None:
        return skip + skip_shift.view(1, -1, 1, 1)
    return skip


def add_skip_path(y: Tensor, skip: Tensor, skip_scale: Optional[Tensor] = None,
                  skip_shift: Optional[Tensor] = None) -> Tensor:
    """``skip * skip_scale + skip_shift + y`` with plain torch ops, as the blocks write ``LS(x) + branch``.

    Shapes: y and skip (B, C, H, W), skip_scale / skip_shift (C,) or None -> (B, C, H, W).
    """
    return _skip_path(skip, skip_scale, skip_shift) + y


def _reference(x, weight, bias, skip, skip_scale, skip_shift):
    y = F.conv2d(x, weight, bias)
    return y if skip is None else add_skip_path(y, skip, skip_scale, skip_shift)


def pointwise_conv2d_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                               skip: Optional[Tensor] = None, skip_scale: Optional[Tensor] = None,
                               skip_shift: Optional[Tensor] = None) -> Tensor:
    """The operator (module doc) with plain torch ops: ``F.conv2d``, LayerScale's addcmul, an add.

    Shapes: x (B, Cin, H, W), weight (Cout, Cin, 1, 1), bias / skip_scale / skip_shift (Cout,) or None, skip
    (B, Cout, H, W) or None -> (B, Cout, H, W), in the dtype of the module doc's rule.
    """
    _check_inputs(x, weight, bias, skip, skip_scale, skip_shift)
    return _reference(x, weight, bias, skip, skip_scale, skip_shift)


def _dtypes(x, skip, skip_scale, skip_shift):
    """(conv dtype, output dtype) of the module doc's rule."""
    conv_dtype = torch.get_autocast_dtype(x.device.type) if _autocast_on(x) else x.dtype
    if skip is None:
        return conv_dtype, conv_dtype
    skip_dtype = skip.dtype
    for t in (skip_scale, skip_shift):
        if t is not None:
            skip_dtype = torch.promote_types(skip_dtype, t.dtype)
    return conv_dtype, torch.promote_types(skip_dtype, conv_dtype)


def pointwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, skip: Optional[Tensor] = None,
                     skip_scale: Optional[Tensor] = None, skip_shift: Optional[Tensor] = None,
                     impl: Optional[str] = None) -> Tensor:
    """``conv1x1(x) + bias + (skip * skip_scale + skip_shift)`` in one pass (module doc), differentiable.

    ``impl`` (else the ``SPARX_LAYER_KERNELS`` variable, else automatic): 'triton' runs the fused Triton kernel
    (CUDA tensors; float32 / float16 / bfloat16 inputs), 'reference' the torch composition. Automatic: Triton for
    CUDA tensors when triton is installed and the map is of a size where the kernel measured faster than cuDNN
    (:func:`~sparx_mm.ops.triton_pointwise_conv.triton_is_faster`), else the reference; float64 inputs take the
    reference. The backward pass is cuDNN's (the convolution's input and weight gradients) plus the skip path's
    sums.

    Shapes: x (B, Cin, H, W), weight (Cout, Cin, 1, 1), bias / skip_scale / skip_shift (Cout,) or None, skip
    (B, Cout, H, W) or None -> (B, Cout, H, W), in the dtype of the module doc's rule; gradients come back in
    the inputs' dtypes.
    """
    _check_inputs(x, weight, bias, skip, skip_scale, skip_shift)
    if gpu_backends.layer_kernel_impl(x, impl, _NAME) == 'reference' or x.numel() == 0:
        return _reference(x, weight, bias, skip, skip_scale, skip_shift)
    from .triton_pointwise_conv import pointwise_conv2d_triton, triton_is_faster
    conv_dtype, out_dtype = _dtypes(x, skip, skip_scale, skip_shift)
    forced = requested_choice(impl, gpu_backends.LAYER_KERNELS_ENV, 'impl')[0] is not None
    if not forced and not triton_is_faster(x.shape[2] * x.shape[3], conv_dtype, skip is not None):
        return _reference(x, weight, bias, skip, skip_scale, skip_shift)
    return pointwise_conv2d_triton(x, weight, bias, skip, skip_scale, skip_shift, conv_dtype, out_dtype)
