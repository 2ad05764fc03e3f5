"""Triton kernels of :func:`sparx_mm.ops.depthwise_conv2d_act`, forward and backward.

Tiles. A channel's rows over the whole batch, ``q = b * H + h`` (B*H rows of W values), are cut into tiles of
``BLOCK_R`` rows x ``BLOCK_W`` columns (BLOCK_W = W rounded up to a power of two, up to ``MAX_BLOCK_W``; wider
maps get several column blocks). A tile may hold rows of several samples, so small maps (7 x 7) fill a tile
instead of wasting most of a per-map tile, and every program works on one channel: its k*k weights and bias
are scalars. Each tap of the kernel is one masked load of x shifted by (i - k//2, j - k//2) rows and columns
(the tile's neighbourhood is in L1 / L2 after the first tap); the mask gives the zero padding and keeps a
shifted row inside its own map. Sums are float32; the residual is the centre weight plus one.

Forward: z = sum_taps w * x_shifted + bias (+ x); y = act(z) in the output dtype.

Backward, from x, weight and bias only (neither z nor y is saved): ``_grad_kernel`` recomputes z, writes
gz = dy * act'(z) (float32; without an activation gz is dy and nothing is written) and sums the weight and
bias gradients dw[i, j] = sum gz * x_shifted(i, j), db = sum gz: each program takes a contiguous run of one
channel's tiles, keeps the running products in registers and writes one row of partial sums, which torch
adds up (no atomics). Then dx = conv(gz, weight flipped in both axes) + (gz if residual): the forward kernel
without bias or activation.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable
from .triton_op import TritonOp

#: (elements per tile, warps) of the forward kernel, which also computes dx. On an H100 at SparX-T's sizes (batch
#: 128) 1024 elements and 4 warps were the fastest of 512 / 1024 / 2048 / 4096 elements (the others 0-30 %
#: slower): the kernel is bound by instruction issue (a shifted tap is a scalar load, being unaligned), not by
#: memory.
FWD_TILING = (1024, 4)
#: (shifted values a thread holds, warps) of the gradient kernel: a thread holds next_power_of_2(k*k) shifted x
#: values and as many running products a position, so its tile has max(1, values // taps) positions a thread
#: (k = 3: 2; k = 5, 7, 9: 1). H100, sm_90: 48 registers for k = 3 and 5, 80 for k = 7, 168 for k = 9, no
#: spills. Not tuned beyond that yet (tools/gpu_checks/check_depthwise_conv.py --bwd-tiling).
BWD_TILING = (32, 4)
#: The gradient kernel spreads each channel's tiles over about this many programs in all (at least one a
#: channel, at most one a tile): enough to hide memory latency, few enough that each program loops over
#: several tiles before its one reduction across threads (--bwd-programs to tune).
BWD_PROGRAMS = 4096
#: Widest column block; wider maps are split into several.
MAX_BLOCK_W = 128
#: Activation codes of the kernels.
_ACT_CODES = {'none': 0, 'gelu': 1, 'silu': 2}


@triton.jit
def _tile(c, tile, C, H, W, n_rows, n_col_blocks, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Tile ``tile`` of channel ``c``: the rows' map row h and validity (BLOCK_R), the columns (BLOCK_W), the
    element offsets in (B, C, H, W) (int64: plane offsets pass 2**31 in large batches) and the tile's mask."""
    q = (tile // n_col_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = (tile % n_col_blocks) * BLOCK_W + tl.arange(0, BLOCK_W)
    h = q % H
    row_ok = q < n_rows
    row_offs = (((q // H).to(tl.int64) * C + c) * H + h) * W
    offs = row_offs[:, None] + cols[None, :]
    mask = row_ok[:, None] & (cols < W)[None, :]
    return h, row_ok, cols, offs, mask


@triton.jit
def _shifted(x_ptr, offs, h, row_ok, cols, H, W, di: tl.constexpr, dj: tl.constexpr):
    """x at (h + di, w + dj) for the tile's positions, 0 outside the map, float32 (BLOCK_R, BLOCK_W)."""
    hs = h + di
    ws = cols + dj
    mask = (row_ok & (hs >= 0) & (hs < H))[:, None] & ((ws >= 0) & (ws < W))[None, :]
    return tl.load(x_ptr + offs + (di * W + dj), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _preactivation(x_ptr, w_ptr, b_ptr, c, offs, h, row_ok, cols, H, W, K: tl.constexpr, HAS_BIAS: tl.constexpr,
                   RESIDUAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """z = conv(x, w[c]) (+ b[c]) (+ x) on the tile, float32."""
    z = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            w = tl.load(w_ptr + c * (K * K) + (i * K + j)).to(tl.float32)
            if RESIDUAL and i == K // 2 and j == K // 2:
                w += 1.0
            z += w * _shifted(x_ptr, offs, h, row_ok, cols, H, W, i - K // 2, j - K // 2)
    if HAS_BIAS:
        z += tl.load(b_ptr + c).to(tl.float32)
    return z


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
def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, H, W, n_rows, n_col_blocks, n_tiles, K: tl.constexpr,
                ACT: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_R: tl.constexpr,
                BLOCK_W: tl.constexpr):
    c = tl.program_id(0) // n_tiles
    h, row_ok, cols, offs, mask = _tile(c, tl.program_id(0) % n_tiles, C, H, W, n_rows, n_col_blocks, BLOCK_R,
                                        BLOCK_W)
    z = _preactivation(x_ptr, w_ptr, b_ptr, c, offs, h, row_ok, cols, H, W, K, HAS_BIAS, RESIDUAL, BLOCK_R,
                       BLOCK_W)
    tl.store(y_ptr + offs, _activation(z, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, gz_ptr, partial_ptr, C, H, W, n_rows, n_col_blocks, n_tiles,
                 n_splits, tiles_per_program, K: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
                 RESIDUAL: tl.constexpr, TAPS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """gz = dy * act'(z) for tiles [split * tiles_per_program, ...) of one channel (written with an activation
    only), and that run's partial sums of the weight gradient (entries 0 .. K*K-1, tap i*K + j) and of the bias
    gradient (entry TAPS).

    All taps come from one (BLOCK_R, TAPS, BLOCK_W) load. Triton lays threads out along the contiguous axis
    (columns), then along the others in axis order, so with the taps on axis 1 and at least one position a
    thread, every thread holds the whole tap axis (on axis 0 Triton spread the taps over warps, and every sum
    over taps crossed warps: several times slower on an H100). The tap of each register is then a compile-time
    constant, the padding taps fold away, z is a sum inside the thread, and the products gz * x_shifted
    accumulate in registers over the program's tiles, reduced across threads once at the end."""
    c = tl.program_id(0) // n_splits
    split = tl.program_id(0) % n_splits
    taps = tl.arange(0, TAPS)
    tap_ok = taps < K * K
    di = (taps // K - K // 2)[None, :, None]
    dj = (taps % K - K // 2)[None, :, None]
    if ACT != 0:
        w = tl.load(w_ptr + c * (K * K) + taps, mask=tap_ok, other=0.0).to(tl.float32)
        if RESIDUAL:
            w += tl.where(taps == (K * K) // 2, 1.0, 0.0)
        w = w[None, :, None]
        if HAS_BIAS:
            bias = tl.load(b_ptr + c).to(tl.float32)
    acc = tl.zeros([BLOCK_R, TAPS, BLOCK_W], dtype=tl.float32)
    acc_bias = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
    first = split * tiles_per_program
    for tile in range(first, tl.minimum(first + tiles_per_program, n_tiles)):
        h, row_ok, cols, offs, mask = _tile(c, tile, C, H, W, n_rows, n_col_blocks, BLOCK_R, BLOCK_W)
        hs = h[:, None, None] + di
        ws = cols[None, None, :] + dj
        shifted_mask = (row_ok[:, None, None] & tap_ok[None, :, None] & (hs >= 0) & (hs < H)) & \
            ((ws >= 0) & (ws < W))
        xs = tl.load(x_ptr + offs[:, None, :] + (di * W + dj), mask=shifted_mask, other=0.0).to(tl.float32)
        # Out-of-tile positions load dy = 0, so their gz is 0 and they add nothing to the sums.
        gz = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ACT != 0:
            z = tl.sum(w * xs, axis=1)
            if HAS_BIAS:
                z += bias
            gz *= _activation_grad(z, ACT)
            tl.store(gz_ptr + offs, gz, mask=mask)
        acc += gz[:, None, :] * xs
        acc_bias += gz
    row = partial_ptr + tl.program_id(0) * (TAPS + 1)
    tl.store(row + taps, tl.sum(tl.sum(acc, axis=2), axis=0))
    tl.store(row + TAPS, tl.sum(acc_bias))


def _tiling(x: torch.Tensor, elements: int):
    """(BLOCK_R, BLOCK_W, number of column blocks, tiles per channel) for ``elements`` per tile."""
    b, _, h, w = x.shape
    block_w = min(triton.next_power_of_2(w), MAX_BLOCK_W)
    block_r = min(max(elements // block_w, 1), triton.next_power_of_2(b * h))
    n_col_blocks = triton.cdiv(w, block_w)
    return block_r, block_w, n_col_blocks, triton.cdiv(b * h, block_r) * n_col_blocks


def _grad_tiling(x: torch.Tensor, k: int):
    """(taps, warps, and _tiling's tuple) of the gradient kernel for kernel size ``k`` (BWD_TILING's doc)."""
    taps = triton.next_power_of_2(k * k)
    values, warps = BWD_TILING
    return taps, warps, _tiling(x, 32 * warps * max(1, values // taps))


def _splits(n_tiles: int, channels: int):
    """(programs a channel, tiles a program) of the gradient kernel: about BWD_PROGRAMS programs in all."""
    tiles_per_program = triton.cdiv(n_tiles, min(n_tiles, max(1, triton.cdiv(BWD_PROGRAMS, channels))))
    return triton.cdiv(n_tiles, tiles_per_program), tiles_per_program


def _launch_fwd(x, weight, bias, y, residual, act_code):
    b, c, h, w = x.shape
    elements, warps = FWD_TILING
    block_r, block_w, n_col_blocks, n_tiles = _tiling(x, elements)
    _fwd_kernel[(c * n_tiles, )](x, weight, weight if bias is None else bias, y, c, h, w, b * h, n_col_blocks,
                                 n_tiles, K=weight.shape[-1], ACT=act_code, HAS_BIAS=bias is not None,
                                 RESIDUAL=residual, BLOCK_R=block_r, BLOCK_W=block_w, num_warps=warps)


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _dwconv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: bool,
                activation: str, out_dtype: torch.dtype) -> torch.Tensor:
    """x (B, C, H, W), weight (C, 1, k, k), bias (C,) or None -> act(conv + bias (+ x)) (B, C, H, W) in
    ``out_dtype``; ``activation`` is 'none', 'gelu' or 'silu'; all inputs contiguous."""
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    _launch_fwd(x, weight, bias, y, residual, _ACT_CODES[activation])
    return y


def _dwconv_fwd_fake(x, weight, bias, residual, activation, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype)


def _dwconv_grad(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 residual: bool, activation: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> gz = dy * act'(z) (B, C, H, W) float32 (with ``activation`` 'none' gz is dy, not copied: an empty
    (0,) tensor instead), the weight gradient (C, 1, k, k) in weight's dtype, the bias gradient (C,) in bias's
    dtype (weight's without a bias)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    taps, warps, (block_r, block_w, n_col_blocks, n_tiles) = _grad_tiling(x, k)
    n_splits, tiles_per_program = _splits(n_tiles, c)
    gz = torch.empty(x.shape if activation != 'none' else (0, ), dtype=torch.float32, device=x.device)
    partial = torch.empty(c * n_splits, taps + 1, dtype=torch.float32, device=x.device)
    _grad_kernel[(c * n_splits, )](x, weight, weight if bias is None else bias, dy, gz, partial, c, h, w, b * h,
                                   n_col_blocks, n_tiles, n_splits, tiles_per_program, K=k,
                                   ACT=_ACT_CODES[activation], HAS_BIAS=bias is not None, RESIDUAL=residual,
                                   TAPS=taps, BLOCK_R=block_r, BLOCK_W=block_w, num_warps=warps)
    sums = partial.view(c, n_splits, taps + 1).sum(1)
    # Copies: a custom op's outputs may not be views of one another.
    dweight = sums[:, :k * k].reshape(weight.shape).to(weight.dtype, copy=True)
    dbias = sums[:, taps].to(weight.dtype if bias is None else bias.dtype, copy=True)
    return gz, dweight, dbias


def _dwconv_grad_fake(dy, x, weight, bias, residual, activation):
    return (x.new_empty(x.shape if activation != 'none' else (0, ), dtype=torch.float32), torch.empty_like(weight),
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
