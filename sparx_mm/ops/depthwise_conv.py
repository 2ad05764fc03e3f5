"""Depthwise convolution fused with its bias, a residual and an activation: one pass over memory.

For ``x`` (B, C, H, W), ``weight`` (C, 1, k, k) with odd k and ``bias`` (C,) or None::

    depthwise_conv2d_act(x, weight, bias, residual, activation)
        = act(conv2d(x, weight, bias, stride=1, padding=k // 2, groups=C) + (x if residual else 0))

with act the identity (``activation=None``), exact GELU (``'gelu'``, ``nn.GELU()``'s default, erf form) or
SiLU (``'silu'``). SparX's blocks use it as ``x + dw3x3(x)`` (positional embedding), ``gelu(h + dw3x3(h))``
(ConvFFN), ``silu(dw5x5(x) + b)`` (SS2D) and ``gelu(dw3x3(y) + b)`` (DMCA).

``stride`` s > 1 (no residual) gives ``conv2d(..., stride=s, padding=k // 2)``: the same convolution at every
s-th row and column, (B, C, ceil(H / s), ceil(W / s)), as the DMCA's spatial reductions (k = s + 1) use it. The
Triton path has strided kernels of its own (forward, gradient, and dx by the adjoint), where cuDNN's strided
depthwise backward was slow (``dgrad2d_c1_k1_nhwc``: 0.7 ms a call for SparX-T's 28 x 28, stride-4 reduction at
batch 128 on an H100; docs/benchmarks.md).

Output dtype (both implementations): the convolution runs in ``conv_dtype`` = the autocast dtype when
autocast is enabled for x's device type and x is not float64 (autocast leaves float64 alone), else x's
dtype; the output has ``conv_dtype``, or ``torch.promote_types(x.dtype, conv_dtype)`` when the residual is
added (float32 x + a float16 convolution is float32). This is what the torch composition produces under
autocast. The Triton kernels compute everything in float32 from the un-rounded x and parameters and round
once at the end, so under autocast they are slightly more accurate than the composition, which rounds x and
the weights to the autocast dtype before convolving.

:func:`depthwise_conv2d_act_reference` is the definition with plain torch ops; :func:`depthwise_conv2d_act`
checks its inputs and runs the Triton kernels (``triton_depthwise_conv.py``, for CUDA tensors) or the
reference, as :func:`sparx_mm.ops.gpu_backends.layer_kernel_impl` chooses.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gpu_backends
from .conv_inputs import check_conv_tensors, conv_dtype, shape_text

__all__ = ['depthwise_conv2d_act', 'depthwise_conv2d_act_reference']

#: Accepted activations: None (identity), exact (erf) GELU, SiLU.
ACTIVATIONS = (None, 'gelu', 'silu')
#: Largest kernel size: the Triton kernels unroll the k*k taps. The reference accepts the same sizes, so that
#: code which runs on one implementation runs on the other.
MAX_KERNEL_SIZE = 9

_ACTIVATION_FNS = {None: lambda t: t, 'gelu': F.gelu, 'silu': F.silu}


def activation_fn(activation: Optional[str]):
    """The torch function of an activation of :data:`ACTIVATIONS` (None: the identity)."""
    return _ACTIVATION_FNS[activation]


def _check_inputs(x, weight, bias, residual, activation, stride=1):
    name = 'depthwise_conv2d_act'
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'{name}: x must be a 4-D tensor (B, C, H, W), got {shape_text(x)}')
    if not x.is_floating_point():
        raise TypeError(f'{name}: x must be a floating-point tensor, got {x.dtype}')
    channels = x.shape[1]
    if not isinstance(weight, Tensor) or weight.dim() != 4 or weight.shape[1] != 1 or \
            weight.shape[2] != weight.shape[3]:
        raise ValueError(f'{name}: weight must be a depthwise kernel (C, 1, k, k) = ({channels}, 1, k, k), '
                         f'got {shape_text(weight)}')
    if weight.shape[0] != channels:
        raise ValueError(f'{name}: weight has {weight.shape[0]} channels (shape {shape_text(weight)}) but x has '
                         f'{channels} (shape {shape_text(x)}); a depthwise kernel is (C, 1, k, k)')
    k = weight.shape[-1]
    if k % 2 == 0 or k > MAX_KERNEL_SIZE:
        raise ValueError(f'{name}: kernel size k must be odd (padding k // 2 keeps the map size) and at most '
                         f'{MAX_KERNEL_SIZE}, got k={k} (weight {shape_text(weight)})')
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (channels, )):
        raise ValueError(f'{name}: bias must be None or a ({channels},) tensor, got {shape_text(bias)}')
    if not isinstance(residual, bool):
        raise TypeError(f'{name}: residual must be a bool (whether x itself is added before the activation), '
                        f'got {type(residual).__name__}')
    if activation not in ACTIVATIONS:
        raise ValueError(f'{name}: unknown activation {activation!r}; choose one of {ACTIVATIONS}')
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f'{name}: stride must be an int >= 1, got {stride!r}')
    if stride > 1 and residual:
        raise ValueError(f'{name}: residual=True needs stride 1 (x is added to an output of its own size), '
                         f'got stride {stride}')
    params = (('weight', weight), ('bias', bias))
    check_conv_tensors(name, x, params, params)


def _output_dtype(x: Tensor, residual: bool) -> torch.dtype:
    """The output dtype rule of the module doc."""
    dtype = conv_dtype(x)
    return torch.promote_types(x.dtype, dtype) if residual else dtype


def _reference(x, weight, bias, residual, activation, stride=1):
    y = F.conv2d(x, weight, bias, stride=stride, padding=weight.shape[-1] // 2, groups=x.shape[1])
    if residual:
        y = x + y
    return _ACTIVATION_FNS[activation](y)


def depthwise_conv2d_act_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                                   residual: bool = False, activation: Optional[str] = None,
                                   stride: int = 1) -> Tensor:
    """The operator (module doc) with plain torch ops: ``F.conv2d``, an add, ``F.gelu`` / ``F.silu``.

    Shapes: x (B, C, H, W), weight (C, 1, k, k) with odd k <= 9, bias (C,) or None -> (B, C, ceil(H / stride),
    ceil(W / stride)), in the dtype of the module doc's rule.
    """
    _check_inputs(x, weight, bias, residual, activation, stride)
    return _reference(x, weight, bias, residual, activation, stride)


def depthwise_conv2d_act(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, residual: bool = False,
                         activation: Optional[str] = None, impl: Optional[str] = None, stride: int = 1) -> Tensor:
    """``act(depthwise_conv(x) + bias + (x if residual))`` in one pass (module doc), differentiable.

    ``impl`` (else the ``SPARX_LAYER_KERNELS`` variable, else automatic): 'triton' runs the fused Triton kernels
    (CUDA tensors; float32 / float16 / bfloat16 inputs), 'reference' the torch composition. Automatic: Triton
    for CUDA tensors when triton is installed, except float64 inputs, which take the reference.

    Shapes: x (B, C, H, W), weight (C, 1, k, k) with odd k <= 9, bias (C,) or None -> (B, C, ceil(H / stride),
    ceil(W / stride)), in the dtype of the module doc's rule; gradients come back in the dtypes of x, weight and
    bias.
    """
    _check_inputs(x, weight, bias, residual, activation, stride)
    if gpu_backends.layer_kernel_impl(x, impl, 'depthwise_conv2d_act') == 'reference':
        return _reference(x, weight, bias, residual, activation, stride)
    from .triton_depthwise_conv import depthwise_conv2d_act_triton
    return depthwise_conv2d_act_triton(x, weight, bias, residual, activation, _output_dtype(x, residual), stride)
