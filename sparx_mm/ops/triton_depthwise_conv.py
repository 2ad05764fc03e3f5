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

Forward (``_dwconv_kernel``): z = sum_taps w * x_shifted + bias (+ x); y = act(z) in the output dtype. Input row q
adds its horizontal convolution with kernel row i to output row q - i + k//2: k - 1 partial output rows are
carried from one input row to the next, and output row q - k//2 is complete after row q.

Backward, from x, weight and bias only (neither z nor y is saved): ``_dwconv_grad_kernel`` carries the k x k window of
shifted input rows around output row r (k - 1 rows carried, one loaded a step), recomputes z from it, writes
gz = dy * act'(z) (in dy's dtype, as autograd's activation gradient; without an activation gz is dy and nothing
is written) and adds the float32 gz * x_shifted to k*k running products a position (and gz to one for the
bias); each program reduces them across its columns once, at the end, into one row of partial sums a plane,
which torch adds up over the batch and the runs (no atomics: deterministic). Then dx = conv(gz, weight flipped
in both axes) + (gz if residual): the forward kernel without bias or activation.

Strided (stride s > 1, no residual; the DMCA's spatial reductions): ``_dwconv_strided_kernel`` computes output row
r from input rows r*s - k//2 .. r*s + k//2 at columns c*s - k//2 .. c*s + k//2 (k*k loads an output position, a
1/s**2 of the input's positions); ``_dwconv_strided_grad_kernel`` its gz and the weight / bias partial sums the same
way; ``_dwconv_transposed_kernel`` dx, the adjoint: an input position takes weight[i, j] * gz[r, c] from the taps
whose h + k//2 - i = r*s and w + k//2 - j = c*s (masked loads; about k*k / s**2 of them valid). Before, the
stride-1 map was computed and subsampled, and its backward ran the stride-1 kernels on a zero-filled gradient: s**2
times the positions.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable
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
def _window_conv(window, taps, bias, K: tl.constexpr):
    """bias + the sum over the K*K taps of weight * shifted input (``window``: tap i*K + j's tile)."""
    z = bias
    for t in tl.static_range(K * K):
        z = z + taps[t] * window[t]
    return z


@triton.jit
def _add_products(sums, gz, window, K: tl.constexpr):
    """The K*K running weight-gradient products with gz * each tap's shifted input added."""
    summed = ()
    for t in tl.static_range(K * K):
        summed = summed + (sums[t] + gz * window[t], )
    return summed


@triton.jit
def _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K: tl.constexpr):
    """Each plane's sums over the tile's columns, into row ``part`` = run * column blocks + column block of
    ``partial_ptr`` (n_planes, n_parts, K*K + 1): the weight gradient's taps, then the bias's."""
    part = tl.program_id(2) * tl.num_programs(1) + tl.program_id(1)
    out = partial_ptr + (n.to(tl.int64) * n_parts + part) * (K * K + 1)
    for t in tl.static_range(K * K):
        tl.store(out + t, tl.sum(sums[t], axis=1), mask=plane_ok)
    tl.store(out + K * K, tl.sum(bias_sum, axis=1), mask=plane_ok)


@triton.jit
def _dwconv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W_UNITS, n_planes, run_rows, K: tl.constexpr, ACT: tl.constexpr,
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
def _dwconv_grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, gz_ptr, partial_ptr, C, H, W_UNITS, n_planes, run_rows, n_parts,
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
            gz *= _activation_grad(_window_conv(full, taps, bias, K), ACT)
            tl.store(gz_ptr + offs, gz.to(gz_ptr.dtype.element_ty), mask=tile_ok)
        sums = _add_products(sums, gz, full, K)
        bias_sum += gz
        window = ()
        for t in tl.static_range(K, K * K):
            window = window + (full[t], )
    _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K)


