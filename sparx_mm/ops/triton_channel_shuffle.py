"""Triton kernel of :func:`sparx_mm.ops.concat_shuffled`: whole (H, W) planes moved between a concatenated,
shuffled map and its inputs.

The map (B, N, H, W) and each input (B, C_i, H, W) are matrices of B*N and B*C_i rows (planes) of H*W contiguous
elements. Input i's plane (b, c) is concatenated channel g = start_i + c, at shuffled channel
g % groups * (N / groups) + g // groups: a program moves a BLOCK_R x BLOCK_HW tile of the input's rows to their
rows of the map (forward) or back (backward: the input's gradient, contiguous), one launch an input. torch's
strided channel-slice copies it replaces read the rows with one thread an element; here the row length is
passed divided by its largest power-of-two factor up to 8 (``HW_ALIGN``; ``triton_launch.power_of_two_factor``),
so 14 x 14 planes (196 elements) move with vector accesses.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
import functools
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from .channel_shuffle import channel_starts
from .gpu_backends import check_triton_launchable
from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor

#: (elements a program moves, warps, widest row block): a tile is BLOCK_HW = min(next_power_of_2(H*W), widest)
#: columns by TILE // BLOCK_HW rows. 8 warps: at 4, 7 x 7 planes (64 rows of 64 columns, scalar accesses) spilled
#: 24 bytes a thread (ptxas for sm_90, Triton 3.6); at 8 none, 28-143 registers. Not tuned on a GPU.
TILING = (4096, 8, 1024)


@triton.jit
def _shuffle_copy_kernel(src_ptr, dst_ptr, rows, C, start, N, HW_UNITS, GROUPS: tl.constexpr, SCATTER: tl.constexpr,
                         HW_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_HW: tl.constexpr):
    """For rows r = b * C + c of an input (B*C rows of HW = HW_UNITS * HW_ALIGN elements): its row of the
    shuffled map is b * N + g % GROUPS * (N / GROUPS) + g // GROUPS with g = start + c. SCATTER: input row ->
    map row (forward); else map row -> input row (the gradient). Values cast to the destination's dtype."""
    HW = HW_UNITS * HW_ALIGN
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    g = start + r % C
    shuffled = r // C * N + g % GROUPS * (N // GROUPS) + g // GROUPS
    if SCATTER:
        src_rows, dst_rows = r, shuffled
    else:
        src_rows, dst_rows = shuffled, r
    mask = (r < rows)[:, None] & (cols < HW)[None, :]
    values = tl.load(src_ptr + src_rows[:, None] * HW + cols[None, :], mask=mask)
    tl.store(dst_ptr + dst_rows[:, None] * HW + cols[None, :], values.to(dst_ptr.dtype.element_ty), mask=mask)


def shuffle_tiling(rows: int, hw: int) -> Tuple[int, int, int]:
    """(BLOCK_R, BLOCK_HW, warps) of a copy of ``rows`` planes of ``hw`` elements (:data:`TILING`)."""
    tile, warps, widest = TILING
    block_hw = min(next_power_of_2(hw), widest)
    return min(max(1, tile // block_hw), next_power_of_2(rows)), block_hw, warps


def _copy(src: torch.Tensor, dst: torch.Tensor, channels: int, start: int, total: int, groups: int,
          scatter: bool) -> None:
    """One input's planes (``channels`` of them a sample, concatenated from channel ``start`` of ``total``) to their
    shuffled places in the map (``scatter``) or back; src / dst contiguous."""
    batch, hw = src.shape[0], src.shape[2] * src.shape[3]
    rows = batch * channels
    if rows == 0:
        return
    block_r, block_hw, warps = shuffle_tiling(rows, hw)
    hw_align = power_of_two_factor(hw)
    launch(_shuffle_copy_kernel, (cdiv(rows, block_r), cdiv(hw, block_hw)), src, dst, rows, channels, start, total,
           hw // hw_align, GROUPS=groups, SCATTER=scatter, HW_ALIGN=hw_align, BLOCK_R=block_r, BLOCK_HW=block_hw,
           num_warps=warps)


class _ConcatShuffledTriton(torch.autograd.Function):

    @staticmethod
    def forward(ctx, groups, *tensors):
        channels = [t.shape[1] for t in tensors]
        total = sum(channels)
        first = tensors[0]
        dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
        out = torch.empty((first.shape[0], total) + tuple(first.shape[2:]), device=first.device, dtype=dtype)
        for t, c, start in zip(tensors, channels, channel_starts(channels)):
            _copy(t.contiguous(), out, c, start, total, groups, True)
        ctx.groups, ctx.inputs = groups, [(t.shape, t.dtype) for t in tensors]
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        channels = [shape[1] for shape, _ in ctx.inputs]
        total = sum(channels)
        grads: List[Optional[torch.Tensor]] = []
        for (shape, dtype), needed, c, start in zip(ctx.inputs, ctx.needs_input_grad[1:], channels,
                                                     channel_starts(channels)):
            g = None
            if needed:
                g = grad.new_empty(shape, dtype=dtype)
                _copy(grad, g, c, start, total, ctx.groups, False)
            grads.append(g)
        return (None, *grads)


def concat_shuffled_triton(tensors: Sequence[torch.Tensor], groups: int) -> torch.Tensor:
    """Triton implementation of :func:`sparx_mm.ops.concat_shuffled` (inputs already checked, not empty).

    tensors (B, C_i, H, W) float32 / float16 / bfloat16 -> (B, sum C_i, H, W) in torch.cat's promoted dtype; the
    inputs' gradients contiguous, each in its input's dtype. Needs CUDA tensors (or ``TRITON_INTERPRET=1``).
    """
    for t in tensors:
        check_triton_launchable(t, 'concat_shuffled_triton')
    return _ConcatShuffledTriton.apply(groups, *tensors)
