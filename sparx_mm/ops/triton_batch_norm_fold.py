"""Triton kernel of :func:`sparx_mm.ops.fold_batch_norm`: the folded weight and bias in one launch.

A program takes BLOCK_R output channels: it computes their scale and shift in float32 from the BatchNorm's
running statistics and parameters, stores the folded bias, and scales their weight rows (Cin / groups * kernel
elements each, walked in BLOCK_C chunks). The square root and the division are rounded as torch's
``rsqrt`` (correctly rounded square root, IEEE division), not Triton's approximate ones.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable
from .triton_launch import cdiv, launch
from .triton_op import TritonOp

#: Output channels a program and weight elements a chunk.
BLOCK_R, BLOCK_C = 16, 128


@triton.jit
def _fold_kernel(w_ptr, b_ptr, mean_ptr, var_ptr, gamma_ptr, beta_ptr, w_out_ptr, b_out_ptr, COUT, ROW, eps,
                 HAS_BIAS: tl.constexpr, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """w_out[r, :] = w[r, :] * scale[r], b_out[r] = (b[r] - mean[r]) * scale[r] + beta[r] with scale[r] =
    gamma[r] / sqrt(var[r] + eps), for the program's BLOCK_R rows of ROW elements."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < COUT
    var = tl.load(var_ptr + rows, mask=row_ok, other=1.0).to(tl.float32)
    scale = tl.math.div_rn(1.0, tl.sqrt_rn(var + eps))
    if HAS_GAMMA:
        scale *= tl.load(gamma_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    shift = -tl.load(mean_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        shift += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    shift *= scale
    if HAS_BETA:
        shift += tl.load(beta_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(b_out_ptr + rows, shift.to(b_out_ptr.dtype.element_ty), mask=row_ok)
    offs = rows.to(tl.int64)[:, None] * ROW
    for c0 in range(0, ROW, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_ok[:, None] & (cols < ROW)[None, :]
        w = tl.load(w_ptr + offs + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(w_out_ptr + offs + cols[None, :], (w * scale[:, None]).to(w_out_ptr.dtype.element_ty), mask=mask)


def _fold(weight: torch.Tensor, bias: Optional[torch.Tensor], running_mean: torch.Tensor,
          running_var: torch.Tensor, bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor],
          eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """weight (Cout, ...) and the (Cout,) vectors, contiguous -> (w' of weight's shape, b' (Cout,)) in weight's
    dtype."""
    folded, shift = _fold_fake(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    cout = weight.shape[0]
    dummy = running_mean
    launch(_fold_kernel, (cdiv(cout, BLOCK_R), ), weight, dummy if bias is None else bias, running_mean, running_var,
           dummy if bn_weight is None else bn_weight, dummy if bn_bias is None else bn_bias, folded, shift, cout,
           weight[0].numel(), eps, HAS_BIAS=bias is not None, HAS_GAMMA=bn_weight is not None,
           HAS_BETA=bn_bias is not None, BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=4)
    return folded, shift


def _fold_fake(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps):
    return torch.empty_like(weight), weight.new_empty(weight.shape[0])


_fold = TritonOp('sparx_mm::fold_batch_norm', _fold, _fold_fake)


def fold_batch_norm_triton(weight: torch.Tensor, bias: Optional[torch.Tensor], running_mean: torch.Tensor,
                           running_var: torch.Tensor, bn_weight: Optional[torch.Tensor],
                           bn_bias: Optional[torch.Tensor], eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Triton implementation of :func:`sparx_mm.ops.fold_batch_norm` (inputs already checked; no autograd).
    Needs CUDA tensors (or ``TRITON_INTERPRET=1``)."""
    check_triton_launchable(weight, 'fold_batch_norm_triton')

    def contiguous(t):
        return None if t is None else t.contiguous()

    return _fold(weight.contiguous(), contiguous(bias), running_mean.contiguous(), running_var.contiguous(),
                 contiguous(bn_weight), contiguous(bn_bias), eps)
