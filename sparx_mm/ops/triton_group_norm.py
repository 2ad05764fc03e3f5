"""Triton kernels of :func:`sparx_mm.ops.group_norm_one_group` (GroupNorm with one group), forward and backward.

``x`` (B, C, *spatial) is read as a contiguous (B*C rows, S = prod(spatial) columns) matrix; a sample's
statistics are over its C rows, M = C*S elements.

Forward, three launches:

1. row moments: each program reduces a (BLOCK_R rows x BLOCK_S columns) tile at a time over its rows'
   columns, merging each chunk's mean and M2 (sum of squared deviations from the mean) into the running
   ones with Chan's formula, so no sum / sum-of-squares cancellation. When there are too few rows to fill
   the GPU, each row's columns are split between several programs (partial moments).
2. sample statistics: one program per sample merges its partial moments (first the weighted mean, then
   M2 = sum of partial M2 + count * (partial mean - mean)^2) into mean and rstd = 1 / sqrt(M2 / M + eps).
3. normalise: y = (x - mean_b) * rstd_b * weight_c + bias_c, in float32, written in the output dtype. This
   launch alone, on the saved statistics, recomputes y for a backward pass that did not keep it
   (:func:`group_norm_one_group_triton_with_recipe`).

Backward, three launches, with xhat = (x - mean) * rstd and g = dy * weight: per-row (partial) sums of dy
and dy * xhat in one pass over x and dy; then one launch that forms each sample's mean_M(g) and
mean_M(g * xhat) and each channel's d weight and d bias (sums of dy * xhat and dy over samples: deterministic,
no atomics); then dx = rstd * (g - mean_M(g) - xhat * mean_M(g * xhat)). The backward pass reads x and the
per-sample mean and rstd saved by the forward pass, not its output. Where x is also a pre-norm block's skip path
(:func:`group_norm_one_group_with_skip_triton`), the dx kernel adds that path's gradient of x as it writes dx.

The column count is passed divided by its largest power-of-two factor up to 8 (``S_ALIGN``, multiplied back in
the kernels; ``triton_launch.power_of_two_factor``): Triton specialises integers on divisibility by 16 only, and
with the factor known a 14 x 14 map's rows (196 columns) are read and written with vector accesses.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import triton_op
from .gpu_backends import check_triton_launchable, gradient_needed
from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor
from .triton_op import TritonOp

#: (elements per program tile, warps) of the two reduction kernels (row moments, gradient row sums) and of the
#: two elementwise kernels (normalise, dx). A tile is BLOCK_S = min(next_power_of_2(S), tile) columns by
#: tile // BLOCK_S rows (fewer for small inputs). H100, SparX-T's sizes at batch 128: (2048, 4) for both ran
#: the 14 x 14 and 7 x 7 maps 5-35 % faster than (4096, 8) and as fast on the larger ones; 1024-element tiles
#: were no faster, 16384-element elementwise tiles 2-4x slower on the small maps
#: (tools/gpu_checks/check_group_norm.py --reduce-tiling / --elementwise-tiling).
REDUCE_TILING = (2048, 4)
ELEMENTWISE_TILING = (2048, 4)
#: The reduction kernels split rows between programs, by whole column chunks, until the grid has about this
#: many programs (an H100 has 132 multiprocessors): small batches of large maps would otherwise run a few
#: long programs, one per row block.
MIN_REDUCE_PROGRAMS = 1024
#: Partial results (or a channels x samples tile of them) one program of the small reduction kernels (sample
#: statistics; the backward pass's sample terms and parameter gradients) reads at a time, and its warps.
SAMPLE_TILING = (1024, 4)


@triton.jit
def _row_block(block, rows, C, BLOCK_R: tl.constexpr):
    """Rows of row block ``block``, their mask, and their samples and channels."""
    r = block * BLOCK_R + tl.arange(0, BLOCK_R)
    return r, r < rows, r // C, r % C


@triton.jit
def _tile_offsets(r, mask_r, c, S):
    """Offsets and mask of the (rows r) x (columns c) tile of a (rows, S) matrix (int64: rows * S passes 2**31
    on large inputs)."""
    offsets = r.to(tl.int64)[:, None] * S + c[None, :]
    return offsets, mask_r[:, None] & (c < S)[None, :]


@triton.jit
def _row_moments_kernel(x_ptr, moments_ptr, rows, C, S_UNITS, chunks_per_split,
                        S_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Mean and M2 of the columns of split ``program_id(1)`` of BLOCK_R rows, stored at [0, row, split] and
    [1, row, split] of the (2, rows, splits) float32 ``moments``."""
    S = S_UNITS * S_ALIGN
    r, mask_r, _, _ = _row_block(tl.program_id(0), rows, C, BLOCK_R)
    split = tl.program_id(1)
    start = split * chunks_per_split * BLOCK_S
    cols = tl.arange(0, BLOCK_S)
    count = 0.0
    mean = tl.zeros([BLOCK_R], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_R], dtype=tl.float32)
    # The last split may hold fewer chunks than the others.
    for i in range(tl.minimum(chunks_per_split, tl.cdiv(S - start, BLOCK_S))):
        chunk_start = start + i * BLOCK_S
        offsets, mask = _tile_offsets(r, mask_r, chunk_start + cols, S)
        v = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        n = tl.minimum(S - chunk_start, BLOCK_S).to(tl.float32)
        chunk_mean = tl.sum(v, axis=1) / n
        dev = tl.where(mask, v - chunk_mean[:, None], 0.0)
        total = count + n
        delta = chunk_mean - mean
        mean += delta * (n / total)
        m2 += tl.sum(dev * dev, axis=1) + delta * delta * (count * n / total)
        count = total
    splits = tl.num_programs(1)
    out = r.to(tl.int64) * splits + split
    tl.store(moments_ptr + out, mean, mask=mask_r)
    tl.store(moments_ptr + tl.cast(rows, tl.int64) * splits + out, m2, mask=mask_r)


