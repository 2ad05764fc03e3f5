"""Triton kernels of :func:`sparx_mm.ops.pointwise_conv2d`, forward and backward.

Each program computes a (BLOCK_CO output channels) x (BLOCK_P positions) tile of the output as the GEMM
``weight (Cout, Cin) @ x[b] (Cin, H*W)``: x[b] is already a row-major (Cin, H*W) matrix in NCHW order, so no
layout conversion is needed, and the weight is small enough to stay in L2. A tile's positions are consecutive in
the (sample, position) order and run on from one sample into the next, so no tile is left part empty at a map's
end (14 x 14: 196 positions took two 128-position tiles a sample, 23 % of their columns masked); the hints of
``_columns`` keep the copies vectors. The output channel blocks of a position block are neighbouring programs, so
they share the x tiles through L2. A grouped convolution (``GROUPS`` groups: the DMCA's fusion conv) is the same
product on x, y (and skip) viewed as (B * GROUPS, C / GROUPS, H, W), the group on grid axis 1, its programs taking
the group's weight rows (and per-channel parameters) and each sample's pair (sample, group). The accumulator is
float32; the epilogue adds the bias, scales each column by its sample's branch scale where there is one
(stochastic depth's factor), adds the skip path (``skip * skip_scale + skip_shift``) and stores once in the output
dtype.

The operands are cast to the convolution dtype in registers before the product (float32 x under float16
autocast is rounded as autocast would round it). float32 products use TF32 when cuDNN may
(``torch.backends.cudnn.allow_tf32``), in a kernel of their own (``_conv1x1_tf32_kernel``): Hopper's TF32 tensor-core
product reads its shared-memory operands channel-major only, and x's tiles are position-major, so Triton copied
them into shared memory one 4-byte element at a time. That kernel makes the positions the product's rows
instead, x^T (positions, Cin) @ weight^T (Cin, Cout), with the x tile rounded to TF32 (to nearest even) in
registers, where the product takes it (the weight tile, from shared memory, goes in as the tensor cores take
float32 operands, its low mantissa bits dropped): 16-byte copies throughout. H200, batch 128, SparX-T's 1x1
convs at 3136 and 784 positions: 1.30-2.59x cuDNN's convolution with its bias and skip adds
(``tools/gpu_checks/check_pointwise_conv.py --only bench``).

Vector loads need row strides that are multiples of 16 bytes, and Triton knows an integer argument's
divisibility only by 16: the position count (196 at 14 x 14), the input channels (whose bound masks the weight
rows' loads) and the weight's row stride (SparX-S / B's 328, 396, 636 channels) are passed divided by their
largest power-of-two factor up to 8 (``P_ALIGN``, ``CIN_ALIGN``, ``W_ALIGN``; ``triton_launch.power_of_two_factor``)
and multiplied back in the kernel, so the compiler sees that factor.

The backward pass stays in NCHW order too (cuDNN's convolution backward converts dy and x to NHWC and back: 7.5
ms of a SparX-T fp16 training step's 138.6 on an H200, docs/benchmarks.md). dx = weight^T @ dy[b] is the forward
kernel run on dy with the transposed weight (its skip path adds the gradient of x's other use, where x has one:
:func:`pointwise_conv2d_and_input_triton`). The weight gradient, a sum over samples and positions, comes from
``_conv1x1_wgrad_kernel``: a program per output tile and split of the batch, dy and x tiles read with the positions (the
product's K: the split's samples' positions in one run, chunks running on across samples) contiguous, which is how
Hopper's tensor cores take both operands, TF32 included; the splits' float32 partial sums are added after it
(deterministic, no atomics). Its tiling and the backward's speed against cuDNN's:
``tools/gpu_checks/check_pointwise_conv.py --only bench wgrad-sweep``. The per-channel gradients come from one
more pass over dy, ``_channel_grads_kernel`` (not the weight-gradient kernel: Triton 3.6 miscompiled sums of
the dy tile that fed its tensor-core product on Hopper): the bias's and the skip shift's (both dy's sum), the
skip scale's (the sum of dy * skip) and the skip path's own (dy * scale), where torch took a pass over dy for
each sum and each product (SparX-T's stage-3 blocks: five; docs/benchmarks.md); with a branch scale also dbranch =
dy * branch_scale[b], from which the convolution's gradients start (stochastic depth's backward product).

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1`` (Triton's
CPU interpreter, which the CPU tests use).
"""
import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import gpu_backends, triton_op
from .gpu_backends import check_triton_launchable, choice_from_environment
from .triton_depthwise_conv import ACT_CODES, _activation
from .triton_group_norm import _reduce_layout, _row_block, _tile_offsets
from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor
from .triton_op import TritonOp

#: Products of ``_conv1x1_kernel``, by the convolution dtype (float32 there: exact; TF32 is ``_conv1x1_tf32_kernel``'s).
_DOT_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
#: Set to (BLOCK_CO, BLOCK_P, BLOCK_K, warps, stages) to override :func:`tiling` (tuning and tests).
TILING_OVERRIDE: Optional[Tuple[int, int, int, int, int]] = None
#: Set to (BLOCK_CO, BLOCK_CI, BLOCK_P, warps, stages) to override :func:`wgrad_tiling` (tuning and tests).
WGRAD_TILING_OVERRIDE: Optional[Tuple[int, int, int, int, int]] = None
BACKWARD_ENV = 'SPARX_POINTWISE_BACKWARD'
BACKWARD_CHOICES = ('auto', 'triton', 'cudnn')


def _backward_by_environment() -> str:
    return choice_from_environment(BACKWARD_ENV, BACKWARD_CHOICES,
                                   'auto (the default: :func:`triton_backward_is_faster` decides), triton (the Triton '
                                   "kernels, NCHW throughout) and cudnn (the convolution's own backward)")


#: The backward pass of the Triton convolutions: 'auto' (:func:`triton_backward_is_faster` decides each call),
#: 'triton' (``_pointwise_bwd``) or 'cudnn' (the convolution's own backward); ``SPARX_POINTWISE_BACKWARD`` at
#: import, or set at run time (``tools/gpu_checks/check_pointwise_conv.py --only bench`` times both).
BACKWARD = _backward_by_environment()


