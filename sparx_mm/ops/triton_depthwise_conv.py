"""Triton kernels of :func:`sparx_mm.ops.depthwise_conv2d_act`, forward and backward.

Rows streamed through registers. A program takes ``BLOCK_P`` planes (n = b * C + c: consecutive channels of a
sample, or the last channels of one sample and the first of the next) x ``BLOCK_W`` columns (W rounded up to a
power of two, up to ``MAX_BLOCK_W``; wider maps get several column blocks) and walks down a run of the map's
rows. Each input row is loaded once a program, at the k column shifts dj = -k//2 .. k//2 (masked loads: the
mask gives the zero padding), and feeds the k output rows it touches, so a position costs k loads instead of the
k*k of a tile that loads every tap separately. The k*k weights and the bias of each plane's channel stay in
registers. Sums are float32; the residual is the centre weight plus one. Runs of rows (``_tiling``) give small
batches enough programs; each run reloads k - 1 rows around it. The row length is passed divided by its
largest power-of-two factor up to 8 (``W_ALIGN``, multiplied back in the kernels): Triton specialises integers
on divisibility by 16 only, and with the factor known the unshifted loads and the stores of 56-, 28- and
14-column rows are vector accesses.

Forward (``_fwd_kernel``): z = sum_taps w * x_shifted + bias (+ x); y = act(z) in the output dtype. Input row q
adds its horizontal convolution with kernel row i to output row q - i + k//2: k - 1 partial output rows are
carried from one input row to the next, and output row q - k//2 is complete after row q.

Backward, from x, weight and bias only (neither z nor y is saved): ``_grad_kernel`` carries the k x k window of
shifted input rows around output row r (k - 1 rows carried, one loaded a step), recomputes z from it, writes
gz = dy * act'(z) (in dy's dtype, as autograd's activation gradient; without an activation gz is dy and nothing
is written) and adds the float32 gz * x_shifted to k*k running products a position (and gz to one for the
bias); each program reduces them across its columns once, at the end, into one row of partial sums a plane,
which torch adds up over the batch and the runs (no atomics: deterministic). Then dx = conv(gz, weight flipped
in both axes) + (gz if residual): the forward kernel without bias or activation.

Forward and gradient in row segments (``_fwd_segment_kernel``, ``_grad_segment_kernel``,
``SPARX_DEPTHWISE_KERNELS=segments``; not yet timed on a GPU): a thread holds ``V`` consecutive columns of a
plane's row (a whole row of up to 16 columns, or one of a row's segments of 8 or fewer) and loads them with vector
accesses of up to 16 bytes (``U`` elements: as wide as the row length's power-of-two factor allows), plus K//2
halo columns on each side of a segment (scalar loads; none for a whole row). The shifted columns a tap needs are
then the thread's own registers: a row costs about V / U + K - 1 load instructions a segment instead of K a
position, and a thread keeps V values a row where the shifted loads kept K a position. Same recurrences over the
rows as ``_fwd_kernel`` and ``_grad_kernel`` (whose K*K running products a position become K*K sums a thread:
the segment's columns are summed as they come). The vectors are taken apart into columns and put back together
with ``tl.split`` / ``tl.join``, which stay in registers while each vector is one thread's (sm_90 codegen:
``tests/test_ops/test_hopper_codegen.py``).

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable, choice_from_environment
from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor
from .triton_op import TritonOp

#: (values a thread holds, warps) of the forward kernel, which also computes dx. A thread keeps the k*k weights
#: of each plane it holds in registers, so its tile has max(1, values // k*k) positions a thread, rounded down
#: to a power of two. H100, SparX-T's six kinds of depthwise conv at batch 128, forward kernel in all, fp16:
#: 1.38 ms; (36, 4) 1.39, (36, 2) 1.41; before the rows were loaded a step ahead (9, 4), (36, 8), (72, 4)
#: 1.47-1.74 (``tools/gpu_checks/check_depthwise_conv.py --only sweep``). fp32: 1.66 ms, (36, 4) 1.72.
FWD_TILING = (18, 4)
#: (values a thread holds, warps) of the gradient kernel: a thread keeps 2 k*k float32 values a position it
#: holds (the window of shifted inputs and the running products), so its tile has max(1, values // (2 k*k))
#: positions a thread, rounded down to a power of two. Same sizes, fp16: 2.40 ms; (72, 2) 2.68, (72, 4) 2.74.
#: ptxas (sm_90) at these tilings: k = 3 and 5 at most 56 registers forward, 119 gradient; spills only in the
#: gradient kernel for k = 9 with an activation.
BWD_TILING = (36, 4)
#: Programs each kernel aims for (forward, gradient): when the planes' tiles are fewer, the rows are cut into
#: runs until there are about this many programs.
MIN_PROGRAMS = (1024, 1024)
#: Widest column block; wider maps are split into several.
MAX_BLOCK_W = 128
#: Activation codes of the kernels.
ACT_CODES = {'none': 0, 'gelu': 1, 'silu': 2}

KERNELS_ENV = 'SPARX_DEPTHWISE_KERNELS'
KERNEL_CHOICES = ('shifts', 'segments')


def _kernels_by_environment() -> str:
    return choice_from_environment(KERNELS_ENV, KERNEL_CHOICES,
                                   'shifts (the default: _fwd_kernel and _grad_kernel, one load a position and shift) '
                                   'and segments (_fwd_segment_kernel and _grad_segment_kernel: vector loads of row '
                                   'segments, the shifted columns from registers)')


#: The forward kernel (which also computes dx) and the gradient kernel: 'shifts' (``_fwd_kernel``,
#: ``_grad_kernel``: timed) or 'segments' (``_fwd_segment_kernel``, ``_grad_segment_kernel``: written 2026-12-05
#: without a GPU, to be timed against them; ``tools/gpu_checks/check_depthwise_conv.py --only bench`` times
#: both). Both from ``SPARX_DEPTHWISE_KERNELS`` at import; either may be set at run time.
FORWARD = GRADIENT = _kernels_by_environment()
#: Float32 values a thread of a segment kernel may keep for a row segment of V columns with a k x k kernel
#: (:func:`_segment_values`; forward: (k - 1) V partial output rows, two rows of V + k - 1 columns, the current
#: one and the one loaded ahead, and the k*k weights). Whole rows of up to 16 columns where they fit (SparX's
#: 14 x 14 and 7 x 7 maps with k = 3: forward 77 and 45 values, gradient 122 and 74), else segments of 8, 4, 2
#: or 1 columns (k = 5: forward 81 at 8, gradient 106 at 4).
SEGMENT_VALUES = 128
#: Widest row a thread of the segment kernel holds whole (no halo columns).
SEGMENT_WHOLE_ROW = 16
#: (warps, programs aimed at) of the segment kernel: a thread holds one segment of one plane's row; when the
#: planes' tiles are fewer than the programs aimed at, the rows are cut into runs (as :func:`_tiling`).
SEGMENT_TILING = (4, 1024)
#: Most segments a program takes of a row (wider rows: several blocks of segments, grid axis 1).
SEGMENT_MAX_SEGMENTS = 32


@triton.jit
def _program_tile(C, H, W, n_planes, run_rows, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's planes n = b * C + c (grid axis 0), columns (axis 1) and run of rows (axis 2): n and each
    plane's channel, validity (BLOCK_P) and element offset (int64: plane offsets pass 2**31 in large batches),
    the columns (BLOCK_W), the tile's mask (BLOCK_P, BLOCK_W), and the run's output rows [first, last)."""
    n = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    plane_ok = n < n_planes
    first = tl.program_id(2) * run_rows
    return (n, n % C, plane_ok, n.to(tl.int64) * (H * W), cols, plane_ok[:, None] & (cols < W)[None, :], first,
            tl.minimum(first + run_rows, H))