@triton.jit
def _sample_stats_kernel(moments_ptr, stats_ptr, C, S, splits, split_len, inv_m, eps, BLOCK: tl.constexpr):
    """Merges sample ``program_id(0)``'s C * splits partial moments (count, mean, M2) into its mean and rstd, at
    stats[0, b] and stats[1, b] of the (2, B) float32 ``stats``."""
    b = tl.program_id(0).to(tl.int64)
    B = tl.num_programs(0)
    n = C * splits
    base = b * n
    mean_ptr = moments_ptr
    m2_ptr = moments_ptr + tl.cast(B, tl.int64) * n
    idx0 = tl.arange(0, BLOCK)
    # Two passes over the partials (a few KB, cached): the mean first, then the deviations from it.
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        idx = start + idx0
        mask = idx < n
        count = tl.minimum(split_len, S - (idx % splits) * split_len).to(tl.float32)
        acc += tl.where(mask, count * tl.load(mean_ptr + base + idx, mask=mask, other=0.0), 0.0)
    mean = tl.sum(acc, axis=0) * inv_m
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        idx = start + idx0
        mask = idx < n
        count = tl.minimum(split_len, S - (idx % splits) * split_len).to(tl.float32)
        delta = tl.load(mean_ptr + base + idx, mask=mask, other=0.0) - mean
        acc += tl.where(mask, tl.load(m2_ptr + base + idx, mask=mask, other=0.0) + count * delta * delta, 0.0)
    var = tl.sum(acc, axis=0) * inv_m
    tl.store(stats_ptr + b, mean)
    tl.store(stats_ptr + B + b, tl.rsqrt(var + eps))


