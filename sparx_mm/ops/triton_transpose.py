"""Triton kernel of batched plane transposes: (N, H, W) maps -> (N, W, H), each plane read and written in tiles.

Users: the cross scan's column-major routes (x^T, dy^T, the merge of the pairs' sums, the projections in route
order; ``triton_cross_scan.py``) and the NCHW <-> channels-last conversions (``memory_format.py``: a (B, C, H, W)
map is B planes (C, H*W) in NCHW memory and B planes (H*W, C) in channels-last memory). A BLOCK_H x BLOCK_W tile
is read along the rows of the source and written along the rows of the destination, transposed in between, so
both sides are coalesced; torch's copy of a transposed view reads or writes one element a 32-byte sector (an
H100, batch 128, SparX-T: its NCHW <-> channels-last copies of the 96 x 56 x 56 float16 maps around the
downsampling layers took 0.24-0.30 ms each, ~0.5 TB/s; docs/benchmarks.md).

H and W are passed divided by their largest power-of-two factor up to 8 (``H_ALIGN``, ``W_ALIGN``, multiplied back
in the kernel; ``triton_launch.power_of_two_factor``): Triton specialises integers on divisibility by 16 only,
and with the factor known a 14 x 14 map's rows are read and written with vector accesses.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1`` (Triton's
CPU interpreter, which the CPU tests use).
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor
from .triton_op import TritonOp

#: Largest extent of a CUDA grid's y and z axes (the tiles along H and along W).
MAX_GRID_YZ = 65535
#: The tile edge (elements) along an axis longer than WHOLE_AXIS.
TILE = 32
#: Axes up to this long are covered whole by one tile (the next power of two): a 56 x 56 plane whole in one
#: 64 x 64 program. In 32 x 32 tiles such planes' rows are 64 bytes (float16), every other one starting
#: mid-sector: SparX-T's stage-1 x^T (128 x 192 float16 planes) took 0.231 ms against torch's copy's 0.169, and
#: 0.078 whole; the merge of the pairs' sums 0.290 -> 0.185; the scan's transposes at all four stages 0.811 ->
#: 0.540 ms; a SparX-T fp16 training step 102.1 / 102.6 -> 100.9 / 101.4 ms (H200, 2026-12-06:
#: ``check_kernels.py --only layout --whole-axis 32 64``, ``benchmark.py``; docs/benchmarks.md).
WHOLE_AXIS = 64
#: Elements a program moves at least: planes smaller than that go several to a program (``plane_tiling``; 14 x 14
#: float16 planes: 0.026 against 0.053 ms one a program).
TILE_ELEMENTS = TILE * TILE


@triton.jit
def _plane_transpose_kernel(src_ptr, add_ptr, out_ptr, N, H_UNITS, W_UNITS, run_planes, HAS_ADD: tl.constexpr,
                            ALTERNATE: tl.constexpr, H_ALIGN: tl.constexpr, W_ALIGN: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """out[n, w, h] = src[n, h, w] (+ add[n, w, h]) for the N planes of (N, H, W) maps, in float32 when adding,
    stored in out's dtype; a program takes a BLOCK_H x BLOCK_W tile of BLOCK_N planes. ALTERNATE: the planes come
    in runs of ``run_planes`` (a multiple of BLOCK_N: a program's planes are in one run), copied unchanged
    (out[n, h, w] = src[n, h, w]) in even runs and transposed in odd ones. H = H_UNITS * H_ALIGN, W = W_UNITS *
    W_ALIGN (module doc)."""
    H = H_UNITS * H_ALIGN
    W = W_UNITS * W_ALIGN
    first = tl.program_id(0).to(tl.int64) * BLOCK_N  # planes on the first grid axis: B*C passes the others' 65535
    ns = first + tl.arange(0, BLOCK_N)
    hs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ws = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    planes = (ns * H * W)[:, None, None]
    plane_ok = (ns < N)[:, None, None]
    src_mask = plane_ok & (hs < H)[None, :, None] & (ws < W)[None, None, :]
    src_offsets = planes + hs[None, :, None] * W + ws[None, None, :]
    tile = tl.load(src_ptr + src_offsets, mask=src_mask)
    copied = False
    if ALTERNATE:
        copied = (first // run_planes) % 2 == 0
    if copied:
        tl.store(out_ptr + src_offsets, tile.to(out_ptr.dtype.element_ty), mask=src_mask)
    else:
        # A new name: Triton 3.6 refuses a branch that redefines ``tile`` with another shape (the transposed one).
        transposed = tl.permute(tile, (0, 2, 1))
        offsets = planes + ws[None, :, None] * H + hs[None, None, :]
        mask = plane_ok & (ws < W)[None, :, None] & (hs < H)[None, None, :]
        if HAS_ADD:
            transposed = transposed.to(tl.float32) + tl.load(add_ptr + offsets, mask=mask).to(tl.float32)
        tl.store(out_ptr + offsets, transposed.to(out_ptr.dtype.element_ty), mask=mask)


def plane_transpose_fits(height: int, width: int) -> bool:
    """Whether (.., H, W) planes fit the kernel's grid (cdiv(H, 32) and cdiv(W, 32) tiles at most 65535 each, i.e.
    H and W up to 2,097,120)."""
    return max(cdiv(height, TILE), cdiv(width, TILE)) <= MAX_GRID_YZ


def _tile_edge(length: int) -> int:
    edge = next_power_of_2(length)
    return edge if edge <= WHOLE_AXIS else TILE


def plane_tiling(planes: int, height: int, width: int, run_planes: int = 0):
    """(BLOCK_N, BLOCK_H, BLOCK_W, grid) of the kernel for ``planes`` (height, width) planes: an axis whole
    when it is at most WHOLE_AXIS long, else in TILE-element pieces; planes of fewer than TILE_ELEMENTS elements
    several to a program, and with ``run_planes`` (the alternating runs) a power of two that divides it."""
    block_h, block_w = _tile_edge(height), _tile_edge(width)
    block_n = max(1, TILE_ELEMENTS // (block_h * block_w))
    if run_planes:
        block_n = min(block_n, run_planes & -run_planes)  # the largest power of two dividing run_planes
    return block_n, block_h, block_w, (cdiv(planes, block_n), cdiv(height, block_h), cdiv(width, block_w))


def plane_transpose(src: torch.Tensor, add: Optional[torch.Tensor] = None, dtype: Optional[torch.dtype] = None,
                    alternate_every: int = 0) -> torch.Tensor:
    """(..., H, W) contiguous -> (..., W, H): ``src`` transposed (+ ``add``, (..., W, H)), in ``dtype`` (default
    src's). ``alternate_every`` = r > 0 (without ``add``): the planes (src viewed as (N, H, W)) in runs of r,
    the even runs copied as they are and the odd ones transposed, into a buffer of src's shape (each transposed
    plane's W x H elements in its plane's H * W places)."""
    h, w = src.shape[-2:]
    if not plane_transpose_fits(h, w):
        raise ValueError(f'plane_transpose: {h} x {w} planes need a grid beyond CUDA\'s {MAX_GRID_YZ} tiles of '
                         f'{TILE} along an axis; use torch\'s copy for such maps')
    if alternate_every and add is not None:
        raise ValueError('plane_transpose: alternate_every does not take an add')
    shape = src.shape if alternate_every else (*src.shape[:-2], w, h)
    out = torch.empty(shape, device=src.device, dtype=dtype or src.dtype)
    if out.numel():
        planes = src.numel() // (h * w)
        block_n, block_h, block_w, grid = plane_tiling(planes, h, w, alternate_every)
        h_align, w_align = power_of_two_factor(h), power_of_two_factor(w)
        launch(_plane_transpose_kernel, grid, src, out if add is None else add, out, planes, h // h_align,
               w // w_align, max(alternate_every, 1), HAS_ADD=add is not None, ALTERNATE=alternate_every > 0,
               H_ALIGN=h_align, W_ALIGN=w_align, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=4)
    return out


def _layout_transpose(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, C, H, W) dense in NCHW memory -> the same in channels-last memory (``channels_last``), or back: the
    (B, C, H*W) planes transposed to (B, H*W, C) or back (:func:`sparx_mm.ops.convert_memory_format`)."""
    b, c, h, w = x.shape
    if channels_last:  # the (B, H*W, C) result seen as (B, C, H, W) with channels-last strides
        return plane_transpose(x.view(b, c, h * w)).view(b, h, w, c).permute(0, 3, 1, 2)
    return plane_transpose(x.permute(0, 2, 3, 1).reshape(b, h * w, c)).view(b, c, h, w)


def _layout_transpose_fake(x, channels_last):
    return torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _layout_setup_context(ctx, inputs, output):
    ctx.channels_last = inputs[1]


def _layout_backward(ctx, grad):
    from .memory_format import convert_memory_format  # x was dense in the other format: the gradient goes back to it
    return convert_memory_format(grad, torch.contiguous_format if ctx.channels_last else torch.channels_last), None


# A TritonOp (triton_op.py): a custom op under torch.compile, a direct call (or autograd.Function) in eager mode.
layout_transpose = TritonOp('sparx_mm::layout_transpose', _layout_transpose, _layout_transpose_fake,
                            _layout_setup_context, _layout_backward)