@triton.jit
def _zero_tiles(COUNT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """A tuple of COUNT float32 (BLOCK_P, BLOCK_W) zero tiles (running sums)."""
    tiles = ()
    for _ in tl.static_range(COUNT):
        tiles = tiles + (tl.zeros([BLOCK_P, BLOCK_W], dtype=tl.float32), )
    return tiles


@triton.jit
def _shifted_row(x_ptr, plane_offs, plane_ok, q, H, W, cols, K: tl.constexpr):
    """Row ``q`` of the planes at the K column shifts -K//2 .. K//2: a tuple of K float32 (BLOCK_P, BLOCK_W)
    tiles, 0 outside the map (rows q < 0 or q >= H too)."""
    ptrs = x_ptr + (plane_offs + q * W)[:, None] + cols[None, :]
    ok = (plane_ok & (q >= 0) & (q < H))[:, None]
    row = ()
    for j in tl.static_range(K):
        shifted_cols = cols + (j - K // 2)
        mask = ok & ((shifted_cols >= 0) & (shifted_cols < W))[None, :]
        row = row + (tl.load(ptrs + (j - K // 2), mask=mask, other=0.0).to(tl.float32), )
    return row


@triton.jit
def _channel_taps(w_ptr, ch, plane_ok, K: tl.constexpr, RESIDUAL: tl.constexpr):
    """The K*K weights of each plane's channel, tap i*K + j a float32 (BLOCK_P, 1) column of a tuple; with the
    residual the centre tap plus one."""
    taps = ()
    for t in tl.static_range(K * K):
        w = tl.load(w_ptr + ch * (K * K) + t, mask=plane_ok, other=0.0).to(tl.float32)
        if RESIDUAL and t == (K * K) // 2:
            w += 1.0
        taps = taps + (w[:, None], )
    return taps


@triton.jit
def _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS: tl.constexpr):
    """Each plane's bias, (BLOCK_P, 1) float32; 0 without one."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + ch, mask=plane_ok, other=0.0).to(tl.float32)[:, None]
    else:
        bias = tl.zeros_like(ch.to(tl.float32))[:, None]
    return bias


@triton.jit
def _row_conv(row, taps, i: tl.constexpr, K: tl.constexpr):
    """The horizontal convolution of a shifted row (``_shifted_row``) with kernel row ``i``."""
    total = taps[i * K] * row[0]
    for j in tl.static_range(1, K):
        total += taps[i * K + j] * row[j]
    return total


@triton.jit
def _gelu_cdf(z):
    return 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))


@triton.jit
def _activation(z, ACT: tl.constexpr):
    if ACT == 1:
        y = z * _gelu_cdf(z)
    elif ACT == 2:
        y = z * tl.sigmoid(z)
    else:
        y = z
    return y


@triton.jit
def _activation_grad(z, ACT: tl.constexpr):
    """act'(z); only called with an activation."""
    if ACT == 1:
        d = _gelu_cdf(z) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)  # Phi(z) + z phi(z)
    else:
        s = tl.sigmoid(z)
        d = s * (1.0 + z * (1.0 - s))
    return d


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W_UNITS, n_planes, run_rows, K: tl.constexpr, ACT: tl.constexpr,
                HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, W_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr,
                BLOCK_W: tl.constexpr):
    """y = act(conv(x, w) + b (+ x)) for output rows [first, first + run_rows) of the tile (grid axis 2: the
    run); rows of W = W_UNITS * W_ALIGN columns (module doc)."""
    W = W_UNITS * W_ALIGN
    _, ch, plane_ok, plane_offs, cols, tile_ok, first, last = _program_tile(C, H, W, n_planes, run_rows, BLOCK_P,
                                                                            BLOCK_W)
    taps = _channel_taps(w_ptr, ch, plane_ok, K, RESIDUAL)
    bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    # partial[m]: output row q - K//2 + m before input row q, rows < q summed (m = 0 .. K-2).
    partial = _zero_tiles(K - 1, BLOCK_P, BLOCK_W)
    # The loads of row q + 1 are issued before the arithmetic of row q.
    next_row = _shifted_row(x_ptr, plane_offs, plane_ok, first - K // 2, H, W, cols, K)
    for q in range(first - K // 2, last + K // 2):
        row = next_row
        next_row = _shifted_row(x_ptr, plane_offs, plane_ok, q + 1, H, W, cols, K)
        z = _row_conv(row, taps, K - 1, K) + bias
        if K > 1:
            z += partial[0]
        out_row = q - K // 2
        tl.store(y_ptr + (plane_offs + out_row * W)[:, None] + cols[None, :],
                 _activation(z, ACT).to(y_ptr.dtype.element_ty), mask=tile_ok & (out_row >= first))
        advanced = ()
        for m in tl.static_range(K - 2):
            advanced = advanced + (partial[m + 1] + _row_conv(row, taps, K - 2 - m, K), )
        if K > 1:
            advanced = advanced + (_row_conv(row, taps, 0, K), )
        partial = advanced


@triton.jit
def _segment_tile(C, H, W, n_planes, run_rows, BLOCK_P: tl.constexpr, NSEG: tl.constexpr, V: tl.constexpr):
    """A segment kernel's program: its planes n = b * C + c (grid axis 0), their channels, validity and element
    offsets (int64), the first column of each of its NSEG segments (axis 1) and its run of output rows [first,
    last) (axis 2)."""
    n = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    first = tl.program_id(2) * run_rows
    return (n, n % C, n < n_planes, n.to(tl.int64) * (H * W), (tl.program_id(1) * NSEG + tl.arange(0, NSEG)) * V,
            first, tl.minimum(first + run_rows, H))


@triton.jit
def _split_columns(tile, BLOCK_P: tl.constexpr, NSEG: tl.constexpr, U: tl.constexpr, LOG_U: tl.constexpr):
    """A (BLOCK_P, NSEG, U) tile -> a tuple of its U columns, each (BLOCK_P, NSEG), in column order: halves split
    off log2(U) times (the high index bit last, so ``tl.split`` takes it)."""
    parts = (tile, )
    for level in tl.static_range(LOG_U):
        halves = ()
        for i in tl.static_range(1 << level):
            low, high = tl.split(tl.permute(tl.reshape(parts[i], [BLOCK_P, NSEG, 2, U >> (level + 1)]),
                                            (0, 1, 3, 2)))
            halves = halves + (low, high)
        parts = halves
    columns = ()
    for u in tl.static_range(U):
        columns = columns + (tl.reshape(parts[u], [BLOCK_P, NSEG]), )
    return columns


@triton.jit
def _join_columns(columns, BLOCK_P: tl.constexpr, NSEG: tl.constexpr, U: tl.constexpr, LOG_U: tl.constexpr):
    """The inverse of :func:`_split_columns`: a tuple of U (BLOCK_P, NSEG) columns -> a (BLOCK_P, NSEG, U) tile."""
    parts = ()
    for u in tl.static_range(U):
        parts = parts + (tl.reshape(columns[u], [BLOCK_P, NSEG, 1]), )
    for level in tl.static_range(LOG_U):
        pairs = ()
        for i in tl.static_range(U >> (level + 1)):
            pair = tl.join(parts[2 * i], parts[2 * i + 1])  # (BLOCK_P, NSEG, 2**level, 2): which half last
            pairs = pairs + (tl.reshape(tl.permute(pair, (0, 1, 3, 2)), [BLOCK_P, NSEG, 2 << level]), )
        parts = pairs
    return parts[0]


@triton.jit
def _segment_row(x_ptr, plane_offs, plane_ok, q, H, W, seg_start, K: tl.constexpr, V: tl.constexpr,
                 U: tl.constexpr, LOG_U: tl.constexpr, HALO: tl.constexpr, BLOCK_P: tl.constexpr,
                 NSEG: tl.constexpr):
    """Row ``q`` of the tile's segments (columns seg_start .. seg_start + V - 1 of each plane) with K//2 halo
    columns each side: a tuple of V + 2 (K//2) float32 (BLOCK_P, NSEG) columns, segment column -K//2 first; 0
    outside the map (rows q < 0 or q >= H too). The segment itself in vector loads of U elements; without
    HALO (a whole row a segment) the halo columns are zeros, not loads."""
    row_ok = plane_ok & (q >= 0) & (q < H)
    row_ptr = x_ptr + plane_offs + q * W
    left = ()
    right = ()
    for j in tl.static_range(K // 2):
        if HALO:
            left_col = seg_start - K // 2 + j
            left = left + (tl.load(row_ptr[:, None] + left_col[None, :],
                                   mask=row_ok[:, None] & ((left_col >= 0) & (left_col < W))[None, :],
                                   other=0.0).to(tl.float32), )
            right_col = seg_start + V + j
            right = right + (tl.load(row_ptr[:, None] + right_col[None, :],
                                     mask=row_ok[:, None] & (right_col < W)[None, :], other=0.0).to(tl.float32), )
        else:
            left = left + (tl.zeros([BLOCK_P, NSEG], dtype=tl.float32), )
            right = right + (tl.zeros([BLOCK_P, NSEG], dtype=tl.float32), )
    middle = ()
    units = tl.arange(0, U)
    for chunk in tl.static_range(V // U):
        cols = seg_start[:, None] + chunk * U + units[None, :]
        tile = tl.load(row_ptr[:, None, None] + cols[None, :, :], mask=row_ok[:, None, None] & (cols < W)[None, :, :],
                       other=0.0)
        middle = middle + _split_columns(tile.to(tl.float32), BLOCK_P, NSEG, U, LOG_U)
    return left + middle + right


@triton.jit
def _store_segment_chunk(row_ptr, values, first: tl.constexpr, chunk: tl.constexpr, row_ok, W, seg_start,
                         U: tl.constexpr, LOG_U: tl.constexpr, BLOCK_P: tl.constexpr, NSEG: tl.constexpr):
    """Store segment columns chunk * U .. chunk * U + U - 1 (``values[first]`` .. ``values[first + U - 1]``, each
    (BLOCK_P, NSEG)) of the rows ``row_ptr`` points to, in one vector store a segment, in their element type; masked
    by ``row_ok`` and the row's end. The stores of :func:`_segment_row`'s loads."""
    chunk_values = ()
    for u in tl.static_range(U):
        chunk_values = chunk_values + (values[first + u], )
    cols = seg_start[:, None] + chunk * U + tl.arange(0, U)[None, :]
    tl.store(row_ptr[:, None, None] + cols[None, :, :],
             _join_columns(chunk_values, BLOCK_P, NSEG, U, LOG_U).to(row_ptr.dtype.element_ty),
             mask=row_ok[:, None, None] & (cols < W)[None, :, :])


@triton.jit
def _segment_row_conv(row, taps, i: tl.constexpr, v: tl.constexpr, start, K: tl.constexpr, V: tl.constexpr,
                      HALO: tl.constexpr, FIRST: tl.constexpr = 0):
    """``start`` plus the horizontal convolution of a segment row (:func:`_segment_row`; in ``row`` from entry
    FIRST on) with kernel row ``i`` at segment column ``v``. Without HALO the terms of columns outside the segment
    (zeros) are left out."""
    total = start
    for j in tl.static_range(K):
        if HALO:
            total += taps[i * K + j] * row[FIRST + v + j]
        elif v + j >= K // 2:
            if v + j < V + K // 2:
                total += taps[i * K + j] * row[FIRST + v + j]
    return total


@triton.jit
def _fwd_segment_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W_UNITS, n_planes, run_rows, K: tl.constexpr,
                        ACT: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, W_ALIGN: tl.constexpr,
                        BLOCK_P: tl.constexpr, NSEG: tl.constexpr, V: tl.constexpr, U: tl.constexpr,
                        LOG_U: tl.constexpr, HALO: tl.constexpr):
    """``_fwd_kernel``'s y = act(conv(x, w) + b (+ x)) with a thread holding a row segment of V columns (module
    doc): BLOCK_P planes (grid axis 0) x NSEG segments (axis 1: blocks of segments) x output rows [first, first +
    run_rows) (axis 2). Rows of W = W_UNITS * W_ALIGN columns."""
    W = W_UNITS * W_ALIGN
    n, ch, plane_ok, plane_offs, seg_start, first, last = _segment_tile(C, H, W, n_planes, run_rows, BLOCK_P, NSEG,
                                                                        V)
    taps = _channel_taps(w_ptr, ch, plane_ok, K, RESIDUAL)
    bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    # partial[m * V + v]: column v of output row q - K//2 + m before input row q, rows < q summed (m < K - 1).
    partial = _zero_tiles((K - 1) * V, BLOCK_P, NSEG)
    next_row = _segment_row(x_ptr, plane_offs, plane_ok, first - K // 2, H, W, seg_start, K, V, U, LOG_U, HALO,
                            BLOCK_P, NSEG)
    for q in range(first - K // 2, last + K // 2):
        row = next_row
        next_row = _segment_row(x_ptr, plane_offs, plane_ok, q + 1, H, W, seg_start, K, V, U, LOG_U, HALO,
                                BLOCK_P, NSEG)
        out_row = q - K // 2
        for chunk in tl.static_range(V // U):  # each chunk stored as soon as it is computed
            outs = ()
            for u in tl.static_range(U):
                z = bias
                if K > 1:
                    z += partial[chunk * U + u]
                outs = outs + (_activation(_segment_row_conv(row, taps, K - 1, chunk * U + u, z, K, V, HALO), ACT), )
            _store_segment_chunk(y_ptr + plane_offs + out_row * W, outs, 0, chunk, plane_ok & (out_row >= first), W,
                                 seg_start, U, LOG_U, BLOCK_P, NSEG)
        advanced = ()
        for m in tl.static_range(K - 2):
            for v in tl.static_range(V):
                advanced = advanced + (_segment_row_conv(row, taps, K - 2 - m, v, partial[(m + 1) * V + v], K, V,
                                                         HALO), )
        if K > 1:
            for v in tl.static_range(V):
                advanced = advanced + (_segment_row_conv(row, taps, 0, v, tl.zeros([BLOCK_P, NSEG], dtype=tl.float32),
                                                         K, V, HALO), )
        partial = advanced


@triton.jit
def _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K: tl.constexpr):
    """A gradient kernel's sums, each summed across its columns (axis 1), into row ``part`` = run * column blocks +
    column block (grid axes 2 and 1) of each plane's (n_parts, K*K + 1) partial sums: the K*K weight taps, then the
    bias."""
    part = tl.program_id(2) * tl.num_programs(1) + tl.program_id(1)
    out = partial_ptr + (n.to(tl.int64) * n_parts + part) * (K * K + 1)
    for t in tl.static_range(K * K):
        tl.store(out + t, tl.sum(sums[t], axis=1), mask=plane_ok)
    tl.store(out + K * K, tl.sum(bias_sum, axis=1), mask=plane_ok)


@triton.jit
def _grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, gz_ptr, partial_ptr, C, H, W_UNITS, n_planes, run_rows, n_parts,
                 K: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
                 W_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """gz = dy * act'(z) for output rows [first, first + run_rows) of the tile (written with an activation only),
    and each plane's partial sums over them of the weight gradient (entries 0 .. K*K-1, tap i*K + j) and of the
    bias gradient (entry K*K), in row ``part`` = run * column blocks + column block of ``partial_ptr``
    (n_planes, n_parts, K*K + 1). Rows of W = W_UNITS * W_ALIGN columns."""
    W = W_UNITS * W_ALIGN
    n, ch, plane_ok, plane_offs, cols, tile_ok, first, last = _program_tile(C, H, W, n_planes, run_rows, BLOCK_P,
                                                                            BLOCK_W)
    if ACT != 0:
        taps = _channel_taps(w_ptr, ch, plane_ok, K, RESIDUAL)
        bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    # window: input rows r - K//2 .. r + K//2 - 1 at K shifts each (tap i*K + j: row r - K//2 + i, shift j).
    window = ()
    for i in tl.static_range(K - 1):
        window = window + _shifted_row(x_ptr, plane_offs, plane_ok, first - K // 2 + i, H, W, cols, K)
    sums = _zero_tiles(K * K, BLOCK_P, BLOCK_W)
    bias_sum = tl.zeros([BLOCK_P, BLOCK_W], dtype=tl.float32)
    # As in the forward kernel, the loads of row r + 1 are issued before the arithmetic of row r. Out-of-tile
    # positions load dy = 0, so their gz is 0 and they add nothing to the sums.
    next_row = _shifted_row(x_ptr, plane_offs, plane_ok, first + K // 2, H, W, cols, K)
    next_dy = tl.load(dy_ptr + (plane_offs + first * W)[:, None] + cols[None, :], mask=tile_ok, other=0.0)
    for r in range(first, last):
        offs = (plane_offs + r * W)[:, None] + cols[None, :]
        full = window + next_row
        gz = next_dy.to(tl.float32)
        next_row = _shifted_row(x_ptr, plane_offs, plane_ok, r + 1 + K // 2, H, W, cols, K)
        next_dy = tl.load(dy_ptr + offs + W, mask=tile_ok & (r + 1 < last), other=0.0)
        if ACT != 0:
            z = bias
            for t in tl.static_range(K * K):
                z = z + taps[t] * full[t]
            gz *= _activation_grad(z, ACT)
            tl.store(gz_ptr + offs, gz.to(gz_ptr.dtype.element_ty), mask=tile_ok)
        summed = ()
        for t in tl.static_range(K * K):
            summed = summed + (sums[t] + gz * full[t], )
        sums = summed
        bias_sum += gz
        window = ()
        for t in tl.static_range(K, K * K):
            window = window + (full[t], )
    _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K)


@triton.jit
def _window_conv(window, taps, v: tl.constexpr, start, K: tl.constexpr, V: tl.constexpr, HALO: tl.constexpr):
    """``start`` plus the k x k convolution at segment column ``v`` of a window of K segment rows (K tuples of
    :func:`_segment_row`, concatenated)."""
    total = start
    for i in tl.static_range(K):
        total = _segment_row_conv(window, taps, i, v, total, K, V, HALO, i * (V + K - 1))
    return total


@triton.jit
def _grad_segment_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, gz_ptr, partial_ptr, C, H, W_UNITS, n_planes, run_rows,
                         n_parts, K: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
                         W_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, NSEG: tl.constexpr, V: tl.constexpr,
                         U: tl.constexpr, LOG_U: tl.constexpr, HALO: tl.constexpr):
    """``_grad_kernel``'s gz = dy * act'(z) and partial sums of the weight and bias gradients, a thread holding a row
    segment of V columns as in ``_fwd_segment_kernel``: the K x (V + K - 1) window of input rows around output row
    r (K - 1 rows carried, one loaded a step, with dy's row), z recomputed from it, and the K*K products summed
    over the segment's columns into one running sum a tap (a thread keeps K*K sums, not K*K a position). Grid and
    ``partial_ptr`` as ``_grad_kernel``'s, ``part`` = run * segment blocks + segment block."""
    W = W_UNITS * W_ALIGN
    n, ch, plane_ok, plane_offs, seg_start, first, last = _segment_tile(C, H, W, n_planes, run_rows, BLOCK_P, NSEG,
                                                                        V)
    if ACT != 0:
        taps = _channel_taps(w_ptr, ch, plane_ok, K, RESIDUAL)
        bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    # window: input rows r - K//2 .. r + K//2 - 1, each V + K - 1 segment columns (halos included).
    window = ()
    for i in tl.static_range(K - 1):
        window = window + _segment_row(x_ptr, plane_offs, plane_ok, first - K // 2 + i, H, W, seg_start, K, V, U,
                                       LOG_U, HALO, BLOCK_P, NSEG)
    sums = _zero_tiles(K * K, BLOCK_P, NSEG)
    bias_sum = tl.zeros([BLOCK_P, NSEG], dtype=tl.float32)
    # The loads of row r + 1 are issued before the arithmetic of row r; dy is 0 outside the run (rows >= last),
    # so such positions add nothing.
    next_row = _segment_row(x_ptr, plane_offs, plane_ok, first + K // 2, H, W, seg_start, K, V, U, LOG_U, HALO,
                            BLOCK_P, NSEG)
    next_dy = _segment_row(dy_ptr, plane_offs, plane_ok, first, last, W, seg_start, 1, V, U, LOG_U, False, BLOCK_P,
                           NSEG)
    for r in range(first, last):
        full = window + next_row
        dy_row = next_dy
        next_row = _segment_row(x_ptr, plane_offs, plane_ok, r + 1 + K // 2, H, W, seg_start, K, V, U, LOG_U, HALO,
                                BLOCK_P, NSEG)
        next_dy = _segment_row(dy_ptr, plane_offs, plane_ok, r + 1, last, W, seg_start, 1, V, U, LOG_U, False,
                               BLOCK_P, NSEG)
        gz = ()
        for v in tl.static_range(V):
            g = dy_row[v]
            if ACT != 0:
                g = g * _activation_grad(_window_conv(full, taps, v, bias, K, V, HALO), ACT)
            gz = gz + (g, )
        if ACT != 0:
            for chunk in tl.static_range(V // U):
                _store_segment_chunk(gz_ptr + plane_offs + r * W, gz, chunk * U, chunk, plane_ok, W, seg_start, U,
                                     LOG_U, BLOCK_P, NSEG)
        summed = ()
        for i in tl.static_range(K):
            for j in tl.static_range(K):
                total = sums[i * K + j]
                for v in tl.static_range(V):
                    if HALO:
                        total += gz[v] * full[i * (V + K - 1) + v + j]
                    elif v + j >= K // 2:
                        if v + j < V + K // 2:
                            total += gz[v] * full[i * (V + K - 1) + v + j]
                summed = summed + (total, )
        sums = summed
        for v in tl.static_range(V):
            bias_sum += gz[v]
        window = ()
        for t in tl.static_range(V + K - 1, K * (V + K - 1)):
            window = window + (full[t], )
    _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K)


def _tiling(x: torch.Tensor, values_warps: Tuple[int, int], values_a_position: int, min_programs: int):
    """(warps, BLOCK_P, BLOCK_W, rows a run, grid) for a (values a thread holds, warps) tiling whose kernel
    holds ``values_a_position`` values a position, aiming at about ``min_programs`` programs (the rows cut
    into runs when the tiles are fewer). Grid: (plane blocks, column blocks, runs)."""
    b, c, h, w = x.shape
    values, warps = values_warps
    per_thread = max(1, values // values_a_position)
    elements = 32 * warps << (per_thread.bit_length() - 1)
    block_w = min(next_power_of_2(w), MAX_BLOCK_W)
    block_p = min(max(elements // block_w, 1), next_power_of_2(b * c))
    tiles = (cdiv(b * c, block_p), cdiv(w, block_w))
    run_rows = cdiv(h, min(h, max(1, cdiv(min_programs, tiles[0] * tiles[1]))))
    return warps, block_p, block_w, run_rows, tiles + (cdiv(h, run_rows), )


def _fwd_tiling(x: torch.Tensor, k: int):
    """_tiling's tuple for the forward kernel (FWD_TILING's doc)."""
    return _tiling(x, FWD_TILING, k * k, MIN_PROGRAMS[0])


def _grad_tiling(x: torch.Tensor, k: int):
    """_tiling's tuple for the gradient kernel (BWD_TILING's doc)."""
    return _tiling(x, BWD_TILING, 2 * k * k, MIN_PROGRAMS[1])


def _segment_values(v: int, k: int, gradient: bool = False) -> int:
    """Float32 values a thread of a segment kernel keeps for a segment of ``v`` columns (SEGMENT_VALUES' doc); the
    gradient kernel: K + 1 rows of v + k - 1 columns (the window and the row loaded ahead), two rows of dy, the
    k*k weights and k*k running sums."""
    if gradient:
        return (k + 1) * (v + k - 1) + 2 * v + 2 * k * k
    return (k - 1) * v + 2 * (v + k - 1) + k * k


def _segment_tiling(x: torch.Tensor, k: int, gradient: bool = False):
    """(warps, BLOCK_P, NSEG, V, U, HALO, rows a run, grid) of ``_fwd_segment_kernel`` (or, with ``gradient``,
    ``_grad_segment_kernel``) for x (B, C, H, W) and a k x k kernel: V columns a segment (a whole row of up to
    SEGMENT_WHOLE_ROW where SEGMENT_VALUES allows, HALO False; else the widest of 8, 4, 2, 1 that fits), loaded U
    at a time (16 bytes at most, and no wider than the row length's power-of-two factor, so that every vector is
    aligned), NSEG segments a program's row (up to SEGMENT_MAX_SEGMENTS),
    BLOCK_P planes, one segment of one plane a thread. Grid: (plane blocks, segment blocks, runs of rows)."""
    b, c, h, w = x.shape
    warps, min_programs = SEGMENT_TILING
    whole = next_power_of_2(w)
    if whole <= SEGMENT_WHOLE_ROW and _segment_values(whole, k, gradient) <= SEGMENT_VALUES:
        v, halo = whole, False
    else:
        v = next(v for v in (8, 4, 2, 1) if v == 1 or _segment_values(v, k, gradient) <= SEGMENT_VALUES)
        halo = True
    u = min(v, 16 // x.element_size(), power_of_two_factor(w))
    nseg = min(next_power_of_2(cdiv(w, v)), SEGMENT_MAX_SEGMENTS) if halo else 1
    block_p = min(max(32 * warps // nseg, 1), next_power_of_2(b * c))
    tiles = (cdiv(b * c, block_p), cdiv(cdiv(w, v), nseg))
    run_rows = cdiv(h, min(h, max(1, cdiv(min_programs, tiles[0] * tiles[1]))))
    return warps, block_p, nseg, v, u, halo, run_rows, tiles + (cdiv(h, run_rows), )


def launch_plan(x: torch.Tensor, k: int, gradient: bool, kind: str):
    """(kernel, its tiling constexprs, warps, rows a run, grid) of the forward (or, with ``gradient``, the gradient)
    kernel of ``kind`` ('shifts' or 'segments') for x (B, C, H, W) and a k x k kernel: what the launches run (and
    ``tools/analysis_tools/hopper_codegen.py`` compiles)."""
    if kind == 'segments':
        warps, block_p, nseg, v, u, halo, run_rows, grid = _segment_tiling(x, k, gradient)
        tile = dict(BLOCK_P=block_p, NSEG=nseg, V=v, U=u, LOG_U=u.bit_length() - 1, HALO=halo)
        return (_grad_segment_kernel if gradient else _fwd_segment_kernel), tile, warps, run_rows, grid
    warps, block_p, block_w, run_rows, grid = (_grad_tiling if gradient else _fwd_tiling)(x, k)
    return (_grad_kernel if gradient else _fwd_kernel), dict(BLOCK_P=block_p, BLOCK_W=block_w), warps, run_rows, grid


def _launch_fwd(x, weight, bias, y, residual, act_code):
    b, c, h, w = x.shape
    w_align = power_of_two_factor(w)
    kernel, tile, warps, run_rows, grid = launch_plan(x, weight.shape[-1], False, FORWARD)
    launch(kernel, grid, x, weight, weight if bias is None else bias, y, c, h, w // w_align, b * c, run_rows,
           K=weight.shape[-1], ACT=act_code, HAS_BIAS=bias is not None, RESIDUAL=residual, W_ALIGN=w_align,
           num_warps=warps, **tile)


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _dwconv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: bool,
                activation: str, out_dtype: torch.dtype) -> torch.Tensor:
    """x (B, C, H, W), weight (C, 1, k, k), bias (C,) or None -> act(conv + bias (+ x)) (B, C, H, W) in
    ``out_dtype``; ``activation`` is 'none', 'gelu' or 'silu'; all inputs contiguous."""
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    _launch_fwd(x, weight, bias, y, residual, ACT_CODES[activation])
    return y


def _dwconv_fwd_fake(x, weight, bias, residual, activation, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype)


def _dwconv_grad(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 residual: bool, activation: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> gz = dy * act'(z) (B, C, H, W) in dy's dtype (with ``activation`` 'none' gz is dy, not copied: an empty
    (0,) tensor instead), the weight gradient (C, 1, k, k) in weight's dtype, the bias gradient (C,) in bias's
    dtype (weight's without a bias)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    gz = torch.empty(x.shape if activation != 'none' else (0, ), dtype=dy.dtype, device=x.device)
    w_align = power_of_two_factor(w)
    kernel, tile, warps, run_rows, grid = launch_plan(x, k, True, GRADIENT)
    n_parts = grid[1] * grid[2]
    partial = torch.empty(b * c, n_parts, k * k + 1, dtype=torch.float32, device=x.device)
    launch(kernel, grid, x, weight, weight if bias is None else bias, dy, gz, partial, c, h, w // w_align, b * c,
           run_rows, n_parts, K=k, ACT=ACT_CODES[activation], HAS_BIAS=bias is not None, RESIDUAL=residual,
           W_ALIGN=w_align, num_warps=warps, **tile)
    sums = partial.view(b, c, n_parts, k * k + 1).sum((0, 2))
    # Copies: a custom op's outputs may not be views of one another.
    dweight = sums[:, :k * k].reshape(weight.shape).to(weight.dtype, copy=True)
    dbias = sums[:, k * k].to(weight.dtype if bias is None else bias.dtype, copy=True)
    return gz, dweight, dbias


def _dwconv_grad_fake(dy, x, weight, bias, residual, activation):
    return (dy.new_empty(x.shape if activation != 'none' else (0, )), torch.empty_like(weight),
            weight.new_empty(x.shape[1], dtype=weight.dtype if bias is None else bias.dtype))


_dwconv_grad = TritonOp('sparx_mm::depthwise_conv_act_grad', _dwconv_grad, _dwconv_grad_fake)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, activation, _ = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.residual, ctx.activation = residual, activation


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dy = dy.contiguous()
    gz, dweight, dbias = _dwconv_grad(dy, x, weight, bias, ctx.residual, ctx.activation)
    if ctx.activation == 'none':
        gz = dy
    dx = None
    if ctx.needs_input_grad[0]:
        # The adjoint of a 'same' convolution is the convolution with the kernel flipped in both axes; the
        # residual's gradient is gz itself (the forward kernel's centre weight + 1).
        dx = _dwconv_fwd(gz, weight.flip((-2, -1)).contiguous(), None, ctx.residual, 'none', x.dtype)
    return dx, dweight, None if bias is None else dbias, None, None, None


_dwconv_fwd = TritonOp('sparx_mm::depthwise_conv_act_fwd', _dwconv_fwd, _dwconv_fwd_fake, _setup_context, _backward)


def depthwise_conv2d_act_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                residual: bool, activation: Optional[str], out_dtype: torch.dtype) -> torch.Tensor:
    """Fused Triton implementation of :func:`sparx_mm.ops.depthwise_conv2d_act` (inputs already checked).

    Shapes: x (B, C, H, W), weight (C, 1, k, k), bias (C,) or None -> (B, C, H, W) in ``out_dtype``. Inputs
    that are not contiguous in NCHW order (channels_last) are copied first. Needs CUDA tensors (or
    ``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests).
    """
    check_triton_launchable(x, 'depthwise_conv2d_act_triton')
    return _dwconv_fwd(x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(),
                       residual, activation or 'none', out_dtype)