@triton.jit
def _normalize_kernel(x_ptr, y_ptr, w_ptr, b_ptr, stats_ptr, rows, C, S_UNITS, col_blocks,
                      S_ALIGN: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """y = (x - mean) * rstd * weight + bias on one (BLOCK_R, BLOCK_S) tile, written in y's dtype."""
    S = S_UNITS * S_ALIGN
    r, mask_r, sample, channel = _row_block(tl.program_id(0) // col_blocks, rows, C, BLOCK_R)
    c = (tl.program_id(0) % col_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    offsets, mask = _tile_offsets(r, mask_r, c, S)
    mean = tl.load(stats_ptr + sample, mask=mask_r, other=0.0)
    scale = tl.load(stats_ptr + rows // C + sample, mask=mask_r, other=0.0)
    if HAS_WEIGHT:
        scale *= tl.load(w_ptr + channel, mask=mask_r, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    # Centred before scaling (one more operation on a memory-bound kernel), so that a mean large against the
    # spread costs no precision, unlike x * scale + (bias - mean * scale).
    y = (x - mean[:, None]) * scale[:, None]
    if HAS_BIAS:
        y += tl.load(b_ptr + channel, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_row_sums_kernel(x_ptr, dy_ptr, stats_ptr, sums_ptr, rows, C, S_UNITS, chunks_per_split,
                          S_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Sums of dy and dy * xhat over the columns of split ``program_id(1)`` of BLOCK_R rows, stored at
    [0, row, split] and [1, row, split] of the (2, rows, splits) float32 ``sums``."""
    S = S_UNITS * S_ALIGN
    r, mask_r, sample, _ = _row_block(tl.program_id(0), rows, C, BLOCK_R)
    split = tl.program_id(1)
    start = split * chunks_per_split * BLOCK_S
    cols = tl.arange(0, BLOCK_S)
    mean = tl.load(stats_ptr + sample, mask=mask_r, other=0.0)
    s1 = tl.zeros([BLOCK_R], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_R], dtype=tl.float32)
    for i in range(tl.minimum(chunks_per_split, tl.cdiv(S - start, BLOCK_S))):
        offsets, mask = _tile_offsets(r, mask_r, start + i * BLOCK_S + cols, S)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        s1 += tl.sum(dy, axis=1)
        s2 += tl.sum(dy * (x - mean[:, None]), axis=1)  # masked dy is 0
    splits = tl.num_programs(1)
    out = r.to(tl.int64) * splits + split
    tl.store(sums_ptr + out, s1, mask=mask_r)
    rstd = tl.load(stats_ptr + rows // C + sample, mask=mask_r, other=0.0)
    tl.store(sums_ptr + tl.cast(rows, tl.int64) * splits + out, s2 * rstd, mask=mask_r)


@triton.jit
def _sample_terms(s1_ptr, s2_ptr, w_ptr, terms_ptr, b, B, C, splits, inv_m, HAS_WEIGHT: tl.constexpr,
                  BLOCK: tl.constexpr):
    """mean_M(g) and mean_M(g * xhat) of sample b, at terms[0, b] and terms[1, b]."""
    n = C * splits
    base = b.to(tl.int64) * n
    acc1 = tl.zeros([BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < n
        v1 = tl.load(s1_ptr + base + idx, mask=mask, other=0.0)
        v2 = tl.load(s2_ptr + base + idx, mask=mask, other=0.0)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + idx // splits, mask=mask, other=0.0).to(tl.float32)
            v1 *= w
            v2 *= w
        acc1 += v1
        acc2 += v2
    tl.store(terms_ptr + b, tl.sum(acc1, axis=0) * inv_m)
    tl.store(terms_ptr + B + b, tl.sum(acc2, axis=0) * inv_m)


@triton.jit
def _param_grads(s1_ptr, s2_ptr, dparams_ptr, block, B, C, splits, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """d weight (sums of s2) and d bias (sums of s1) of channel block ``block``, at dparams[0, c] and
    dparams[1, c]."""
    c = block * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    # k runs over (sample, split) pairs, BLOCK_K at a time: a loop over samples alone would issue B dependent
    # rounds of small loads.
    n = B * splits
    acc1 = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)
    for start in range(0, n, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        idx = ((k // splits).to(tl.int64) * C * splits + k % splits)[:, None] + (c * splits)[None, :]
        mask = (k < n)[:, None] & mask_c[None, :]
        acc1 += tl.load(s1_ptr + idx, mask=mask, other=0.0)
        acc2 += tl.load(s2_ptr + idx, mask=mask, other=0.0)
    tl.store(dparams_ptr + c, tl.sum(acc2, axis=0), mask=mask_c)
    tl.store(dparams_ptr + C + c, tl.sum(acc1, axis=0), mask=mask_c)


@triton.jit
def _grad_reduce_kernel(sums_ptr, w_ptr, terms_ptr, dparams_ptr, B, C, splits, inv_m,
                        HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
                        BLOCK_C: tl.constexpr):
    """The reductions of the (2, B, C, splits) partial sums ``sums`` (s1 of dy, s2 of dy * xhat) in one launch:
    programs 0 .. B-1 the sample terms, one per sample, into the (2, B) ``terms``; the next ones the parameter
    gradients, one per BLOCK_C channels, into the (2, C) ``dparams``."""
    pid = tl.program_id(0)
    s1_ptr = sums_ptr
    s2_ptr = sums_ptr + tl.cast(B, tl.int64) * C * splits
    if pid < B:
        _sample_terms(s1_ptr, s2_ptr, w_ptr, terms_ptr, pid, B, C, splits, inv_m, HAS_WEIGHT, BLOCK)
    else:
        _param_grads(s1_ptr, s2_ptr, dparams_ptr, pid - B, B, C, splits, BLOCK_K, BLOCK_C)


@triton.jit
def _grad_input_kernel(x_ptr, dy_ptr, dx_ptr, w_ptr, stats_ptr, terms_ptr, skip_grad_ptr, rows, C, S_UNITS,
                       col_blocks, S_ALIGN: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_SKIP_GRAD: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """dx = rstd * (dy * weight - mean_M(g) - xhat * mean_M(g * xhat)) (+ the skip path's gradient of x) on one
    tile, summed in float32 and written in dx's dtype."""
    S = S_UNITS * S_ALIGN
    r, mask_r, sample, channel = _row_block(tl.program_id(0) // col_blocks, rows, C, BLOCK_R)
    c = (tl.program_id(0) % col_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    offsets, mask = _tile_offsets(r, mask_r, c, S)
    B = rows // C
    mean = tl.load(stats_ptr + sample, mask=mask_r, other=0.0)
    rstd = tl.load(stats_ptr + B + sample, mask=mask_r, other=0.0)
    g_mean = tl.load(terms_ptr + sample, mask=mask_r, other=0.0)
    gx_mean = tl.load(terms_ptr + B + sample, mask=mask_r, other=0.0)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_WEIGHT:
        g *= tl.load(w_ptr + channel, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    xhat = (x - mean[:, None]) * rstd[:, None]
    dx = rstd[:, None] * (g - g_mean[:, None] - xhat * gx_mean[:, None])
    if HAS_SKIP_GRAD:
        dx += tl.load(skip_grad_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _tile_shape(rows: int, cols: int, tile: int) -> Tuple[int, int]:
    """(BLOCK_R, BLOCK_S) of a tile of about ``tile`` elements over a (rows, cols) matrix."""
    block_s = min(next_power_of_2(cols), tile)
    return min(tile // block_s, next_power_of_2(rows)), block_s


def _reduce_layout(rows: int, cols: int):
    """Launch layout of the reduction kernels: (BLOCK_R, BLOCK_S, row blocks, splits, chunks per split)."""
    block_r, block_s = _tile_shape(rows, cols, REDUCE_TILING[0])
    row_blocks = cdiv(rows, block_r)
    chunks = cdiv(cols, block_s)
    per_split = cdiv(chunks, min(chunks, cdiv(MIN_REDUCE_PROGRAMS, row_blocks)))
    return block_r, block_s, row_blocks, cdiv(chunks, per_split), per_split


def _elementwise_launch(rows: int, cols: int):
    """(grid, meta) of the elementwise kernels: one program per tile, row blocks times column blocks."""
    block_r, block_s = _tile_shape(rows, cols, ELEMENTWISE_TILING[0])
    col_blocks = cdiv(cols, block_s)
    grid = (cdiv(rows, block_r) * col_blocks,)
    return grid, dict(col_blocks=col_blocks, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=ELEMENTWISE_TILING[1])


def _sizes(x: torch.Tensor) -> Tuple[int, int, int]:
    """(B, C, S) of a (B, C, *spatial) tensor."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _group_norm_fwd(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float,
                    out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, *spatial) contiguous -> y (x's shape, out_dtype), stats (2, B) float32: each sample's mean and
    rstd."""
    batch, channels, cols = _sizes(x)
    rows = batch * channels
    block_r, block_s, row_blocks, splits, per_split = _reduce_layout(rows, cols)
    moments = torch.empty(2, rows * splits, device=x.device, dtype=torch.float32)  # partial means and M2
    s_align = power_of_two_factor(cols)
    launch(_row_moments_kernel, (row_blocks, splits), x, moments, rows, channels, cols // s_align, per_split,
           S_ALIGN=s_align, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=REDUCE_TILING[1])
    stats = torch.empty(2, batch, device=x.device, dtype=torch.float32)
    launch(_sample_stats_kernel, (batch,), moments, stats, channels, cols, splits, per_split * block_s,
           1.0 / (channels * cols), eps, BLOCK=SAMPLE_TILING[0], num_warps=SAMPLE_TILING[1])
    return _normalize(x, stats, weight, bias, out_dtype), stats


def _normalize(x: torch.Tensor, stats: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
               out_dtype: torch.dtype) -> torch.Tensor:
    """The forward pass's last launch: x (B, C, *spatial) contiguous and its samples' stats (2, B) -> y (x's
    shape, out_dtype)."""
    batch, channels, cols = _sizes(x)
    rows, s_align = batch * channels, power_of_two_factor(cols)
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    grid, meta = _elementwise_launch(rows, cols)
    launch(_normalize_kernel, grid, x, y, weight, bias, stats, rows, channels, cols // s_align,
           S_ALIGN=s_align, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, **meta)
    return y


def _group_norm_fwd_fake(x, weight, bias, eps, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty(2, x.shape[0], dtype=torch.float32)


def _group_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor], stats: torch.Tensor,
                    skip_grad: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """dy, x (B, C, *spatial) contiguous, stats (2, B), skip_grad None or (x's shape) contiguous: the gradient
    x gets from its other use, added into dx -> dx (x's dtype), (2, C) float32 d weight and d bias."""
    batch, channels, cols = _sizes(x)
    rows = batch * channels
    f32 = dict(device=x.device, dtype=torch.float32)
    block_r, block_s, row_blocks, splits, per_split = _reduce_layout(rows, cols)
    sums = torch.empty(2, rows * splits, **f32)  # partial sums of dy and dy * xhat
    s_align = power_of_two_factor(cols)
    launch(_grad_row_sums_kernel, (row_blocks, splits), x, dy, stats, sums, rows, channels, cols // s_align,
           per_split, S_ALIGN=s_align, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=REDUCE_TILING[1])
    terms = torch.empty(2, batch, **f32)
    dparams = torch.empty(2, channels, **f32)
    block, warps = SAMPLE_TILING
    block_c = min(next_power_of_2(channels), 32, block)
    launch(_grad_reduce_kernel, (batch + cdiv(channels, block_c),),
           sums, weight, terms, dparams, batch, channels, splits, 1.0 / (channels * cols),
           HAS_WEIGHT=weight is not None, BLOCK=block, BLOCK_K=block // block_c, BLOCK_C=block_c, num_warps=warps)
    dx = torch.empty_like(x)
    grid, meta = _elementwise_launch(rows, cols)
    launch(_grad_input_kernel, grid, x, dy, dx, weight, stats, terms, skip_grad, rows, channels, cols // s_align,
           S_ALIGN=s_align, HAS_WEIGHT=weight is not None, HAS_SKIP_GRAD=skip_grad is not None, **meta)
    return dx, dparams


def _group_norm_bwd_fake(dy, x, weight, stats, skip_grad):
    return torch.empty_like(x), x.new_empty(2, x.shape[1], dtype=torch.float32)


_group_norm_bwd = TritonOp('sparx_mm::group_norm_one_group_bwd', _group_norm_bwd, _group_norm_bwd_fake)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _eps, _out_dtype = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.bias_dtype = None if bias is None else bias.dtype


def _input_and_param_grads(ctx, dy, skip_grad):
    """The gradients of (x, weight, bias, eps, out_dtype) from the output's dy (and x's skip-path gradient, or
    None), with the context ``_setup_context`` filled."""
    x, weight, stats = ctx.saved_tensors
    dx, dparams = _group_norm_bwd(dy.contiguous(), x, weight, stats,
                                  None if skip_grad is None else skip_grad.contiguous())
    return (dx, None if weight is None else dparams[0].to(weight.dtype),
            None if ctx.bias_dtype is None else dparams[1].to(ctx.bias_dtype), None, None)


def _backward(ctx, dy, _dstats):
    return _input_and_param_grads(ctx, dy, None)


_group_norm_fwd = TritonOp('sparx_mm::group_norm_one_group_fwd', _group_norm_fwd, _group_norm_fwd_fake,
                           _setup_context, _backward)


def _forward_args(x, weight, bias, eps, out_dtype, caller: str):
    """``_group_norm_fwd``'s arguments (x, weight, bias contiguous; eps a float), x checked launchable."""
    check_triton_launchable(x, caller)
    return (x.contiguous(), None if weight is None else weight.contiguous(),
            None if bias is None else bias.contiguous(), float(eps), out_dtype)


def group_norm_one_group_triton(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                                eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """Triton implementation of :func:`sparx_mm.ops.group_norm_one_group` (inputs already checked, x not empty).

    x (B, C, *spatial) float32 / float16 / bfloat16, weight / bias (C,) or None -> (B, C, *spatial) out_dtype.
    Needs CUDA tensors (or ``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests).
    """
    y, _ = _group_norm_fwd(*_forward_args(x, weight, bias, eps, out_dtype, 'group_norm_one_group_triton'))
    return y


def group_norm_one_group_triton_with_recipe(x: torch.Tensor, weight: Optional[torch.Tensor],
                                            bias: Optional[torch.Tensor], eps: float, out_dtype: torch.dtype):
    """Triton implementation of :func:`sparx_mm.ops.group_norm_one_group_with_recipe` (inputs already checked, x not
    empty): (y, fn, args) with ``fn(*args)`` y again, bit for bit: the normalising launch alone on the samples'
    mean and rstd that this forward pass computed (one read of x), where the whole norm reads x twice."""
    args = _forward_args(x, weight, bias, eps, out_dtype, 'group_norm_one_group_triton_with_recipe')
    y, stats = _group_norm_fwd(*args)
    x, weight, bias = args[:3]
    return y, _normalize, (x, stats.detach(), weight, bias, out_dtype)


class _GroupNormWithSkip(torch.autograd.Function):
    """Eager autograd of :func:`group_norm_one_group_with_skip_triton`: outputs (y, x's alias); the backward pass
    gets both outputs' gradients in one call and adds the alias's (the skip path's) into dx in the dx kernel.
    Either gradient may be None (an output nobody differentiated)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        inputs = (x, weight, bias, eps, out_dtype)
        y, stats = _group_norm_fwd.fn(*inputs)
        _setup_context(ctx, inputs, (y, stats))
        ctx.set_materialize_grads(False)
        return y, x.view_as(x)

    @staticmethod
    def backward(ctx, dy, skip_grad):
        if dy is None:
            return skip_grad, None, None, None, None
        return _input_and_param_grads(ctx, dy, skip_grad)


def group_norm_one_group_with_skip_triton(x: torch.Tensor, weight: Optional[torch.Tensor],
                                          bias: Optional[torch.Tensor], eps: float,
                                          out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Triton implementation of :func:`sparx_mm.ops.group_norm_one_group_with_skip` (inputs already checked, x not
    empty): (y, skip), y as :func:`group_norm_one_group_triton`'s and skip x itself (a view of it).

    In eager mode with gradients on, the gradient skip gets from its uses is added into dx inside the norm's dx
    kernel (where autograd would add the two gradients of x in a pass of its own). Traced (torch.compile) or
    without gradients, ``(y, x)`` from the custom op, and autograd (or the compiler) adds.
    """
    args = _forward_args(x, weight, bias, eps, out_dtype, 'group_norm_one_group_with_skip_triton')
    x, weight, bias = args[:3]
    if triton_op.traced_call(args) or not gradient_needed(x, weight, bias):
        return _group_norm_fwd(*args)[0], x
    return _GroupNormWithSkip.apply(*args)