def triton_backward_is_faster(positions: int, groups: int) -> bool:
    """Whether the Triton backward (dx, then the weight gradient) beats cuDNN's convolution backward: the 'auto'
    choice. Measured on an H200 (batch 128, SparX-T's 1x1 convs at 224 x 224, forward + backward,
    ``check_pointwise_conv.py --only bench --arch t``): the grouped fusion convs 1.03-2.2x (cuDNN's grouped
    backward is slow); ungrouped convs 0.97-1.29x at 196 positions, 0.88-1.01x at 784 and 3136 (cuDNN's GEMMs
    there outrun its layout conversions)."""
    return groups > 1 or positions < 784


def _triton_backward(positions: int, groups: int) -> bool:
    """Whether the backward pass runs the Triton kernels (else cuDNN's convolution backward): :data:`BACKWARD`."""
    return BACKWARD == 'triton' or BACKWARD == 'auto' and triton_backward_is_faster(positions, groups)


#: Largest extent of a CUDA grid's y axis (the groups of a launch).
_MAX_GRID_Y = 65535
#: float16 / bfloat16 products: weight rows are padded (a copy in the convolution dtype) to a multiple of this
#: many elements when Cin is not, as unaligned rows cannot be read with vector loads (SparX-S's 328 and SparX-B's
#: 120 / 396 / 636 channels). H100, batch 128, float16: SparX-B 396 -> 792 at 14 x 14 0.284 -> 0.170 ms, 636 ->
#: 1272 at 7 x 7 0.181 -> 0.127 ms, SparX-S 328 -> 656 0.191 -> 0.133 ms; float32 rows gained nothing.
WEIGHT_ROW_ALIGN = 16


@triton.jit
def _round_to_tf32(x):
    """float32 ``x`` rounded to TF32's 10 mantissa bits, to nearest even; NaN stays NaN, overflow gives inf."""
    bits = x.to(tl.uint32, bitcast=True)
    rounded = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return tl.where(x == x, rounded.to(tl.float32, bitcast=True), x)