@triton.jit
def _strided_window(x_ptr, in_offs, plane_ok, r, H, W, in_cols, K: tl.constexpr, STRIDE: tl.constexpr):
    """The K*K taps of output row ``r`` of a stride-STRIDE convolution: input row r * STRIDE - K//2 + i at the K
    column shifts of ``in_cols`` (the output columns times STRIDE), tap i*K + j a float32 (BLOCK_P, BLOCK_W)
    tile; 0 outside the map."""
    window = ()
    for i in tl.static_range(K):
        window = window + _shifted_row(x_ptr, in_offs, plane_ok, r * STRIDE - K // 2 + i, H, W, in_cols, K)
    return window


@triton.jit
def _dwconv_strided_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, OH, OW, n_planes, run_rows, K: tl.constexpr,
                           ACT: tl.constexpr, HAS_BIAS: tl.constexpr, STRIDE: tl.constexpr, BLOCK_P: tl.constexpr,
                           BLOCK_W: tl.constexpr):
    """y = act(conv(x, w, stride=STRIDE) + b), (H, W) -> (OH, OW), for output rows [first, first + run_rows) of
    the tile (grid axis 2: the run)."""
    n, ch, plane_ok, out_offs, cols, tile_ok, first, last = _program_tile(C, OH, OW, n_planes, run_rows, BLOCK_P,
                                                                          BLOCK_W)
    in_offs = n.to(tl.int64) * (H * W)
    taps = _channel_taps(w_ptr, ch, plane_ok, K, False)
    bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    # The loads of row r + 1 are issued before the arithmetic of row r.
    next_window = _strided_window(x_ptr, in_offs, plane_ok, first, H, W, cols * STRIDE, K, STRIDE)
    for r in range(first, last):
        window = next_window
        next_window = _strided_window(x_ptr, in_offs, plane_ok, r + 1, H, W, cols * STRIDE, K, STRIDE)
        tl.store(y_ptr + (out_offs + r * OW)[:, None] + cols[None, :],
                 _activation(_window_conv(window, taps, bias, K), ACT).to(y_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _dwconv_strided_grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, gz_ptr, partial_ptr, C, H, W, OH, OW, n_planes, run_rows,
                                n_parts, K: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
                                STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """``_dwconv_grad_kernel`` for a stride-STRIDE convolution: gz = dy * act'(z) at the (OH, OW) output rows
    [first, first + run_rows) of the tile (written with an activation only) and each plane's partial sums of the
    weight and bias gradients over them, in the same layout."""
    n, ch, plane_ok, out_offs, cols, tile_ok, first, last = _program_tile(C, OH, OW, n_planes, run_rows, BLOCK_P,
                                                                          BLOCK_W)
    in_offs = n.to(tl.int64) * (H * W)
    if ACT != 0:
        taps = _channel_taps(w_ptr, ch, plane_ok, K, False)
        bias = _channel_bias(b_ptr, ch, plane_ok, HAS_BIAS)
    sums = _zero_tiles(K * K, BLOCK_P, BLOCK_W)
    bias_sum = tl.zeros([BLOCK_P, BLOCK_W], dtype=tl.float32)
    # Out-of-tile positions load dy = 0, so their gz is 0 and they add nothing to the sums.
    for r in range(first, last):
        offs = (out_offs + r * OW)[:, None] + cols[None, :]
        gz = tl.load(dy_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)
        window = _strided_window(x_ptr, in_offs, plane_ok, r, H, W, cols * STRIDE, K, STRIDE)
        if ACT != 0:
            gz *= _activation_grad(_window_conv(window, taps, bias, K), ACT)
            tl.store(gz_ptr + offs, gz.to(gz_ptr.dtype.element_ty), mask=tile_ok)
        sums = _add_products(sums, gz, window, K)
        bias_sum += gz
    _store_partial_sums(partial_ptr, n, plane_ok, n_parts, sums, bias_sum, K)


@triton.jit
def _dwconv_transposed_kernel(g_ptr, w_ptr, dx_ptr, C, H, W, OH, OW, n_planes, run_rows, K: tl.constexpr,
                              STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_W: tl.constexpr):
    """dx (H, W) = the adjoint of a stride-STRIDE convolution applied to g (OH, OW), for input rows [first, first +
    run_rows) of the tile: dx[h, w] = sum of weight[i, j] * g[r, c] over the taps with h + K//2 - i = r * STRIDE
    and w + K//2 - j = c * STRIDE inside g's map."""
    n, ch, plane_ok, in_offs, cols, tile_ok, first, last = _program_tile(C, H, W, n_planes, run_rows, BLOCK_P,
                                                                         BLOCK_W)
    g_offs = n.to(tl.int64) * (OH * OW)
    taps = _channel_taps(w_ptr, ch, plane_ok, K, False)
    # Shifted by STRIDE * K so that the numerators are never negative: // and % then agree with Python's on
    # every backend (C's truncation and Python's floor differ below zero).
    col_num = cols + (K // 2 + STRIDE * K)
    for h in range(first, last):
        acc = tl.zeros([BLOCK_P, BLOCK_W], dtype=tl.float32)
        for i in tl.static_range(K):
            row_num = h + (K // 2 - i + STRIDE * K)
            r = row_num // STRIDE - K
            row_ok = plane_ok & (row_num % STRIDE == 0) & (r >= 0) & (r < OH)
            for j in tl.static_range(K):
                c = (col_num - j) // STRIDE - K
                col_ok = ((col_num - j) % STRIDE == 0) & (c >= 0) & (c < OW)
                g = tl.load(g_ptr + (g_offs + r * OW)[:, None] + c[None, :], mask=row_ok[:, None] & col_ok[None, :],
                            other=0.0)
                acc += taps[i * K + j] * g.to(tl.float32)
        tl.store(dx_ptr + (in_offs + h * W)[:, None] + cols[None, :], acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


def _tiling(shape, values_warps: Tuple[int, int], values_a_position: int, min_programs: int):
    """(warps, BLOCK_P, BLOCK_W, rows a run, grid) over the map of ``shape`` (B, C, H, W) for a (values a thread
    holds, warps) tiling whose kernel holds ``values_a_position`` values a position, aiming at about
    ``min_programs`` programs (the rows cut into runs when the tiles are fewer). Grid: (plane blocks, column
    blocks, runs)."""
    b, c, h, w = shape
    values, warps = values_warps
    per_thread = max(1, values // values_a_position)
    elements = 32 * warps << (per_thread.bit_length() - 1)
    block_w = min(next_power_of_2(w), MAX_BLOCK_W)
    block_p = min(max(elements // block_w, 1), next_power_of_2(b * c))
    tiles = (cdiv(b * c, block_p), cdiv(w, block_w))
    run_rows = cdiv(h, min(h, max(1, cdiv(min_programs, tiles[0] * tiles[1]))))
    return warps, block_p, block_w, run_rows, tiles + (cdiv(h, run_rows), )


def _fwd_tiling(shape, k: int):
    """_tiling's tuple for the forward kernel over an output map of ``shape`` (FWD_TILING's doc); also the
    strided kernel's, and the transposed kernel's over dx's map."""
    return _tiling(shape, FWD_TILING, k * k, MIN_PROGRAMS[0])


def _grad_tiling(shape, k: int):
    """_tiling's tuple for the gradient kernels over an output map of ``shape`` (BWD_TILING's doc)."""
    return _tiling(shape, BWD_TILING, 2 * k * k, MIN_PROGRAMS[1])


def strided_shape(shape, stride: int) -> Tuple[int, int, int, int]:
    """(B, C, H, W) -> the output shape of a stride-``stride`` 'same'-padded convolution, (B, C, ceil(H / stride),
    ceil(W / stride))."""
    b, c, h, w = shape
    return b, c, cdiv(h, stride), cdiv(w, stride)


def _launch_fwd(x, weight, bias, y, residual, act_code, stride):
    b, c, h, w = x.shape
    k = weight.shape[-1]
    warps, block_p, block_w, run_rows, grid = _fwd_tiling(y.shape, k)
    common = dict(K=k, ACT=act_code, HAS_BIAS=bias is not None, BLOCK_P=block_p, BLOCK_W=block_w, num_warps=warps)
    bias_or_weight = weight if bias is None else bias
    if stride == 1:
        w_align = power_of_two_factor(w)
        launch(_dwconv_kernel, grid, x, weight, bias_or_weight, y, c, h, w // w_align, b * c, run_rows,
               RESIDUAL=residual, W_ALIGN=w_align, **common)
    else:
        launch(_dwconv_strided_kernel, grid, x, weight, bias_or_weight, y, c, h, w, y.shape[2], y.shape[3], b * c,
               run_rows, STRIDE=stride, **common)


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _dwconv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: bool,
                activation: str, out_dtype: torch.dtype, stride: int) -> torch.Tensor:
    """x (B, C, H, W), weight (C, 1, k, k), bias (C,) or None -> act(conv + bias (+ x)) (B, C, ceil(H / stride),
    ceil(W / stride)) in ``out_dtype``; ``activation`` is 'none', 'gelu' or 'silu'; all inputs contiguous; no
    residual with stride > 1."""
    y = torch.empty(strided_shape(x.shape, stride), dtype=out_dtype, device=x.device)
    _launch_fwd(x, weight, bias, y, residual, ACT_CODES[activation], stride)
    return y


def _dwconv_fwd_fake(x, weight, bias, residual, activation, out_dtype, stride):
    return x.new_empty(strided_shape(x.shape, stride), dtype=out_dtype)


def _dwconv_grad(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 residual: bool, activation: str, stride: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy (B, C, ceil(H / stride), ceil(W / stride)), x (B, C, H, W) -> gz = dy * act'(z) (dy's shape) in dy's
    dtype (with ``activation`` 'none' gz is dy, not copied: an empty (0,) tensor instead), the weight gradient
    (C, 1, k, k) in weight's dtype, the bias gradient (C,) in bias's dtype (weight's without a bias)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    warps, block_p, block_w, run_rows, grid = _grad_tiling(dy.shape, k)
    gz = torch.empty(dy.shape if activation != 'none' else (0, ), dtype=dy.dtype, device=x.device)
    n_parts = grid[1] * grid[2]
    partial = torch.empty(b * c, n_parts, k * k + 1, dtype=torch.float32, device=x.device)
    common = dict(K=k, ACT=ACT_CODES[activation], HAS_BIAS=bias is not None, BLOCK_P=block_p, BLOCK_W=block_w,
                  num_warps=warps)
    bias_or_weight = weight if bias is None else bias
    if stride == 1:
        w_align = power_of_two_factor(w)
        launch(_dwconv_grad_kernel, grid, x, weight, bias_or_weight, dy, gz, partial, c, h, w // w_align, b * c,
               run_rows, n_parts, RESIDUAL=residual, W_ALIGN=w_align, **common)
    else:
        launch(_dwconv_strided_grad_kernel, grid, x, weight, bias_or_weight, dy, gz, partial, c, h, w, dy.shape[2],
               dy.shape[3], b * c, run_rows, n_parts, STRIDE=stride, **common)
    sums = partial.view(b, c, n_parts, k * k + 1).sum((0, 2))
    # Copies: a custom op's outputs may not be views of one another.
    dweight = sums[:, :k * k].reshape(weight.shape).to(weight.dtype, copy=True)
    dbias = sums[:, k * k].to(weight.dtype if bias is None else bias.dtype, copy=True)
    return gz, dweight, dbias


def _dwconv_grad_fake(dy, x, weight, bias, residual, activation, stride):
    return (dy.new_empty(dy.shape if activation != 'none' else (0, )), torch.empty_like(weight),
            weight.new_empty(x.shape[1], dtype=weight.dtype if bias is None else bias.dtype))


_dwconv_grad = TritonOp('sparx_mm::depthwise_conv_act_grad', _dwconv_grad, _dwconv_grad_fake)


def _dwconv_transposed(g: torch.Tensor, weight: torch.Tensor, height: int, width: int, stride: int,
                       out_dtype: torch.dtype) -> torch.Tensor:
    """g (B, C, ceil(height / stride), ceil(width / stride)), weight (C, 1, k, k) -> the adjoint of the strided
    convolution, (B, C, height, width) in ``out_dtype`` (the input gradient of a stride-``stride`` conv)."""
    b, c = g.shape[:2]
    k = weight.shape[-1]
    dx = torch.empty(b, c, height, width, dtype=out_dtype, device=g.device)
    warps, block_p, block_w, run_rows, grid = _fwd_tiling(dx.shape, k)
    launch(_dwconv_transposed_kernel, grid, g, weight, dx, c, height, width, g.shape[2], g.shape[3], b * c, run_rows,
           K=k, STRIDE=stride, BLOCK_P=block_p, BLOCK_W=block_w, num_warps=warps)
    return dx


def _dwconv_transposed_fake(g, weight, height, width, stride, out_dtype):
    return g.new_empty(g.shape[0], g.shape[1], height, width, dtype=out_dtype)


_dwconv_transposed = TritonOp('sparx_mm::depthwise_conv_transposed', _dwconv_transposed, _dwconv_transposed_fake)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, activation, _, stride = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.residual, ctx.activation, ctx.stride = residual, activation, stride


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dy = dy.contiguous()
    gz, dweight, dbias = _dwconv_grad(dy, x, weight, bias, ctx.residual, ctx.activation, ctx.stride)
    if ctx.activation == 'none':
        gz = dy
    dx = None
    if ctx.needs_input_grad[0]:
        if ctx.stride == 1:
            # The adjoint of a 'same' convolution is the convolution with the kernel flipped in both axes; the
            # residual's gradient is gz itself (the forward kernel's centre weight + 1).
            dx = _dwconv_fwd(gz, weight.flip((-2, -1)).contiguous(), None, ctx.residual, 'none', x.dtype, 1)
        else:
            dx = _dwconv_transposed(gz, weight, x.shape[2], x.shape[3], ctx.stride, x.dtype)
    return dx, dweight, None if bias is None else dbias, None, None, None, None


_dwconv_fwd = TritonOp('sparx_mm::depthwise_conv_act_fwd', _dwconv_fwd, _dwconv_fwd_fake, _setup_context, _backward)


def depthwise_conv2d_act_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                residual: bool, activation: Optional[str], out_dtype: torch.dtype,
                                stride: int = 1) -> torch.Tensor:
    """Fused Triton implementation of :func:`sparx_mm.ops.depthwise_conv2d_act` (inputs already checked).

    Shapes: x (B, C, H, W), weight (C, 1, k, k), bias (C,) or None -> (B, C, ceil(H / stride), ceil(W / stride))
    in ``out_dtype``. Inputs that are not contiguous in NCHW order (channels_last) are copied first. Needs CUDA
    tensors (or ``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests).
    """
    check_triton_launchable(x, 'depthwise_conv2d_act_triton')
    return _dwconv_fwd(x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(),
                       residual, activation or 'none', out_dtype, stride)
