"""An inference-mode BatchNorm folded into the convolution before it: one pass over the map instead of two.

In inference BatchNorm normalises with its running statistics, a per-channel affine map, so ``bn(conv(x, w, b))``
is the convolution ``conv(x, w', b')`` with, for each output channel c::

    scale[c] = bn_weight[c] / sqrt(running_var[c] + eps)
    w'[c] = w[c] * scale[c]
    b'[c] = (b[c] - running_mean[c]) * scale[c] + bn_bias[c]

(``bn_weight`` / ``bn_bias`` None: 1 / 0; ``b`` None: 0). The DMCA runs its convolutions so in inference
(``sparx_mm.models.layers.FoldingSequential``): its BatchNorms and the GELUs after them cost a read and a write
of the map each, the fold a pass over the weights. Computed in float32 (float64 for float64 weights) and
returned in the weight's dtype: under autocast the convolution then rounds the folded weight, as it would round
the weight, to the autocast dtype.

:func:`fold_batch_norm` runs one Triton kernel for CUDA tensors (``triton_batch_norm_fold.py``) and
:func:`fold_batch_norm_reference` (torch ops, five or six kernels) otherwise, as the layer kernels choose
(``gpu_backends.layer_kernel_impl``). The Triton kernel has no backward pass: when a gradient is needed (a
weight or a BatchNorm parameter that requires one, in grad mode) the automatic choice is the reference, which
autograd differentiates. The layers fold only when no gradient is needed.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import gpu_backends
from .conv_inputs import shape_text

__all__ = ['fold_batch_norm', 'fold_batch_norm_reference']

_NAME = 'fold_batch_norm'


def _check_inputs(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps):
    if not isinstance(weight, Tensor) or weight.dim() < 2 or not weight.is_floating_point():
        raise ValueError(f'{_NAME}: weight must be a floating-point convolution weight (Cout, Cin / groups, *kernel), '
                         f'got {shape_text(weight)}')
    cout = weight.shape[0]
    for name, t in (('bias', bias), ('running_mean', running_mean), ('running_var', running_var),
                    ('bn_weight', bn_weight), ('bn_bias', bn_bias)):
        if t is None and name in ('running_mean', 'running_var'):
            raise ValueError(f'{_NAME}: {name} is None; only a BatchNorm that tracks running statistics folds')
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != (cout, )):
            raise ValueError(f'{_NAME}: {name} must be a (Cout,) = ({cout},) tensor for weight '
                             f'{shape_text(weight)}, got {shape_text(t)}')
        if t is not None and t.device != weight.device:
            raise ValueError(f'{_NAME}: {name} is on {t.device} but weight is on {weight.device}')
    if not isinstance(eps, float) or not eps >= 0:
        raise ValueError(f'{_NAME}: eps must be a float >= 0, got {eps!r}')


def fold_batch_norm_reference(weight: Tensor, bias: Optional[Tensor], running_mean: Tensor, running_var: Tensor,
                              bn_weight: Optional[Tensor], bn_bias: Optional[Tensor],
                              eps: float) -> Tuple[Tensor, Tensor]:
    """The module doc's w', b' with torch ops. Shapes: weight (Cout, ...), the rest (Cout,) or None -> (w' of
    weight's shape, b' (Cout,)), both in weight's dtype."""
    _check_inputs(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    compute = torch.promote_types(weight.dtype, torch.float32)
    scale = torch.rsqrt(running_var.to(compute) + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.to(compute)
    shift = -running_mean.to(compute) if bias is None else bias.to(compute) - running_mean.to(compute)
    shift = shift * scale
    if bn_bias is not None:
        shift = shift + bn_bias.to(compute)
    folded = weight.to(compute) * scale.view((-1, ) + (1, ) * (weight.dim() - 1))
    return folded.to(weight.dtype), shift.to(weight.dtype)


def fold_batch_norm(weight: Tensor, bias: Optional[Tensor], running_mean: Tensor, running_var: Tensor,
                    bn_weight: Optional[Tensor], bn_bias: Optional[Tensor], eps: float,
                    impl: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """The convolution weight and bias that include an inference-mode BatchNorm after it (module doc).

    Args:
        weight: (Cout, Cin / groups, *kernel) convolution weight; bias: (Cout,) or None.
        running_mean, running_var: (Cout,) the BatchNorm's running statistics.
        bn_weight, bn_bias: (Cout,) its affine parameters, or None (an ``affine=False`` BatchNorm).
        eps: its eps.
        impl: 'triton' (one kernel; CUDA tensors; no gradients) or 'reference'; default ``SPARX_LAYER_KERNELS``,
            else Triton for CUDA tensors when triton is installed and no gradient is needed.

    Returns:
        (w' of weight's shape, b' (Cout,)), in weight's dtype.
    """
    _check_inputs(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    needs_grad = gpu_backends.gradient_needed(weight, bias, running_mean, running_var, bn_weight, bn_bias)
    choice = gpu_backends.layer_kernel_impl(weight, impl, _NAME, triton_preferred=not needs_grad)
    if choice == 'triton' and needs_grad:
        raise ValueError(f"{_NAME}: 'triton' has no backward pass, and a gradient is needed here (a tensor that "
                         "requires grad, in grad mode); use 'reference' or leave impl unset")
    if choice == 'reference':
        return fold_batch_norm_reference(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    from .triton_batch_norm_fold import fold_batch_norm_triton
    return fold_batch_norm_triton(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