@triton.jit
def _program_tile(COUT, N, BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's output channels and flattened (sample, position) indices n < N = samples x positions, with
    their masks. Grid axis 0 runs over (position tile, channel tile) pairs, the channel tiles of a position tile
    neighbours (they share its x tile through L2); axis 1 is the group."""
    co_tiles = tl.cdiv(COUT, BLOCK_CO)
    offs_co = (tl.program_id(0) % co_tiles) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    n = (tl.program_id(0) // co_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    return offs_co, offs_co < COUT, n, n < N


@triton.jit
def _split_positions(n, P, group, GROUPS: tl.constexpr):
    """Flattened indices n = sample * P + position -> (sample, the (sample, group) pair's index in the (B * GROUPS,
    C / GROUPS, P) views (int64: element offsets of large batches pass 2**31), position)."""
    sample = n // P
    return sample, sample.to(tl.int64) * GROUPS + group, n - sample * P


@triton.jit
def _columns(unit, position, C, P, P_ALIGN: tl.constexpr):
    """Element offsets of (pair ``unit``, ``position``) in channel 0 of a (pairs, C, P) tensor. Runs of P_ALIGN
    consecutive indices (P_ALIGN divides P and every tile's first index) stay in one sample, so their offsets are
    consecutive and the first a multiple of P_ALIGN: the hints let the compiler copy them as vectors."""
    cols = unit * C * P + position
    if P_ALIGN > 1:
        cols = tl.max_contiguous(tl.multiple_of(cols, P_ALIGN), P_ALIGN)
    return cols


@triton.jit
def _group_params(w_ptr, b_ptr, scale_ptr, shift_ptr, COUT, W_STRIDE, GROUPS: tl.constexpr):
    """The weight rows and the per-channel parameters of this program's group (grid axis 1); the pointers unchanged
    when GROUPS is 1."""
    if GROUPS > 1:
        group = tl.program_id(1)
        w_ptr += group * COUT * W_STRIDE
        b_ptr += group * COUT
        scale_ptr += group * COUT
        shift_ptr += group * COUT
    return w_ptr, b_ptr, scale_ptr, shift_ptr


@triton.jit
def _add_bias_skip_and_store(acc, co, cols, cols_ok, sample, COUT, P, b_ptr, s_ptr, scale_ptr, shift_ptr, bs_ptr,
                             y_ptr, HAS_BIAS: tl.constexpr, HAS_SKIP: tl.constexpr, HAS_SCALE: tl.constexpr,
                             HAS_SHIFT: tl.constexpr, HAS_BRANCH_SCALE: tl.constexpr, ACT: tl.constexpr):
    """y[sample, co, p] = act(acc + bias[co]) * branch_scale[sample] + skip[sample, co, p] * scale[co] + shift[co]
    (``ACT``: the depthwise kernels' activation codes; the wrapper passes neither a skip path nor a branch scale
    with an activation); ``co`` and the columns' ``cols`` (``_columns`` of y), ``cols_ok`` and ``sample`` are 2-D
    index tensors broadcasting to acc's shape (either orientation)."""
    co_ok = co < COUT
    mask = co_ok & cols_ok
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)
    if ACT != 0:
        acc = _activation(acc, ACT)
    if HAS_BRANCH_SCALE:
        acc *= tl.load(bs_ptr + sample, mask=cols_ok, other=0.0).to(tl.float32)
    offs = co * P + cols
    if HAS_SKIP:
        skip = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            skip *= tl.load(scale_ptr + co, mask=co_ok, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            skip += tl.load(shift_ptr + co, mask=co_ok, other=0.0).to(tl.float32)
        acc += skip
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv1x1_kernel(x_ptr, w_ptr, b_ptr, s_ptr, scale_ptr, shift_ptr, bs_ptr, y_ptr, CIN_UNITS, COUT, P_UNITS,
                    SAMPLES, W_STRIDE_UNITS, HAS_BIAS: tl.constexpr, HAS_SKIP: tl.constexpr, HAS_SCALE: tl.constexpr,
                    HAS_SHIFT: tl.constexpr, HAS_BRANCH_SCALE: tl.constexpr, ACT: tl.constexpr, DOT: tl.constexpr,
                    GROUPS: tl.constexpr, CIN_ALIGN: tl.constexpr, P_ALIGN: tl.constexpr, W_ALIGN: tl.constexpr,
                    BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[b, co, p] = act(sum_ci w[co, ci] x[b, ci, p] + bias[co]) * branch_scale[b] + skip[b, co, p] * scale[co]
    + shift[co];
    float16, bfloat16 or exact float32 products (``DOT``). CIN = CIN_UNITS * CIN_ALIGN input channels, P = P_UNITS *
    P_ALIGN positions of each of SAMPLES samples, weight rows W_STRIDE_UNITS * W_ALIGN apart (module doc); with
    GROUPS > 1, CIN / COUT are a group's channels, the group grid axis 1 (``_group_params``)."""
    CIN = CIN_UNITS * CIN_ALIGN
    P = P_UNITS * P_ALIGN
    W_STRIDE = W_STRIDE_UNITS * W_ALIGN
    offs_co, co_ok, n, n_ok = _program_tile(COUT, SAMPLES * P, BLOCK_CO, BLOCK_P)
    sample, unit, position = _split_positions(n, P, tl.program_id(1), GROUPS)
    x_cols = _columns(unit, position, CIN, P, P_ALIGN)
    w_ptr, b_ptr, scale_ptr, shift_ptr = _group_params(w_ptr, b_ptr, scale_ptr, shift_ptr, COUT, W_STRIDE, GROUPS)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_CO, BLOCK_P), tl.float32)
    for k0 in range(0, CIN, BLOCK_K):
        ks = k0 + offs_k
        k_ok = ks < CIN
        xt = tl.load(x_ptr + ks[:, None] * P + x_cols[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        wt = tl.load(w_ptr + offs_co[:, None] * W_STRIDE + ks[None, :], mask=co_ok[:, None] & k_ok[None, :],
                     other=0.0)
        if DOT == 0:
            acc = tl.dot(wt.to(tl.float16), xt.to(tl.float16), acc)
        elif DOT == 1:
            acc = tl.dot(wt.to(tl.bfloat16), xt.to(tl.bfloat16), acc)
        else:
            acc = tl.dot(wt.to(tl.float32), xt.to(tl.float32), acc, input_precision='ieee')
    _add_bias_skip_and_store(acc, offs_co[:, None], _columns(unit, position, COUT, P, P_ALIGN)[None, :],
                             n_ok[None, :], sample[None, :], COUT, P, b_ptr, s_ptr, scale_ptr, shift_ptr, bs_ptr,
                             y_ptr, HAS_BIAS, HAS_SKIP, HAS_SCALE, HAS_SHIFT, HAS_BRANCH_SCALE, ACT)


@triton.jit
def _conv1x1_tf32_kernel(x_ptr, w_ptr, b_ptr, s_ptr, scale_ptr, shift_ptr, bs_ptr, y_ptr, CIN_UNITS, COUT, P_UNITS,
                         SAMPLES, W_STRIDE_UNITS, HAS_BIAS: tl.constexpr, HAS_SKIP: tl.constexpr,
                         HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_BRANCH_SCALE: tl.constexpr,
                         ACT: tl.constexpr,
                         GROUPS: tl.constexpr, CIN_ALIGN: tl.constexpr, P_ALIGN: tl.constexpr, W_ALIGN: tl.constexpr,
                         BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """``_conv1x1_kernel``'s result for float32 tensors with TF32 products, as acc (BLOCK_P, BLOCK_CO) = x^T @ w^T,
    x rounded to TF32 in registers (module doc)."""
    CIN = CIN_UNITS * CIN_ALIGN
    P = P_UNITS * P_ALIGN
    W_STRIDE = W_STRIDE_UNITS * W_ALIGN
    offs_co, co_ok, n, n_ok = _program_tile(COUT, SAMPLES * P, BLOCK_CO, BLOCK_P)
    sample, unit, position = _split_positions(n, P, tl.program_id(1), GROUPS)
    x_cols = _columns(unit, position, CIN, P, P_ALIGN)
    w_ptr, b_ptr, scale_ptr, shift_ptr = _group_params(w_ptr, b_ptr, scale_ptr, shift_ptr, COUT, W_STRIDE, GROUPS)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_P, BLOCK_CO), tl.float32)
    for k0 in range(0, CIN, BLOCK_K):
        ks = k0 + offs_k
        k_ok = ks < CIN
        xt = tl.load(x_ptr + ks[None, :] * P + x_cols[:, None], mask=k_ok[None, :] & n_ok[:, None], other=0.0)
        wt = tl.load(w_ptr + offs_co[None, :] * W_STRIDE + ks[:, None], mask=co_ok[None, :] & k_ok[:, None],
                     other=0.0)
        acc = tl.dot(_round_to_tf32(xt.to(tl.float32)), wt.to(tl.float32), acc, input_precision='tf32')
    _add_bias_skip_and_store(acc, offs_co[None, :], _columns(unit, position, COUT, P, P_ALIGN)[:, None],
                             n_ok[:, None], sample[:, None], COUT, P, b_ptr, s_ptr, scale_ptr, shift_ptr, bs_ptr,
                             y_ptr, HAS_BIAS, HAS_SKIP, HAS_SCALE, HAS_SHIFT, HAS_BRANCH_SCALE, ACT)


@triton.jit
def _conv1x1_wgrad_kernel(dy_ptr, x_ptr, dw_ptr, CIN, COUT, P_UNITS, SAMPLES, SAMPLES_PER_SPLIT, DOT: tl.constexpr,
                          GROUPS: tl.constexpr, P_ALIGN: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
                          BLOCK_P: tl.constexpr):
    """One split of the samples' share of the weight gradient, float32:
    dw[split, co, ci] = sum over its samples b and positions p of dy[b, co, p] x[b, ci, p]. Both operands are read
    in NCHW order with the positions, the product's K, contiguous: the K-major tiles Hopper's tensor cores take,
    TF32 included. Products in the convolution dtype (``DOT``: 0 float16, 1 bfloat16, 2 exact float32, 3 TF32).
    With GROUPS > 1, grid axis 2 is (split, group) and dy / x are (SAMPLES * GROUPS, COUT / CIN, H, W) views: a
    group's channels, sample b's at b * GROUPS + group; dw rows split * GROUPS * COUT + group * COUT + co.

    No bias sums here: summing the dy tile that also feeds the tensor-core product gave wrong weight gradients on
    an H200 (Triton 3.6, relative errors 0.004-0.34 in float16 and TF32 whenever the loop was pipelined, 2 or 3
    stages; exact with 1 stage, without the sums, or with exact float32 products), so the caller sums dy itself."""
    P = P_UNITS * P_ALIGN
    offs_co = tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    split = tl.program_id(2) // GROUPS
    group = tl.program_id(2) % GROUPS
    co_ok = offs_co < COUT
    ci_ok = offs_ci < CIN
    offs_p = tl.arange(0, BLOCK_P)
    # The split's samples' positions flattened into one K (n = sample * P + position), cut into BLOCK_P chunks that
    # run on across samples: no chunk half empty at a map's end (196 positions: 4 chunks of 64 a sample, 23 % of
    # their columns masked), one loop that the compiler pipelines.
    n_start = split * SAMPLES_PER_SPLIT * P
    n_end = tl.minimum(split * SAMPLES_PER_SPLIT + SAMPLES_PER_SPLIT, SAMPLES) * P
    acc = tl.zeros((BLOCK_CO, BLOCK_CI), tl.float32)
    for step in range(tl.cdiv(n_end - n_start, BLOCK_P)):
        n = n_start + step * BLOCK_P + offs_p
        n_ok = n < n_end
        _, unit, position = _split_positions(n, P, group, GROUPS)
        dyt = tl.load(dy_ptr + offs_co[:, None] * P + _columns(unit, position, COUT, P, P_ALIGN)[None, :],
                      mask=co_ok[:, None] & n_ok[None, :], other=0.0)
        xt = tl.load(x_ptr + offs_ci[None, :] * P + _columns(unit, position, CIN, P, P_ALIGN)[:, None],
                     mask=ci_ok[None, :] & n_ok[:, None], other=0.0)
        if DOT == 0:
            acc = tl.dot(dyt.to(tl.float16), xt.to(tl.float16), acc)
        elif DOT == 1:
            acc = tl.dot(dyt.to(tl.bfloat16), xt.to(tl.bfloat16), acc)
        elif DOT == 2:
            acc = tl.dot(dyt.to(tl.float32), xt.to(tl.float32), acc, input_precision='ieee')
        else:
            acc = tl.dot(dyt.to(tl.float32), xt.to(tl.float32), acc, input_precision='tf32')
    rows = (split.to(tl.int64) * GROUPS + group) * COUT + offs_co
    tl.store(dw_ptr + rows[:, None] * CIN + offs_ci[None, :], acc, mask=co_ok[:, None] & ci_ok[None, :])


def tiling(cin: int, cout: int, positions: int, conv_dtype: torch.dtype, tf32: bool = False,
           activation: bool = False) -> Tuple[int, int, int, int, int]:
    """(BLOCK_CO, BLOCK_P, BLOCK_K, warps, stages) for a (Cout, Cin) x (Cin, positions) product (a group's).

    From sweeps (batch 128, the 1x1 convolutions of SparX-T and B; ``tools/gpu_checks/check_pointwise_conv.py
    --only sweep`` repeats them, for any of T / S / B): float16 and exact float32 on an H100, the fastest of 24
    tilings each; TF32 on an H200, the fastest of 8 (a sweep before ``--only sweep`` covered this kernel). 16-bit
    products at 128-511 positions (stage 3's 196) take K chunks of 32 channels: with the position tiles running on
    across samples, SparX-B's stage-3 convs in float16 (H100, batch 128) 396 -> 1584 0.169 -> 0.146 ms, 1584 -> 396
    with a skip path 0.120 -> 0.105, 792 -> 396 0.081 -> 0.071 against 64-channel chunks. Products
    of at most 64 output channels (the groups of SparX-T's first DMCA fusion conv) take 64-channel tiles instead of
    half-empty 128-channel ones: not yet timed. With an ``activation`` epilogue, 128 x 128 tiles take 8 warps: at 4
    the accumulator (128 float32 values a thread) and the GELU's temporaries spill (ptxas for sm_90, SparX-T's DMCA
    shortcut projections, 1280 -> 640 at 14 x 14: TF32 304 bytes, float16 184; at 8 warps 189 / 147 registers, no
    spills; ``tools/analysis_tools/hopper_codegen.py --part pointwise-gelu``).
    """
    if TILING_OVERRIDE is not None:
        return TILING_OVERRIDE
    block_co, block_p, block_k, warps, stages = _sweep_tiling(cin, positions, conv_dtype, tf32)
    block_co = min(block_co, max(64, next_power_of_2(cout)))
    if activation and block_co * block_p >= 128 * 128:
        warps = max(warps, 8)
    return block_co, block_p, block_k, warps, stages


def _sweep_tiling(cin: int, positions: int, conv_dtype: torch.dtype, tf32: bool) -> Tuple[int, int, int, int, int]:
    """The sweeps' fastest tilings (:func:`tiling`)."""
    if conv_dtype == torch.float32 and tf32:
        return (128, 128, 32, 4, 3) if positions >= 128 else (128, 64, 32, 4, 3)
    if conv_dtype == torch.float32:  # float32 tiles take twice the registers and shared memory of float16 ones
        if positions >= 512:
            return 128, 64, 32, 4, 3
        return (128, 128, 32, 8, 3) if positions >= 128 else (128, 64, 32, 8, 3)
    if positions >= 512:
        return (64, 128, 32, 4, 4) if cin <= 192 else (128, 128, 64, 4, 3)
    return (128, 128, 32, 4, 3) if positions >= 128 else (128, 64, 64, 8, 3)


def _check_flat_positions(batch: int, h: int, w: int, groups: int):
    """The kernels index a tensor's (sample, position) pairs as one int32 count and its groups on a grid axis."""
    if batch * h * w >= 2 ** 31 or groups > _MAX_GRID_Y:
        raise ValueError(f'pointwise_conv2d_triton: {batch} samples of {h} x {w} positions ({groups} group(s)) '
                         f'exceed the kernels\' 2**31 - 1 sample-positions or {_MAX_GRID_Y} groups; split the batch '
                         'or use the reference implementation')


def _weight_rows(weight: torch.Tensor, conv_dtype: torch.dtype) -> torch.Tensor:
    """A (Cout, Cin) weight matrix (any strides) as the kernels read it: rows contiguous; for 16-bit products
    rows that are not WEIGHT_ROW_ALIGN elements long are padded, in a copy in the convolution dtype."""
    cin = weight.shape[1]
    if WEIGHT_ROW_ALIGN and conv_dtype != torch.float32 and cin % WEIGHT_ROW_ALIGN:
        return torch.nn.functional.pad(weight.to(conv_dtype), (0, -cin % WEIGHT_ROW_ALIGN))
    return weight.contiguous()


def _launch(x, weight, bias, skip, skip_scale, skip_shift, y, conv_dtype, tf32, groups=1, activation='none',
            branch_scale=None):
    """``_conv1x1_kernel`` or ``_conv1x1_tf32_kernel`` writing y; ``weight``: the (Cout, Cin / groups) matrix, any
    strides."""
    b, cin, h, w = x.shape
    cin, cout = cin // groups, weight.shape[0] // groups
    positions = h * w
    tf32 = tf32 and conv_dtype == torch.float32
    block_co, block_p, block_k, warps, stages = tiling(cin, cout, positions, conv_dtype, tf32, activation != 'none')
    _check_flat_positions(b, h, w, groups)
    grid = (cdiv(cout, block_co) * cdiv(b * positions, block_p), groups)
    weight = _weight_rows(weight, conv_dtype)
    cin_align, p_align, w_align = (power_of_two_factor(n) for n in (cin, positions, weight.stride(0)))
    dummy = weight
    kernel, dot = (_conv1x1_tf32_kernel, {}) if tf32 else (_conv1x1_kernel, dict(DOT=_DOT_CODES[conv_dtype]))
    launch(kernel, grid, x, weight, dummy if bias is None else bias, dummy if skip is None else skip,
           dummy if skip_scale is None else skip_scale, dummy if skip_shift is None else skip_shift,
           dummy if branch_scale is None else branch_scale, y, cin // cin_align, cout, positions // p_align, b,
           weight.stride(0) // w_align, HAS_BIAS=bias is not None, HAS_SKIP=skip is not None,
           HAS_SCALE=skip_scale is not None, HAS_SHIFT=skip_shift is not None,
           HAS_BRANCH_SCALE=branch_scale is not None, ACT=ACT_CODES[activation], GROUPS=groups, CIN_ALIGN=cin_align,
           P_ALIGN=p_align, W_ALIGN=w_align, BLOCK_CO=block_co, BLOCK_P=block_p, BLOCK_K=block_k, num_warps=warps,
           num_stages=stages, **dot)


def wgrad_tiling(cin: int, cout: int, positions: int, conv_dtype: torch.dtype) -> Tuple[int, int, int, int, int]:
    """(BLOCK_CO, BLOCK_CI, BLOCK_P, warps, stages) of ``_conv1x1_wgrad_kernel`` for a group's (cout, cin) weight at
    ``positions`` positions a sample. By default the largest output tile the channel counts fill, K chunks of 32
    float32 / 64 16-bit positions (16 KB a stage and operand at 128 x 128). 16-bit products where SparX runs the
    kernel, from ``tools/gpu_checks/check_pointwise_conv.py --only wgrad-sweep`` (H100, batch 128, SparX-B's
    sizes, the fastest of 16 tilings): on maps under 512 positions (stage 3's 196), 32-position chunks of 4 warps
    for channel counts less than 4x apart, with a 64-wide tile on the smaller side (396 -> 792: 0.124 -> 0.112
    ms, 792 -> 396: 0.125 -> 0.105, the DMCA's groups 396 -> 264: 0.146 -> 0.119), and for products to 4x fewer
    output channels (1584 -> 396 at 128 x 128: 0.233 -> 0.173; to 4x more, 396 -> 1584, the default was the
    fastest); groups of at most 256 channels either way (the DMCAs' fusion convs at 56 x 56 and 28 x 28) 64 x 64
    tiles (0.189 -> 0.178, 0.128 -> 0.116 ms)."""
    if WGRAD_TILING_OVERRIDE is not None:
        return WGRAD_TILING_OVERRIDE
    block_co, block_ci = (128 if cout > 64 else 64), (128 if cin > 64 else 64)
    if conv_dtype != torch.float32:
        if positions < 512 and max(cin, cout) < 4 * min(cin, cout):
            return (64, 128, 32, 4, 3) if cout < cin else (128, 64, 32, 4, 3)
        if positions < 512 and cout < cin:
            return block_co, block_ci, 32, 4, 3
        if positions >= 512 and cin <= 256 and cout <= 256:
            return 64, 64, 64, 4, 3
    block_p = 32 if conv_dtype == torch.float32 else 64
    return block_co, block_ci, block_p, (8 if block_co * block_ci >= 128 * 128 else 4), 3


@functools.lru_cache(maxsize=None)
def _concurrent_programs(device: torch.device) -> int:
    """Programs that keep the device busy: four a multiprocessor (132 on an H100 / H200) on CUDA, else a few."""
    if device.type != 'cuda':
        return 8
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def wgrad_splits(samples: int, tiles: int, device: torch.device) -> Tuple[int, int]:
    """(samples a split, splits): the batch cut into as few splits as fill the device with ``tiles`` output tiles
    each, every split a program per tile; the splits' partial sums are added after the kernel."""
    splits = max(1, min(samples, cdiv(_concurrent_programs(device), tiles)))
    per_split = cdiv(samples, splits)
    return per_split, cdiv(samples, per_split)


def _launch_wgrad(dy: torch.Tensor, x: torch.Tensor, conv_dtype: torch.dtype, tf32: bool,
                  groups: int = 1) -> torch.Tensor:
    """dy (B, Cout, H, W) and x (B, Cin, H, W), contiguous -> the weight gradient (Cout, Cin / groups), float32,
    summed over samples and positions."""
    b, cin, h, w = x.shape
    cout, positions = dy.shape[1], h * w
    cin_group, cout_group = cin // groups, cout // groups
    block_co, block_ci, block_p, warps, stages = wgrad_tiling(cin_group, cout_group, positions, conv_dtype)
    _check_flat_positions(b, h, w, groups)
    tiles = (cdiv(cout_group, block_co), cdiv(cin_group, block_ci))
    per_split, splits = wgrad_splits(b, tiles[0] * tiles[1] * groups, x.device)
    dw = torch.empty(splits, cout, cin_group, device=x.device, dtype=torch.float32)
    dot = 3 if conv_dtype == torch.float32 and tf32 else _DOT_CODES[conv_dtype]
    p_align = power_of_two_factor(positions)
    launch(_conv1x1_wgrad_kernel, tiles + (splits * groups, ), dy, x, dw, cin_group, cout_group, positions // p_align,
           b, per_split, DOT=dot, GROUPS=groups, P_ALIGN=p_align, BLOCK_CO=block_co, BLOCK_CI=block_ci,
           BLOCK_P=block_p, num_warps=warps, num_stages=stages)
    return dw.sum(0)


@triton.jit
def _channel_grads_kernel(dy_ptr, skip_ptr, scale_ptr, dskip_ptr, bs_ptr, dbranch_ptr, sums_ptr, rows, C, S_UNITS,
                          chunks_per_split, SKIP_SUM: tl.constexpr, DSKIP: tl.constexpr, DBRANCH: tl.constexpr,
                          S_ALIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Over the columns of split ``program_id(1)`` of BLOCK_R rows (sample, channel) of dy (B*C, S): the float32
    sums of dy and of dy * skip (0 without SKIP_SUM) at [0, row, split] and [1, row, split] of ``sums`` (2, rows,
    splits);
    with DSKIP, dskip = dy * scale[channel] rounded to dy's dtype (the scale too, as torch's product of the two
    in that dtype), stored in dskip's dtype; with DBRANCH, dbranch = dy * branch_scale[sample] (float32 factors)
    in dy's dtype. S = S_UNITS * S_ALIGN."""
    S = S_UNITS * S_ALIGN
    r, mask_r, sample, channel = _row_block(tl.program_id(0), rows, C, BLOCK_R)
    split = tl.program_id(1)
    start = split * chunks_per_split * BLOCK_S
    cols = tl.arange(0, BLOCK_S)
    if DSKIP:
        scale = tl.load(scale_ptr + channel, mask=mask_r, other=0.0).to(dy_ptr.dtype.element_ty).to(tl.float32)
    if DBRANCH:
        branch_scale = tl.load(bs_ptr + sample, mask=mask_r, other=0.0).to(tl.float32)
    s1 = tl.zeros([BLOCK_R], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_R], dtype=tl.float32)
    for i in range(tl.minimum(chunks_per_split, tl.cdiv(S - start, BLOCK_S))):
        offsets, mask = _tile_offsets(r, mask_r, start + i * BLOCK_S + cols, S)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        s1 += tl.sum(dy, axis=1)
        if SKIP_SUM:
            skip = tl.load(skip_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            s2 += tl.sum(dy * skip, axis=1)
        if DSKIP:
            dskip = (dy * scale[:, None]).to(dy_ptr.dtype.element_ty)
            tl.store(dskip_ptr + offsets, dskip.to(dskip_ptr.dtype.element_ty), mask=mask)
        if DBRANCH:
            dbranch = dy * branch_scale[:, None]
            tl.store(dbranch_ptr + offsets, dbranch.to(dbranch_ptr.dtype.element_ty), mask=mask)
    splits = tl.num_programs(1)
    out = r.to(tl.int64) * splits + split
    tl.store(sums_ptr + out, s1, mask=mask_r)
    tl.store(sums_ptr + tl.cast(rows, tl.int64) * splits + out, s2, mask=mask_r)


def _channel_grads(dy: torch.Tensor, skip: Optional[torch.Tensor], scale: Optional[torch.Tensor],
                   dskip_dtype: torch.dtype,
                   branch_scale: Optional[torch.Tensor] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy (B, C, H, W), skip (dy's shape) or None, scale (C,) or None, branch_scale (B,) or None, contiguous ->
    (dskip = dy * scale in ``dskip_dtype``, or an empty (0,) tensor without ``scale``; dbranch = dy *
    branch_scale[b] in dy's dtype, or an empty (0,) tensor without ``branch_scale``; the (2, C) float32 sums over
    B, H, W of dy and of dy * skip (zeros without ``skip``): the skip shift's and the skip scale's gradients; the
    (C,) float32 sums of dy * branch_scale[b], the bias's gradient with a branch scale, or an empty (0,) tensor
    without one (then the bias's is the sum of dy))."""
    batch, channels = dy.shape[:2]
    dskip, dbranch, _, weighted = _channel_grads_fake(dy, skip, scale, dskip_dtype, branch_scale)
    if not dy.numel():
        return dskip, dbranch, dy.new_zeros(2, channels, dtype=torch.float32), weighted.zero_()
    rows, cols = batch * channels, dy.numel() // (batch * channels)
    block_r, block_s, row_blocks, splits, per_split = _reduce_layout(rows, cols)
    partial = torch.empty(2, rows * splits, device=dy.device, dtype=torch.float32)
    s_align = power_of_two_factor(cols)
    launch(_channel_grads_kernel, (row_blocks, splits), dy, dy if skip is None else skip,
           dy if scale is None else scale, dy if scale is None else dskip,
           dy if branch_scale is None else branch_scale, dy if branch_scale is None else dbranch, partial, rows,
           channels, cols // s_align, per_split, SKIP_SUM=skip is not None, DSKIP=scale is not None,
           DBRANCH=branch_scale is not None, S_ALIGN=s_align, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)
    partial = partial.view(2, batch, channels, splits)
    if branch_scale is None:
        return dskip, dbranch, partial.sum((1, 3)), weighted
    per_sample = partial.sum(3)
    # The bias's gradient is dbranch's sum: the per-sample sums of dy weighted by the (exact, float32) factors.
    return dskip, dbranch, per_sample.sum(1), (per_sample[0] * branch_scale.float()[:, None]).sum(0)


def _channel_grads_fake(dy, skip, scale, dskip_dtype, branch_scale=None):
    return (dy.new_empty(dy.shape if scale is not None else (0, ), dtype=dskip_dtype),
            dy.new_empty(dy.shape if branch_scale is not None else (0, )),
            dy.new_empty(2, dy.shape[1], dtype=torch.float32),
            dy.new_empty(dy.shape[1] if branch_scale is not None else 0, dtype=torch.float32))


_channel_grads = TritonOp('sparx_mm::pointwise_conv_channel_grads', _channel_grads, _channel_grads_fake)


def bias_grad(dy: torch.Tensor, conv_dtype: torch.dtype) -> torch.Tensor:
    """dy (B, Cout, H, W) -> the bias gradient (Cout,), float32: dy's sum in the convolution dtype, as the
    convolution's backward sums its cast dy (the per-channel gradients' pass on the cast dy)."""
    return _channel_grads(dy.to(conv_dtype).contiguous(), None, None, conv_dtype)[2][0]


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _pointwise_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], skip: Optional[torch.Tensor],
                   skip_scale: Optional[torch.Tensor], skip_shift: Optional[torch.Tensor],
                   branch_scale: Optional[torch.Tensor], conv_dtype: torch.dtype, out_dtype: torch.dtype, tf32: bool,
                   groups: int, activation: str) -> torch.Tensor:
    """x (B, Cin, H, W), weight (Cout, Cin / groups, 1, 1), bias / skip_scale / skip_shift (Cout,) or None, skip
    (B, Cout, H, W) or None, branch_scale (B,) or None, all contiguous -> (B, Cout, H, W) in ``out_dtype``;
    ``activation`` ('none', 'gelu', 'silu'; only without a skip path and a branch scale, and without gradients:
    the backward pass does not differentiate it) applied to conv + bias."""
    y = torch.empty((x.shape[0], weight.shape[0]) + tuple(x.shape[2:]), dtype=out_dtype, device=x.device)
    _launch(x, weight.view(weight.shape[:2]), bias, skip, skip_scale, skip_shift, y, conv_dtype, tf32, groups,
            activation, branch_scale)
    return y


def _pointwise_fwd_fake(x, weight, bias, skip, skip_scale, skip_shift, branch_scale, conv_dtype, out_dtype, tf32,
                        groups, activation):
    return x.new_empty((x.shape[0], weight.shape[0]) + tuple(x.shape[2:]), dtype=out_dtype)


def _transposed_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(Cout, Cin / groups, 1, 1) -> the (Cin, Cout / groups) matrix whose group g of rows is group g's weight
    transposed: the weight of the convolution that maps dy to dx."""
    cout, cin_group = weight.shape[:2]
    if groups == 1:
        return weight.view(cout, cin_group).t()
    return weight.view(groups, cout // groups, cin_group).transpose(1, 2).reshape(groups * cin_group, -1)


def _pointwise_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conv_dtype: torch.dtype, tf32: bool,
                   groups: int, need_dx: bool, need_dweight: bool,
                   need_dbias: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The convolution's gradients, NCHW throughout (no layout conversions): dx (x's shape and dtype) = the
    forward kernel on dy with the transposed weight; dweight (weight's shape, float32) from ``_conv1x1_wgrad_kernel``;
    dbias (Cout,) float32, :func:`bias_grad`. A gradient not asked for comes back as an empty tensor. dy, x:
    contiguous."""
    dx, dweight, dbias = _pointwise_bwd_fake(dy, x, weight, conv_dtype, tf32, groups, need_dx, False, False)
    if need_dx:
        _launch(dy, _transposed_weight(weight, groups), None, None, None, None, dx, conv_dtype, tf32, groups)
    if need_dweight:
        dweight = _launch_wgrad(dy, x, conv_dtype, tf32, groups).view(weight.shape)
    if need_dbias:
        dbias = bias_grad(dy, conv_dtype)
    return dx, dweight, dbias


def _pointwise_bwd_fake(dy, x, weight, conv_dtype, tf32, groups, need_dx, need_dweight, need_dbias):
    """Uninitialised outputs of ``_pointwise_bwd``'s shapes and dtypes (a separate empty tensor for each gradient
    not asked for: outputs must not alias)."""
    def empty():
        return x.new_empty(0, dtype=torch.float32)
    return (torch.empty_like(x) if need_dx else empty(),
            weight.new_empty(weight.shape, dtype=torch.float32) if need_dweight else empty(),
            weight.new_empty(weight.shape[0], dtype=torch.float32) if need_dbias else empty())


_pointwise_bwd = TritonOp('sparx_mm::pointwise_conv_bwd', _pointwise_bwd, _pointwise_bwd_fake)


def _setup_context(ctx, inputs, output):
    x, weight, bias, skip, skip_scale, skip_shift, branch_scale, conv_dtype, _, tf32, groups, activation = inputs
    if activation != 'none':  # pointwise_conv2d composes the activation when a gradient is needed
        raise RuntimeError('pointwise_conv_fwd: the fused activation has no backward pass; apply it after the '
                           'convolution when gradients are needed')
    # skip is needed only for skip_scale's gradient; it is the block's residual stream, kept anyway.
    ctx.save_for_backward(x, weight, skip if skip_scale is not None else None, skip_scale, branch_scale)
    ctx.conv_dtype, ctx.tf32, ctx.groups = conv_dtype, tf32, groups
    # needs_input_grad is False for absent (None) inputs: only the dtypes of the present ones are kept.
    ctx.dtypes = tuple(None if t is None else t.dtype for t in (bias, skip, skip_shift))


def _conv_grads_cudnn(dy, x, weight, conv_dtype, groups, needs):
    """dx, dweight, dbias as autograd runs them for the torch composition: cuDNN's convolution backward in the
    convolution dtype (with NCHW <-> NHWC conversions around its GEMMs); None where not needed."""
    return torch.ops.aten.convolution_backward(
        dy.to(conv_dtype), x.to(conv_dtype), weight.to(conv_dtype), [weight.shape[0]] if needs[2] else None,
        [1, 1], [0, 0], [1, 1], False, [0, 0], groups, list(needs))


def _backward(ctx, dy):
    x, weight, skip, skip_scale, branch_scale = ctx.saved_tensors
    bias_dtype, skip_dtype, shift_dtype = ctx.dtypes
    needs = ctx.needs_input_grad
    dx = dweight = dbias = dskip = dscale = dshift = None
    dy = dy.contiguous()
    # One pass over dy for the per-channel gradients (module doc): the skip path's in dy's dtype (the output's:
    # under autocast the autocast dtype, in which the official LayerScale conv differentiates too; otherwise at
    # least the scale's), the sums in float32 (a float16 sum over B x H x W overflows long before its terms do).
    # The bias's is dy's sum in the convolution dtype: in the same pass when dy has it (as always under autocast).
    # With a branch scale the convolution's gradients start from dbranch = dy * branch_scale[b], from the same pass
    # (in dy's dtype, as stochastic depth's product differentiates).
    bias_in_pass = needs[2] and dy.dtype == ctx.conv_dtype
    scaled_dskip = needs[3] and skip_scale is not None
    branch = branch_scale is not None and (needs[0] or needs[1] or needs[2])
    conv_dy = dy
    if bias_in_pass or scaled_dskip or needs[4] or needs[5] or branch:
        scaled, dbranch, sums, weighted = _channel_grads(dy, skip if needs[4] else None,
                                                         skip_scale if scaled_dskip else None,
                                                         skip_dtype or dy.dtype, branch_scale if branch else None)
        dskip = scaled if scaled_dskip else None
        dbias = (weighted if branch else sums[0]).to(bias_dtype) if bias_in_pass else None
        dscale = sums[1].to(skip_scale.dtype) if needs[4] else None
        dshift = sums[0].to(shift_dtype) if needs[5] else None
        conv_dy = dbranch if branch else dy
    if needs[2] and not bias_in_pass:
        dbias = bias_grad(conv_dy, ctx.conv_dtype).to(bias_dtype)
    if needs[3] and skip_scale is None:
        dskip = dy.to(skip_dtype)
    if needs[0] or needs[1]:
        conv_needs = (needs[0], needs[1], False)
        positions = x.shape[2] * x.shape[3]
        if _triton_backward(positions, ctx.groups):
            dx, dweight, _ = _pointwise_bwd(conv_dy, x, weight, ctx.conv_dtype, ctx.tf32, ctx.groups, *conv_needs)
        else:
            dx, dweight, _ = _conv_grads_cudnn(conv_dy, x, weight, ctx.conv_dtype, ctx.groups, conv_needs)
        dx = dx.to(x.dtype) if needs[0] else None
        dweight = dweight.to(weight.dtype) if needs[1] else None
    return dx, dweight, dbias, dskip, dscale, dshift, None, None, None, None, None, None


_pointwise_fwd = TritonOp('sparx_mm::pointwise_conv_fwd', _pointwise_fwd, _pointwise_fwd_fake,
                          _setup_context, _backward)


def pointwise_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                            skip: Optional[torch.Tensor], skip_scale: Optional[torch.Tensor],
                            skip_shift: Optional[torch.Tensor], branch_scale: Optional[torch.Tensor],
                            conv_dtype: torch.dtype, out_dtype: torch.dtype, groups: int = 1,
                            activation: Optional[str] = None) -> torch.Tensor:
    """Fused Triton implementation of :func:`sparx_mm.ops.pointwise_conv2d` (inputs already checked).

    Shapes: x (B, Cin, H, W), weight (Cout, Cin / groups, 1, 1), bias / skip_scale / skip_shift (Cout,) or None,
    skip (B, Cout, H, W) or None, branch_scale (B,) or None -> (B, Cout, H, W) in ``out_dtype``; the product in
    ``conv_dtype``; ``activation`` (None, 'gelu', 'silu') of conv + bias, without a skip path, a branch scale and
    gradients. Inputs that are
    not contiguous in NCHW order (channels_last) are copied first. Needs CUDA tensors (or ``TRITON_INTERPRET=1``,
    Triton's CPU interpreter, for tests).
    """
    check_triton_launchable(x, 'pointwise_conv2d_triton')

    def contiguous(t):
        return None if t is None else t.contiguous()

    return _pointwise_fwd(x.contiguous(), weight.contiguous(), contiguous(bias), contiguous(skip),
                          contiguous(skip_scale), contiguous(skip_shift), contiguous(branch_scale), conv_dtype,
                          out_dtype, torch.backends.cudnn.allow_tf32, groups, activation or 'none')


class _PointwiseConvAndInput(torch.autograd.Function):
    """Eager autograd of :func:`pointwise_conv2d_and_input_triton`: outputs (y, x's alias); the backward pass gets
    both outputs' gradients in one call and adds the alias's into dx in the dx kernel's epilogue (the forward
    kernel's skip path). Either gradient may be None (an output nobody differentiated)."""

    @staticmethod
    def forward(ctx, x, weight, bias, conv_dtype, out_dtype, tf32):
        y = _pointwise_fwd.fn(x, weight, bias, None, None, None, None, conv_dtype, out_dtype, tf32, 1, 'none')
        ctx.save_for_backward(x, weight)
        ctx.conv_dtype, ctx.tf32 = conv_dtype, tf32
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)
        return y, x.view_as(x)

    @staticmethod
    def backward(ctx, dy, input_grad):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if dy is None:
            return input_grad, None, None, None, None, None
        dy = dy.contiguous()
        dx = dweight = dbias = None
        if needs[0]:
            dx = torch.empty_like(x)
            _launch(dy, _transposed_weight(weight, 1), None, None if input_grad is None else input_grad.contiguous(),
                    None, None, dx, ctx.conv_dtype, ctx.tf32)
        if needs[1]:
            positions = x.shape[2] * x.shape[3]
            if _triton_backward(positions, 1):
                dweight = _launch_wgrad(dy, x, ctx.conv_dtype, ctx.tf32).view(weight.shape)
            else:
                dweight = _conv_grads_cudnn(dy, x, weight, ctx.conv_dtype, 1, (False, True, False))[1]
            dweight = dweight.to(weight.dtype)
        if needs[2]:
            dbias = bias_grad(dy, ctx.conv_dtype).to(ctx.bias_dtype)
        return dx, dweight, dbias, None, None, None


def pointwise_conv2d_and_input_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                      conv_dtype: torch.dtype,
                                      out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Triton implementation of :func:`sparx_mm.ops.pointwise_conv2d_and_input` (inputs already checked, x not
    empty, one group): (y, x), y as :func:`pointwise_conv2d_triton`'s, x's second use a view of it.

    In eager mode with gradients on, the gradient of x's second use is added into dx in the epilogue of the
    kernel that computes dx (where autograd would add x's two gradients in a pass of its own); dx comes from the
    Triton kernel then, the weight gradient as :data:`BACKWARD` chooses. Traced (torch.compile) or without
    gradients, ``(y, x)`` from the custom op, and autograd (or the compiler) adds.
    """
    check_triton_launchable(x, 'pointwise_conv2d_and_input_triton')
    x, weight = x.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    tf32 = torch.backends.cudnn.allow_tf32
    if triton_op.traced_call((x, weight, bias)) or not gpu_backends.gradient_needed(x, weight, bias):
        return _pointwise_fwd(x, weight, bias, None, None, None, None, conv_dtype, out_dtype, tf32, 1, 'none'), x
    return _PointwiseConvAndInput.apply(x, weight, bias, conv_dtype, out_dtype, tf32)
