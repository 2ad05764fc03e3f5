"""Triton kernels of :func:`sparx_mm.ops.cross_selective_scan` (SS2D's scan core), forward and backward.

The K routes come in *pairs* that read the same sequence in opposite directions: the row-major pair (route 0
forwards, route K/2 backwards) reads ``x`` itself, the column-major pair (routes 1 and 3, four-route scans
only) reads one transposed copy ``x^T`` (B, D, W, H). One program scans ``BLOCK_D`` channels of one pair of
one sample: it runs the forward route over the chunks of ``BLOCK_L`` positions in order, writing its output,
then the backward route over the chunks in reverse order, adding to it. Every read and write is contiguous
(a route that gathered column-order positions from the row-major map missed the cache and ran 4-7x slower on
an H100), no per-route output buffer is summed afterwards, and ``dt = softplus(dt_weight_k @ proj_dt + b)`` is
computed in the kernel: with R multiply-adds a position, or with a dt rank above 8 as a tensor-core product of
float32 accuracy (:func:`inference_tiling`, :func:`training_tiling`). The column-major pair's output is added back
at row-major positions after the kernel. The transposes are ``triton_transpose.py``'s tiled kernel, which also puts
the per-route projections in route order in one pass (the column-major routes' planes transposed, the others
copied); the forward pass saves that copy for the backward kernel, which reads the same.

The backward pass rescans each chunk from the chunk states saved by the forward pass (dt recomputed as the forward
kernel computed it, on tensor cores above rank 16: :func:`backward_tiling`) and runs the adjoint recurrence in the
opposite direction (dh_t = g_t + a_{t+1} dh_{t+1} for a forward route, a_{t-1} and
dh_{t-1} for a backward one), the decay of the step the state flows to folded into the associative scan.
Nothing is accumulated across programs (no atomics, deterministic): each writes the raw-dt gradient of its
channels, its channel block's sums of the B and C gradients and its sample's sums of dA, dD and d dt_bias.
The dt projection's two gradients, products over the raw-dt gradient ddt (B, K, D, L), come from one more kernel
that reads ddt once (:func:`_dt_projection_grads_kernel`): dproj_dt = dt_weight_k^T @ ddt and the weight's
partial products ddt @ proj_dt^T (one or two samples' sum, a position block's), on tensor cores. Two torch GEMMs
read it twice before (a batched one with the rank, 6 to 40, as its narrow output side), and ddt is the largest
tensor of the scan's backward pass (SparX-T's stage 1: 616 MB a block at batch 128, float16).

Both kernels prefetch: each iteration of a route's chunk loop issues the loads of the chunk after it (the
sequence, B and C, the dt projection tile where dt is a tensor-core product, dy, the saved state, the pair's
partial output), which the scanned state does not depend on, so one chunk's arithmetic runs while the next
chunk's loads are in flight. A program holds few chunks' worth of data (a scan is a chain of dependent chunks)
and waited on each chunk's loads before its arithmetic: latency-bound, at ~10x its memory traffic's time on an
H100. Triton's own pipelining (``num_stages``) takes only the loads feeding a tensor-core product (the dt
projection tile above rank 8). On an H100 (``bench_cross_scan.py``, docs/benchmarks.md, "Prefetching scan
kernels"), SparX-T's scan core at stages 2-4 took 3-13 % less time forward + backward and 5-16 % less forward
without autograd (stage 4 float16 4 % more). The multiply-add dt projection (rank 8 and below: stage 1) still
reads its rows where it uses them: a (rank, positions) tile multiplied in as a 3-D broadcast sum gave wrong
results on the GPU (right in the interpreter; not isolated) and was dropped.

The sequence length (and the plane transposes' H and W) are passed divided by their largest power-of-two factor
up to 8 (``L_ALIGN``, ``H_ALIGN``, ``W_ALIGN``, multiplied back in the kernels;
``triton_launch.power_of_two_factor``): Triton specialises integers on divisibility by 16 only, and with the
factor known a 14 x 14 map's sequences (196 positions) are read and written with vector accesses.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable
from .triton_launch import cdiv, launch, next_power_of_2, power_of_two_factor
from .triton_op import TritonOp
from .triton_scan import _chunk_adjoint_of_route, _chunk_states, _chunk_states_reversed, _last_column
from .triton_transpose import plane_transpose

#: Tilings (BLOCK_L positions a chunk, BLOCK_D channels a program, warps), measured on an H100 (fp16, batch 128,
#: SparX-T stage sizes; tools/gpu_checks/bench_cross_scan.py). Training: the backward kernel restarts from the
#: forward pass's per-chunk states, so both kernels use the chunk :func:`training_tiling` picks (TRAIN_BLOCK_L,
#: or one TRAIN_ONE_CHUNK_L chunk for some 7 x 7 maps). The backward kernel keeps ~30 registers
#: per element a thread holds (ptxas -v, sm_90): 16 x 64 with 4 warps spilled; 8 channels x 32 positions with
#: 2 warps (4 elements a thread, 139 registers) was the fastest of 8 tilings tried (SparX-T weighted by layers:
#: 37.8 ms a training step's backward scans against 44.9 for 8 x 64 with 4 warps). Inference: see
#: :func:`inference_tiling`.
TRAIN_BLOCK_L = 32
TRAIN_FWD_TILING = (16, 4)
#: TRAIN_FWD_TILING for sequences of TRAIN_FWD_MID_LENGTHS positions (14 x 14 maps): forward + backward ms, H100,
#: fp16, ``bench_cross_scan.py --sweep-training --stages 3`` (2026-12-06), (16, 4) / (16, 2): SparX-T stage 3
#: 1.829 / 1.803, S 1.865 / 1.847, B 2.321 / 2.278; at 49 and 784 positions 2 warps lost (T stage 4 1.259 /
#: 1.328, B stage 2 4.535 / 4.630).
TRAIN_FWD_MID_TILING = (16, 2)
TRAIN_FWD_MID_LENGTHS = (65, 256)
#: The chunk of sequences of TRAIN_ONE_CHUNK_L positions or fewer whose dt rank pads to BWD_DOT_WIDE_R_PAD (7 x 7
#: maps of SparX-S's and B's stage 4, ranks 34 and 40): the whole sequence one chunk (forward + backward ms, H100,
#: fp16, ``bench_cross_scan.py --sweep-training --stages 4``, 2026-12-06: B 1.983 -> 1.717, S 1.594 -> 1.471;
#: SparX-T's rank 32 keeps 32-position chunks: 1.259 against 2.613 as one chunk).
TRAIN_ONE_CHUNK_L = 64
BWD_TILING = (8, 2)
#: (BLOCK_D, warps) of the backward kernel where it recomputes dt on tensor cores (:func:`backward_tiling`). With
#: the prefetching kernels, 2 warps beat 4 at SparX-T's ranks 12 / 20 / 32 (H100, fp16, forward + backward ms
#: 3.89 / 2.09 / 1.83 -> 3.82 / 2.01 / 1.70; ``bench_cross_scan.py --sweep-training``, 2026-12-05).
BWD_DOT_TILING = (16, 2)
#: BWD_DOT_TILING where the dt rank pads to BWD_DOT_WIDE_R_PAD or more (SparX-S's stage 4, rank 34; B's, 40): with
#: 2 warps the backward kernel spills 600 / 660 bytes a thread there (sm_90, float16, 32-position chunks:
#: ``hopper_codegen.scan_backward_ptx``), with 4 none.
BWD_DOT_WIDE_TILING = (16, 4)
BWD_DOT_WIDE_R_PAD = 64
#: Input dtypes whose dt projection the forward kernel can run on tensor cores (:func:`_dt_raw_dot`).
DT_DOT_DTYPES = (torch.float32, torch.float16)
#: The lowest dt rank projected on tensor cores (training; :func:`inference_tiling` adds float16 inputs of 2048 or
#: more positions).
DT_DOT_MIN_RANK = 9
#: Whether the training forward pass may project dt on tensor cores (:func:`training_tiling`).
TRAIN_DT_DOT = True
#: Whether the backward kernel may recompute dt on tensor cores (:func:`backward_tiling`).
BWD_DT_DOT = True
#: The lowest dt rank the backward kernel recomputes on tensor cores (:func:`backward_tiling`); from
#: DT_DOT_MIN_RANK to here the forward pass projects dt on tensor cores and the backward by multiply-adds.
BWD_DT_DOT_MIN_RANK = 17


def _dt_dot_pays(rank: int, dtype: torch.dtype) -> bool:
    """Where the tensor-core dt projection measured faster than the multiply-adds (:func:`inference_tiling`)."""
    return rank >= DT_DOT_MIN_RANK and dtype in DT_DOT_DTYPES


def _dt_dot_fits(block_d: int, block_l: int, dtype: torch.dtype) -> bool:
    """Whether a program of ``block_d`` channels x ``block_l`` positions can take it (tl.dot's 16 rows and
    columns; the operand split written for float32 and float16)."""
    return block_d >= 16 and block_l >= 16 and dtype in DT_DOT_DTYPES


def training_tiling(rank: int, dtype: torch.dtype, length: int) -> Tuple[int, int, int, bool]:
    """(BLOCK_L, BLOCK_D, warps, dt_dot) of the forward kernel when a backward pass follows, for sequences of
    ``length`` positions: TRAIN_BLOCK_L and TRAIN_FWD_TILING (TRAIN_FWD_MID_TILING at TRAIN_FWD_MID_LENGTHS; one
    TRAIN_ONE_CHUNK_L chunk for short sequences whose dt rank pads to BWD_DOT_WIDE_R_PAD), with the dt projection
    on tensor cores where :func:`inference_tiling` puts it (rank above 8, float32 / float16 inputs, 16 or more
    channels a program). Where the backward kernel recomputes dt otherwise (:func:`backward_tiling`) the two differ
    by float32 rounding (2-7e-7 relative), far below what the gradients' own rounding moves."""
    low, high = TRAIN_FWD_MID_LENGTHS
    block_d, warps = TRAIN_FWD_MID_TILING if low <= length <= high else TRAIN_FWD_TILING
    dt_dot = TRAIN_DT_DOT and _dt_dot_pays(rank, dtype) and _dt_dot_fits(block_d, TRAIN_BLOCK_L, dtype)
    one_chunk = (length <= TRAIN_ONE_CHUNK_L
                 and _padded_rank(rank, block_d, TRAIN_BLOCK_L, dtype, dt_dot) >= BWD_DOT_WIDE_R_PAD)
    return TRAIN_ONE_CHUNK_L if one_chunk else TRAIN_BLOCK_L, block_d, warps, dt_dot


def backward_tiling(rank: int, dtype: torch.dtype, block_l: int = TRAIN_BLOCK_L) -> Tuple[int, int, int]:
    """(BLOCK_D, warps, R_PAD) of the backward kernel on chunks of ``block_l`` positions: from rank
    BWD_DT_DOT_MIN_RANK (17), where the forward pass projects dt on tensor cores (float32 / float16 inputs), the
    backward kernel recomputes it the same way (BWD_DOT_TILING, R_PAD the padded rank: the forward kernel's dt,
    bit for bit), else by multiply-adds in BWD_TILING's 8-channel programs (R_PAD 0; at ranks 9-16 the forward
    pass's dt then differs from the backward's by float32 rounding, as :func:`training_tiling` says).

    Forward + backward ms, SparX-T's stages, fp16 / fp32 inputs, H200 (``tools/gpu_checks/bench_cross_scan.py
    --arch t --fused-only`` and ``--bwd-fma``, 2026-12-05): rank 12, tensor cores 3.65 / 4.54, multiply-adds
    3.34 / 4.07; rank 20, 1.99 / 2.53 against 2.02 / 2.36; rank 32, 1.70 / 1.88 against 2.16 / 2.20.

    Why: the multiply-adds are unrolled over the rank with every load in flight at once, and the backward kernel
    keeps many values a position besides. Compiled for sm_90 (``tools/analysis_tools/hopper_codegen.py --part
    scan-backward``, float16 inputs), the 8-channel, 2-warp kernel takes 96 / 128 / 128 / 255 registers a thread
    at ranks 6 / 12 / 20 / 32 (SparX-T's four stages; 80 / 96 / 168 / 255 before the kernels prefetched the next
    chunk) and loads the rank's weights and projections one element at a time; with dt on tensor cores (16
    channels, 2 warps: BWD_DOT_TILING) 226 / 255 / 255 at ranks 12 / 20 / 32, 136 bytes spilled at rank 32 (4
    warps: 150 / 164 / 235, none spilled, and slower), its loads tiles."""
    if BWD_DT_DOT and rank >= BWD_DT_DOT_MIN_RANK and _dt_dot_pays(rank, dtype):
        block_d, warps = BWD_DOT_TILING
        if _dt_dot_fits(block_d, block_l, dtype):
            r_pad = _padded_rank(rank, block_d, block_l, dtype, True)
            if r_pad >= BWD_DOT_WIDE_R_PAD and _dt_dot_fits(BWD_DOT_WIDE_TILING[0], block_l, dtype):
                block_d, warps = BWD_DOT_WIDE_TILING
            return block_d, warps, r_pad
    return (*BWD_TILING, 0)


def inference_tiling(length: int, rank: int, dtype: torch.dtype) -> Tuple[int, int, int, bool]:
    """(BLOCK_L, BLOCK_D, warps, dt_dot) of the forward kernel when no backward pass follows, for sequences of
    ``length`` positions, dt rank ``rank`` and ``dtype`` inputs; dt_dot: the dt projection as a tensor-core
    product (:func:`_dt_raw_dot`) instead of R multiply-adds a position.

    Scan core ms, H200, batch 128, float32 / float16 inputs (``tools/gpu_checks/bench_cross_scan.py
    --sweep-inference``, 2026-12-04): past stage 1 the multiply-adds set the pace, and from rank 20 up the product saves
    20-57 % (SparX-T stage 3, 640 channels x 196 positions, rank 20: 1.14 / 1.09 -> 0.91 / 0.80; SparX-B stage 3,
    rank 25: 2.36 / 2.27 -> 1.42 / 1.26; SparX-T stage 4, 49 positions, rank 32: 1.29 / 1.01 -> 0.56 / 0.50;
    SparX-B stage 4, rank 40 padded to 64: 0.73 / 0.69 with 32 channels x 64 positions against 1.19 / 1.19
    before); at rank 12 (stage 2) float16 gained 11 % and float32 lost 2 % (1.16 -> 1.18), one rule for both.
    Otherwise 16 channels x 32 positions (chunks of 64 left a quarter of a 196-position sequence's last chunk
    idle). Stage 1 (3136 positions, rank 6), with the kernels that prefetch the next chunk (H100, 2026-12-05, the
    same sweep): float16 2.21 ms with the product (rank padded to 16) against 2.37 by multiply-adds and 2.50 with
    the 32 x 64 tiling chosen before; float32 2.49 by multiply-adds (2.50 with the product, 2.59 with the 16 x 64
    tiling chosen before). So below DT_DOT_MIN_RANK the product runs for float16 inputs of 2048 or more
    positions; bfloat16 (no product) and float32 take the multiply-adds."""
    dt_dot = _dt_dot_pays(rank, dtype) or (length >= 2048 and dtype == torch.float16)
    if dt_dot and rank > 32 and length <= 64:
        return 64, 32, 4, True
    return 32, 16, 4, dt_dot


def _padded_rank(rank: int, block_d: int, block_l: int, dtype: torch.dtype, dt_dot: bool) -> int:
    """The forward kernel's R_PAD: the rank padded for tl.dot (16 or more, a power of two), 0 for the
    multiply-adds."""
    if not dt_dot:
        return 0
    if not _dt_dot_fits(block_d, block_l, dtype):
        raise ValueError(f'cross_scan_fwd: dt_dot needs 16 or more channels and positions a program and '
                         f'{DT_DOT_DTYPES} projections, got {block_d} x {block_l} and {dtype}')
    return max(16, next_power_of_2(rank))


@triton.jit
def _as_pair_reads(pair, map_ptr, transposed_ptr):
    """The copy of a (B, D, H, W) map that a pair reads contiguously: the map itself for the row-major pair,
    its transposed copy (B, D, W, H) for the column-major one."""
    if pair == 0:
        ptr = map_ptr
    else:
        ptr = transposed_ptr
    return ptr


@triton.jit
def _pair_setup(x_ptr, xt_ptr, Dm, L, num_d_blocks, BLOCK_D: tl.constexpr):
    """A program's indices: its pair (0: row-major, 1: column-major), sample, channels, the sequence it
    reads (rows of x or of x^T), the row offset of its channels in a (B, D, L) tensor and in the per-pair
    (pairs, B, D, L) buffers."""
    b = tl.program_id(1).to(tl.int64)  # element offsets of large inputs pass 2**31
    pair = tl.program_id(0) // num_d_blocks
    d = (tl.program_id(0) % num_d_blocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d < Dm
    rows = (b * Dm + d) * L
    pair_rows = (pair * tl.num_programs(1) * Dm) * L + rows
    return b, pair, d, mask_d, rows, _as_pair_reads(pair, x_ptr, xt_ptr), pair_rows


@triton.jit
def _route_params(route, b, d, mask_d, bias_ptr, D_ptr, A_ptr, Dm, L, num_chunks, n, ROUTES: tl.constexpr,
                  R, N: tl.constexpr):
    """Route ``route``'s parameters for these channels and the offsets of its projections and states."""
    kd = route * Dm + d  # index into the (K*D,) parameters
    bias = tl.load(bias_ptr + kd, mask=mask_d, other=0.0).to(tl.float32)
    skip = tl.load(D_ptr + kd, mask=mask_d, other=0.0).to(tl.float32)
    A_n = tl.load(A_ptr + kd * N + n, mask=mask_d, other=0.0).to(tl.float32)
    proj_base = (b * ROUTES + route) * (R + 2 * N) * L
    state_rows = ((b * ROUTES * Dm + kd) * N + n) * num_chunks
    return kd, bias, skip, A_n, proj_base, state_rows


@triton.jit
def _dt_weights(w_ptr, kd, mask_d, R: tl.constexpr, R_PAD: tl.constexpr):
    """The route's dt weights for these channels as the tensor-core product takes them, (BLOCK_D, R_PAD) float32,
    zero past the rank R; 0 where dt is multiply-adds (R_PAD 0: :func:`_dt_raw_rows` reads them where it uses
    them)."""
    if R_PAD > 0:
        r = tl.arange(0, R_PAD)
        return tl.load(w_ptr + kd[:, None] * R + r[None, :], mask=mask_d[:, None] & (r[None, :] < R), other=0.0)
    else:
        return 0


@triton.jit
def _dt_proj_tile(proj_ptr, proj_base, c, valid, L, R: tl.constexpr, BLOCK_L: tl.constexpr, R_PAD: tl.constexpr):
    """Chunk ``c``'s dt projection rows as stored, (R_PAD, BLOCK_L), zero past the rank (nothing read where
    ``valid`` is false)."""
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    r = tl.arange(0, R_PAD)
    mask = (r[:, None] < R) & ((t < L) & valid)[None, :]
    return tl.load(proj_ptr + proj_base + r[:, None] * L + t[None, :], mask=mask, other=0.0)


@triton.jit
def _dt_raw_dot(w, p, bias, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """dt_weight_k @ proj_dt + bias, float32 (BLOCK_D, BLOCK_L), as a tensor-core product of the weights ``w``
    (BLOCK_D, R_PAD) float32 and a chunk's projection rows ``p`` (R_PAD, BLOCK_L), both zero past the rank: float32
    projections as 3xTF32 (both operands split in high and low TF32 parts, float32 accuracy), float16 ones against
    the float32 weights split in two float16 parts, each product exact in the float32 accumulator. The product's
    sums run in another order than :func:`_dt_raw_rows`': results differ by float32 rounding (2-4e-7 relative)."""
    raw = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32) + bias[:, None]
    if p.dtype == tl.float32:
        raw = tl.dot(w, p, raw, input_precision='tf32x3')
    else:
        w_part = w.to(p.dtype)
        raw = tl.dot(w_part, p, raw)
        raw = tl.dot((w - w_part.to(tl.float32)).to(p.dtype), p, raw)
    return raw


@triton.jit
def _dt_raw_rows(proj_ptr, proj_base, w_ptr, kd, bias, mask_d, t, mask_t, L, R: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_L: tl.constexpr):
    """dt_weight_k @ proj_dt + bias at steps ``t``, float32 (BLOCK_D, BLOCK_L), by R multiply-adds a position; the
    rank R is a compile-time constant and its loop unrolled (the loads issued together instead of one per
    iteration: SparX-T's stage-1 / stage-3 forward scans took 1.72 / 1.19 instead of 2.22 / 1.70 ms; one
    compilation per rank, four a model)."""
    raw = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32) + bias[:, None]
    for r in tl.static_range(R):
        w_r = tl.load(w_ptr + kd * R + r, mask=mask_d, other=0.0)
        p_r = tl.load(proj_ptr + proj_base + r * L + t, mask=mask_t, other=0.0).to(tl.float32)
        raw += w_r[:, None] * p_r[None, :]
    return raw


@triton.jit
def _softplus(raw):
    return tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)


@triton.jit
def _chunk_rows(ptr, row_offsets, c, valid, L, mask_d, BLOCK_L: tl.constexpr):
    """A (BLOCK_D, BLOCK_L) chunk of the (.., L) rows at ``row_offsets`` (nothing read where ``valid`` is false)."""
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    return tl.load(ptr + row_offsets[:, None] + t[None, :], mask=mask_d[:, None] & ((t < L) & valid)[None, :],
                   other=0.0)


@triton.jit
def _chunk_loads(seq_ptr, proj_ptr, rows, proj_base, mask_d, c, valid, n, L, R: tl.constexpr, N: tl.constexpr,
                 BLOCK_L: tl.constexpr, R_PAD: tl.constexpr):
    """Chunk ``c``'s inputs as stored (positions c*BLOCK_L ...; nothing read where ``valid`` is false, a prefetch
    past the last chunk): the sequence (BLOCK_D, BLOCK_L), B and C (BLOCK_L), and the dt projection's tile
    (:func:`_dt_proj_tile`) where dt is a tensor-core product (R_PAD > 0; else 0: the multiply-adds read their
    rows where they use them)."""
    u = _chunk_rows(seq_ptr, rows, c, valid, L, mask_d, BLOCK_L)
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_t = (t < L) & valid
    Bt = tl.load(proj_ptr + proj_base + (R + n) * L + t, mask=mask_t, other=0.0)
    Ct = tl.load(proj_ptr + proj_base + (R + N + n) * L + t, mask=mask_t, other=0.0)
    if R_PAD > 0:
        p = _dt_proj_tile(proj_ptr, proj_base, c, valid, L, R, BLOCK_L, R_PAD)
    else:
        p = 0
    return u, Bt, Ct, p


@triton.jit
def _chunk_terms(c, u, Bt, Ct, w, p, proj_ptr, proj_base, w_ptr, kd, bias, A_n, mask_d, L, R: tl.constexpr,
                 R_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Chunk ``c``'s positions and masks, its inputs (from :func:`_chunk_loads`) in float32 and the recurrence
    terms a = exp(dt A), bx = dt B u (the identity past the end of the sequence). R_PAD > 0: dt from the
    prefetched tile ``p`` on tensor cores (:func:`_dt_raw_dot`), else by multiply-adds over rows it reads."""
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_t = t < L
    mask = mask_d[:, None] & mask_t[None, :]
    u = u.to(tl.float32)
    if R_PAD > 0:
        raw = _dt_raw_dot(w, p, bias, BLOCK_D, BLOCK_L)
    else:
        raw = _dt_raw_rows(proj_ptr, proj_base, w_ptr, kd, bias, mask_d, t, mask_t, L, R, BLOCK_D, BLOCK_L)
    dt = _softplus(raw)
    Bt = Bt.to(tl.float32)
    Ct = Ct.to(tl.float32)
    a = tl.where(mask, tl.exp(dt * A_n[:, None]), 1.0)
    bx = tl.where(mask, dt * Bt[None, :] * u, 0.0)
    return t, mask_t, mask, u, raw, dt, Bt, Ct, a, bx


# The scan loops below prefetch (module doc): each iteration issues the loads of the chunk after it.
@triton.jit
def _scan_route(seq_ptr, proj_ptr, w_ptr, A_ptr, y_ptr, states_ptr, rows, pair_rows, route, b, d, mask_d,
                bias_ptr, D_ptr, Dm, L, num_chunks, n, FIRST: tl.constexpr, BACKWARD: tl.constexpr,
                ROUTES: tl.constexpr, R: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_L: tl.constexpr, R_PAD: tl.constexpr):
    """Scan one route of the pair (BACKWARD: from the last position to the first) for state index n,
    adding its output to y (FIRST: the first term written to y)."""
    kd, bias, skip, A_n, proj_base, state_rows = _route_params(route, b, d, mask_d, bias_ptr, D_ptr, A_ptr, Dm, L,
                                                               num_chunks, n, ROUTES, R, N)
    cols = tl.arange(0, BLOCK_L)
    direction = -1 if BACKWARD else 1
    first = num_chunks - 1 if BACKWARD else 0
    w = _dt_weights(w_ptr, kd, mask_d, R, R_PAD)
    u_next, B_next, C_next, p_next = _chunk_loads(seq_ptr, proj_ptr, rows, proj_base, mask_d, first, True, n, L, R,
                                                  N, BLOCK_L, R_PAD)
    if not FIRST:
        y_next = _chunk_rows(y_ptr, pair_rows, first, True, L, mask_d, BLOCK_L)
    h = tl.zeros([BLOCK_D], dtype=tl.float32)
    for step in range(num_chunks):
        c = num_chunks - 1 - step if BACKWARD else step
        u, Bt, Ct, p = u_next, B_next, C_next, p_next
        more = step + 1 < num_chunks
        u_next, B_next, C_next, p_next = _chunk_loads(seq_ptr, proj_ptr, rows, proj_base, mask_d, c + direction,
                                                      more, n, L, R, N, BLOCK_L, R_PAD)
        if not FIRST:
            y_before = y_next
            y_next = _chunk_rows(y_ptr, pair_rows, c + direction, more, L, mask_d, BLOCK_L)
        t, mask_t, mask, u, raw, dt, Bt, Ct, a, bx = _chunk_terms(c, u, Bt, Ct, w, p, proj_ptr, proj_base, w_ptr, kd,
                                                                  bias, A_n, mask_d, L, R, R_PAD, BLOCK_D, BLOCK_L)
        # The state entering the chunk (from before it going forwards, from after it going backwards).
        tl.store(states_ptr + state_rows + c, h, mask=mask_d)
        if BACKWARD:
            hs, h = _chunk_states_reversed(a, bx, h, cols)
        else:
            hs = _chunk_states(a, bx, h)
            h = _last_column(hs, cols, BLOCK_L)
        y = hs * Ct[None, :]
        if n == 0:
            y += skip[:, None] * u
        if not FIRST:
            y += y_before
        tl.store(y_ptr + pair_rows[:, None] + t[None, :], y, mask=mask)


@triton.jit
def _cross_scan_fwd_kernel(x_ptr, xt_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
                           Dm, L_UNITS, num_d_blocks, num_chunks,
                           ROUTES: tl.constexpr, R: tl.constexpr, N: tl.constexpr, L_ALIGN: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, R_PAD: tl.constexpr):
    L = L_UNITS * L_ALIGN  # the sequence length, its power-of-two factor known to the compiler (module doc)
    b, pair, d, mask_d, rows, seq_ptr, pair_rows = _pair_setup(x_ptr, xt_ptr, Dm, L, num_d_blocks, BLOCK_D)
    for n in tl.static_range(N):
        _scan_route(seq_ptr, proj_ptr, w_ptr, A_ptr, y_ptr, states_ptr, rows, pair_rows, pair, b, d, mask_d,
                    bias_ptr, D_ptr, Dm, L, num_chunks, n, n == 0, False, ROUTES, R, N, BLOCK_D,
                    BLOCK_L, R_PAD)
        if ROUTES > 1:
            _scan_route(seq_ptr, proj_ptr, w_ptr, A_ptr, y_ptr, states_ptr, rows, pair_rows,
                        pair + ROUTES // 2, b, d, mask_d, bias_ptr, D_ptr, Dm, L, num_chunks, n, False, True,
                        ROUTES, R, N, BLOCK_D, BLOCK_L, R_PAD)


@triton.jit
def _route_grads(seq_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, dx_ptr, ddt_ptr, dbc_ptr,
                 dA_ptr, dD_ptr, dbias_ptr, rows, pair_rows, route, b, d, d_block, mask_d, Dm, L, num_d_blocks,
                 num_chunks, n, FIRST: tl.constexpr, BACKWARD: tl.constexpr, ROUTES: tl.constexpr,
                 R: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                 R_PAD: tl.constexpr):
    """Gradients of one route of the pair for state index n (R_PAD > 0: dt recomputed on tensor cores, as the
    forward kernel computed it): the adjoint runs against the route's direction (from the last chunk for a forward
    route, from the first for a backward one). Every program writes its own entries, no atomics: dx into the pair's
    buffer (FIRST: the first term written); the gradient of the raw dt (before softplus) into ``ddt`` (B, K*D, L) at
    the route's positions, summed over n (the dt projection's gradients are GEMMs over it, after the kernel); this
    channel block's sums of the B and C gradients into ``dbc`` (B, K, blocks, 2N, L); this sample's dA, dD and
    d dt_bias sums."""
    kd, bias, skip, A_n, proj_base, state_rows = _route_params(route, b, d, mask_d, bias_ptr, D_ptr, A_ptr, Dm, L,
                                                               num_chunks, n, ROUTES, R, N)
    cols = tl.arange(0, BLOCK_L)
    sample_kd = b * ROUTES * Dm + kd  # row of (B, K*D, ...) per-sample tensors
    dbc_base = ((b * ROUTES + route) * num_d_blocks + d_block) * (2 * N) * L
    dh_carry = tl.zeros([BLOCK_D], dtype=tl.float32)  # a dh at the step the adjoint scanned last
    dA_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    direction = 1 if BACKWARD else -1
    first = 0 if BACKWARD else num_chunks - 1
    w = _dt_weights(w_ptr, kd, mask_d, R, R_PAD)
    u_next, B_next, C_next, p_next = _chunk_loads(seq_ptr, proj_ptr, rows, proj_base, mask_d, first, True, n, L, R,
                                                  N, BLOCK_L, R_PAD)
    dy_next = _chunk_rows(dy_ptr, rows, first, True, L, mask_d, BLOCK_L)
    h_next = tl.load(states_ptr + state_rows + first, mask=mask_d, other=0.0)
    if not FIRST:
        dx_next = _chunk_rows(dx_ptr, pair_rows, first, True, L, mask_d, BLOCK_L)
    for step in range(num_chunks):
        c = step if BACKWARD else num_chunks - 1 - step
        u, Bt, Ct, p, dy, h_in = u_next, B_next, C_next, p_next, dy_next, h_next
        more = step + 1 < num_chunks
        u_next, B_next, C_next, p_next = _chunk_loads(seq_ptr, proj_ptr, rows, proj_base, mask_d, c + direction,
                                                      more, n, L, R, N, BLOCK_L, R_PAD)
        dy_next = _chunk_rows(dy_ptr, rows, c + direction, more, L, mask_d, BLOCK_L)
        h_next = tl.load(states_ptr + state_rows + c + direction, mask=mask_d & more, other=0.0)
        if not FIRST:
            dx_before = dx_next
            dx_next = _chunk_rows(dx_ptr, pair_rows, c + direction, more, L, mask_d, BLOCK_L)
        t, mask_t, mask, u, raw, dt, Bt, Ct, a, bx = _chunk_terms(c, u, Bt, Ct, w, p, proj_ptr, proj_base, w_ptr, kd,
                                                                  bias, A_n, mask_d, L, R, R_PAD, BLOCK_D, BLOCK_L)
        dy = dy.to(tl.float32)
        if BACKWARD:
            hs, _ = _chunk_states_reversed(a, bx, h_in, cols)
        else:
            hs = _chunk_states(a, bx, h_in)
        # dh_t = g_t + a_{t+shift} dh_{t+shift}: the decay of the step the state flows to, folded into the scan
        # (no second dt at shifted positions).
        g = tl.where(mask, Ct[None, :] * dy, 0.0)
        dh, dh_carry = _chunk_adjoint_of_route(a, g, dh_carry, cols, not BACKWARD, BLOCK_L)
        h_prev_a = hs - bx  # a_t times the state before step t
        dA_acc += tl.sum(tl.where(mask, dh * dt * h_prev_a, 0.0), axis=1)
        # softplus' derivative is sigmoid(raw) (the identity branch above 20 has sigmoid ~ 1).
        draw = tl.where(mask, dh * (Bt[None, :] * u + A_n[:, None] * h_prev_a) * tl.sigmoid(raw), 0.0)
        dbias_acc += tl.sum(draw, axis=1)
        ddt_ptrs = ddt_ptr + sample_kd[:, None] * L + t[None, :]
        if n > 0:
            draw += tl.load(ddt_ptrs, mask=mask, other=0.0)
        tl.store(ddt_ptrs, draw, mask=mask)
        tl.store(dbc_ptr + dbc_base + n * L + t, tl.sum(tl.where(mask, dh * dt * u, 0.0), axis=0), mask=mask_t)
        tl.store(dbc_ptr + dbc_base + (N + n) * L + t, tl.sum(tl.where(mask, dy * hs, 0.0), axis=0), mask=mask_t)
        du = dh * dt * Bt[None, :]
        if n == 0:
            du += skip[:, None] * dy
            dD_acc += tl.sum(tl.where(mask, dy * u, 0.0), axis=1)
        if not FIRST:
            du += dx_before
        tl.store(dx_ptr + pair_rows[:, None] + t[None, :], du, mask=mask)
    tl.store(dA_ptr + sample_kd * N + n, dA_acc, mask=mask_d)
    if n == 0:
        tl.store(dD_ptr + sample_kd, dD_acc, mask=mask_d)
        tl.store(dbias_ptr + sample_kd, dbias_acc, mask=mask_d)
    else:
        tl.store(dbias_ptr + sample_kd, dbias_acc + tl.load(dbias_ptr + sample_kd, mask=mask_d, other=0.0),
                 mask=mask_d)


@triton.jit
def _cross_scan_bwd_kernel(x_ptr, xt_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, dy_ptr, dyt_ptr, states_ptr,
                           dx_ptr, ddt_ptr, dbc_ptr, dA_ptr, dD_ptr, dbias_ptr,
                           Dm, L_UNITS, num_d_blocks, num_chunks,
                           ROUTES: tl.constexpr, R: tl.constexpr, N: tl.constexpr, L_ALIGN: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, R_PAD: tl.constexpr):
    L = L_UNITS * L_ALIGN
    b, pair, d, mask_d, rows, seq_ptr, pair_rows = _pair_setup(x_ptr, xt_ptr, Dm, L, num_d_blocks, BLOCK_D)
    d_block = tl.program_id(0) % num_d_blocks
    dy_ptr = _as_pair_reads(pair, dy_ptr, dyt_ptr)  # every route of the pair sums into y: the same dy
    for n in tl.static_range(N):
        _route_grads(seq_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, dx_ptr, ddt_ptr,
                     dbc_ptr, dA_ptr, dD_ptr, dbias_ptr, rows, pair_rows, pair, b, d, d_block, mask_d, Dm, L,
                     num_d_blocks, num_chunks, n, n == 0, False, ROUTES, R, N, BLOCK_D, BLOCK_L, R_PAD)
        if ROUTES > 1:
            _route_grads(seq_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, dx_ptr, ddt_ptr,
                         dbc_ptr, dA_ptr, dD_ptr, dbias_ptr, rows, pair_rows, pair + ROUTES // 2, b, d, d_block,
                         mask_d, Dm, L, num_d_blocks, num_chunks, n, False, True, ROUTES, R, N, BLOCK_D,
                         BLOCK_L, R_PAD)


@triton.jit
def _accurate_dot(a, b, acc):
    """acc + a @ b on tensor cores: 16-bit operands as they are, float32 ones as 3xTF32 (float32 accuracy)."""
    if a.dtype == tl.float32:
        acc = tl.dot(a, b, acc, input_precision='tf32x3')
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _dt_projection_grads_kernel(ddt_ptr, proj_ptr, w_ptr, dproj_ptr, dw_ptr, Dm, L_UNITS, R, PROJ_ROWS, num_l_blocks,
                                B, ROUTES: tl.constexpr, L_ALIGN: tl.constexpr, BLOCK_D: tl.constexpr,
                                BLOCK_L: tl.constexpr, R_PAD: tl.constexpr, SAMPLES: tl.constexpr):
    """For route k of samples s0 .. s0 + SAMPLES - 1 (``program_id(1)`` = (s0 / SAMPLES) * ROUTES + k; samples from
    B on masked) and positions block ``program_id(0)``, over all channels in blocks of BLOCK_D: dproj[s, k, :R, t] =
    dt_weight[k]^T (R, D) @ ddt[s, k] (D, t), stored in dproj's dtype (rows R.. left alone), and the samples'
    share of the weight gradient, sum over s of ddt[s, k] (D, t) @ proj[s, k, :R, t]^T, float32, at
    dw[program_id(1), block] (D, R): one partial product a program, SAMPLES times fewer than one a sample (the
    partials, float32 (D, R) blocks, outweighed the ddt they came from at short sequences). Products in ddt's dtype
    (the projection rows and the weights rounded to it, as torch's GEMMs in that dtype did), float32 sums; float32
    ones as 3xTF32 (float32 accuracy on tensor cores, as the forward kernel's dt projection: exact float32 products
    spilled 12 KB a thread at rank 20)."""
    L = L_UNITS * L_ALIGN
    group_route = tl.program_id(1)
    l_block = tl.program_id(0)
    k = group_route % ROUTES
    first = (group_route // ROUTES) * SAMPLES
    t = l_block * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_t = t < L
    r = tl.arange(0, R_PAD)
    mask_r = r < R
    dtype = ddt_ptr.dtype.element_ty
    rows, valid, projections, dprojs = (), (), (), ()
    for i in tl.static_range(SAMPLES):
        bk = (first + i).to(tl.int64) * ROUTES + k
        ok = first + i < B
        rows = rows + (bk, )
        valid = valid + (ok, )
        p = tl.load(proj_ptr + bk * PROJ_ROWS * L + r[:, None] * L + t[None, :],
                    mask=ok & mask_r[:, None] & mask_t[None, :], other=0.0).to(dtype)
        projections = projections + (tl.trans(p), )
        dprojs = dprojs + (tl.zeros([R_PAD, BLOCK_L], dtype=tl.float32), )
    dw_rows = dw_ptr + (group_route.to(tl.int64) * num_l_blocks + l_block) * Dm * R
    for d0 in range(0, Dm, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        mask_d = d < Dm
        wt = tl.load(w_ptr + (k * Dm + d)[None, :] * R + r[:, None], mask=mask_r[:, None] & mask_d[None, :],
                     other=0.0).to(dtype)
        dw = tl.zeros([BLOCK_D, R_PAD], dtype=tl.float32)
        summed = ()
        for i in tl.static_range(SAMPLES):
            g = tl.load(ddt_ptr + (rows[i] * Dm + d)[:, None] * L + t[None, :],
                        mask=valid[i] & mask_d[:, None] & mask_t[None, :], other=0.0)
            summed = summed + (_accurate_dot(wt, g, dprojs[i]), )
            dw = _accurate_dot(g, projections[i], dw)
        dprojs = summed
        tl.store(dw_rows + d[:, None] * R + r[None, :], dw, mask=mask_d[:, None] & mask_r[None, :])
    for i in tl.static_range(SAMPLES):
        tl.store(dproj_ptr + rows[i] * PROJ_ROWS * L + r[:, None] * L + t[None, :],
                 dprojs[i].to(dproj_ptr.dtype.element_ty), mask=valid[i] & mask_r[:, None] & mask_t[None, :])


def dt_projection_tiling(channels: int, length: int, rank: int,
                         dtype: torch.dtype) -> Tuple[int, int, int, int, int, int]:
    """(BLOCK_D, BLOCK_L, R_PAD, warps, stages, SAMPLES) of :func:`_dt_projection_grads_kernel` for a ``dtype``
    ddt: 16-bit, 128 positions a program (fewer for shorter sequences, 16 at least: tl.dot's smallest side),
    channels in blocks of 64 (32 for 32 or fewer), the loads pipelined in 3 stages; float32 (3xTF32 products,
    three times the operands in registers), 32 x 32 tiles unpipelined. The rank padded to a power of two of 16 or
    more.

    Two samples a program (16-bit) where a program's sequence block is the whole sequence (7 x 7 maps) or the
    padded rank is 16 (SparX's stages 1-2): that halves the float32 partial products the kernel writes and the sum
    after it reads, which outweighed the ddt they came from on 7 x 7 maps (D x R float32 against D x 49 16-bit).
    H100, batch 128, float16, SparX-B's four stages (``tools/gpu_checks/bench_cross_scan.py --arch b
    --sweep-dt-grads``, kernel + sum): 0.350 / 0.231 / 0.177 / 0.250 ms with one sample, 0.321 / 0.192 / 0.174 /
    0.141 with two; 8 warps, or four samples (8 warps, 2 stages), slower. Stage 3 (196 positions, rank 25) keeps
    one: two gained 2 % there and spill (sm_90, ``tools/analysis_tools/hopper_codegen.py``: 140 bytes; at
    SparX-T's stage 3 72), where one takes 168 registers a thread; the others with two take 168-255, none
    spilled at SparX-T's and B's sizes (SparX-S's stage 4, rank 34: 32 bytes)."""
    r_pad = max(16, next_power_of_2(rank))
    if dtype == torch.float32:
        return 32, min(32, max(16, next_power_of_2(length))), r_pad, 4, 1, 1
    block_l = min(128, max(16, next_power_of_2(length)))
    samples = 2 if length <= block_l or r_pad == 16 else 1
    return (32 if channels <= 32 else 64), block_l, r_pad, 4, 3, samples


def _dt_projection_grads(ddt: torch.Tensor, proj_routes: torch.Tensor, dt_weight: torch.Tensor,
                         dproj: torch.Tensor) -> torch.Tensor:
    """ddt (B, K*D, L), proj_routes (B, K, R + 2N, L), dt_weight (K, D, R) float32, contiguous; writes dproj[:, :,
    :R] ((B, K, R + 2N, L), proj's dtype) and returns the dt weight's gradient (K, D, R) float32 (the kernel's
    partial products, one a program, summed over its sample groups and position blocks: deterministic)."""
    b, routes, proj_rows, length = proj_routes.shape
    _, d, rank = dt_weight.shape
    block_d, block_l, r_pad, warps, stages, samples = dt_projection_tiling(d, length, rank, ddt.dtype)
    num_l_blocks = cdiv(length, block_l)
    l_align = power_of_two_factor(length)
    groups = cdiv(b, samples)
    dw = torch.empty(groups * routes, num_l_blocks, d, rank, device=ddt.device, dtype=torch.float32)
    launch(_dt_projection_grads_kernel, (num_l_blocks, groups * routes), ddt, proj_routes, dt_weight, dproj, dw, d,
           length // l_align, rank, proj_rows, num_l_blocks, b, ROUTES=routes, L_ALIGN=l_align, BLOCK_D=block_d,
           BLOCK_L=block_l, R_PAD=r_pad, SAMPLES=samples, num_warps=warps, num_stages=stages)
    return dw.view(groups, routes, num_l_blocks, d, rank).sum((0, 2))


def _num_pairs(routes: int) -> int:
    return 2 if routes == 4 else 1


def _launch_config(x, dt_weight, A, routes, block_l, block_d, warps):
    batch, channels, height, width = x.shape
    num_d_blocks = cdiv(channels, block_d)
    length = height * width
    l_align = power_of_two_factor(length)
    meta = dict(Dm=channels, L_UNITS=length // l_align, num_d_blocks=num_d_blocks, num_chunks=cdiv(length, block_l),
                L_ALIGN=l_align, ROUTES=routes, R=dt_weight.shape[2], N=A.shape[1], BLOCK_D=block_d, BLOCK_L=block_l,
                num_warps=warps)
    return meta, (_num_pairs(routes) * num_d_blocks, batch)


def _to_route_order(t: torch.Tensor, routes: int, height: int, width: int) -> torch.Tensor:
    """(B, K, C, H*W) at row-major positions -> the same with the column-major routes (1, 3 of a four-route
    scan) in column-major order, in one pass (the transpose kernel's alternating runs: the row-major routes'
    planes copied, the column-major ones' transposed); also its own inverse with height and width swapped."""
    if routes != 4:
        return t.contiguous()
    b, k, c, _ = t.shape
    return plane_transpose(t.contiguous().view(b * k * c, height, width), alternate_every=c).view(t.shape)


def _merge_pairs(ys: torch.Tensor, routes: int, height: int, width: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(pairs, B, C, L) per-pair sums -> (B, C, H, W) at row-major positions, in ``dtype``."""
    b, c = ys.shape[1:3]
    if routes == 4:  # the column-major pair's sums, (B, C, W, H), transposed onto the row-major pair's
        return plane_transpose(ys[1].view(b, c, width, height), ys[0].view(b, c, height, width), dtype)
    return ys[0].view(b, c, height, width).to(dtype)


def _transposed_copy(x: torch.Tensor, routes: int) -> torch.Tensor:
    return plane_transpose(x) if routes == 4 else x


# The kernels run as TritonOps (triton_op.py): torch.library custom ops, with shape-only "fake" versions and
# an autograd formula, under torch.compile (no graph breaks around them); direct calls in eager mode.
def _cross_scan_fwd(x: torch.Tensor, proj: torch.Tensor, dt_weight: torch.Tensor, A: torch.Tensor,
                    D: torch.Tensor, dt_bias: torch.Tensor, routes: int, block_l: int, block_d: int,
                    warps: int, dt_dot: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> y (B, D, H, W) float32, the states entering each chunk of ``block_l`` positions (B, K*D, N, chunks)
    float32, and ``proj`` in route order (:func:`_to_route_order`) as the kernel read it, for the backward pass
    (an empty tensor for routes 1 and 2: proj itself is in route order). ``dt_dot``: the dt projection on tensor
    cores (:func:`inference_tiling`, :func:`training_tiling`)."""
    meta, grid = _launch_config(x, dt_weight, A, routes, block_l, block_d, warps)
    r_pad = _padded_rank(meta['R'], block_d, block_l, proj.dtype, dt_dot)
    b, d, h, w = x.shape
    f32 = dict(device=x.device, dtype=torch.float32)
    ys = torch.empty(_num_pairs(routes), b, d, h * w, **f32)
    states = torch.empty(b, A.shape[0], meta['N'], meta['num_chunks'], **f32)
    proj_routes = _to_route_order(proj, routes, h, w)
    launch(_cross_scan_fwd_kernel, grid, x, _transposed_copy(x, routes), proj_routes, dt_weight, A, D, dt_bias,
           ys, states, R_PAD=r_pad, **meta)
    # A custom op's outputs must not alias its inputs: routes 1 and 2 hand back an empty tensor, not proj.
    return _merge_pairs(ys, routes, h, w), states, proj_routes if routes == 4 else proj.new_empty(0)


def _cross_scan_fwd_fake(x, proj, dt_weight, A, D, dt_bias, routes, block_l, block_d, warps, dt_dot):
    b, d, h, w = x.shape
    return (x.new_empty(b, d, h, w, dtype=torch.float32),
            x.new_empty(b, A.shape[0], A.shape[1], cdiv(h * w, block_l), dtype=torch.float32),
            proj.new_empty(proj.shape if routes == 4 else (0, )))


def _cross_scan_bwd(dy: torch.Tensor, x: torch.Tensor, proj_routes: torch.Tensor, dt_weight: torch.Tensor,
                    A: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor, states: torch.Tensor,
                    routes: int, block_l: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                        torch.Tensor, torch.Tensor]:
    """-> dx, dproj (in the inputs' dtypes; dproj at row-major positions), d dt_weight, dA, dD, d dt_bias
    (float32); ``proj_routes`` (proj in route order) and ``states`` saved by a forward pass with chunks of
    ``block_l``."""
    b, d, h, w = x.shape
    rank = dt_weight.shape[2]
    dxs, ddt, dbc, dA, dD, dbias = _launch_bwd_kernel(dy, x, proj_routes, dt_weight, A, D, dt_bias, states, routes,
                                                      block_l)
    # dt_k = dt_weight[k] @ proj_dt: both gradients are products over the raw-dt gradient (B, K, D, L), in ddt's
    # dtype (the inputs' under autocast, as autocast's own dt projection would run), from one read of it; the
    # weight gradient's partial products are summed in float32. B's and C's rows follow.
    dproj = torch.empty_like(proj_routes)
    d_dt_weight = _dt_projection_grads(ddt, proj_routes, dt_weight, dproj)
    dproj[:, :, rank:] = dbc.sum(2)
    dx = _merge_pairs(dxs, routes, h, w, x.dtype)
    return (dx, _to_route_order(dproj, routes, w, h), d_dt_weight, dA.sum(0), dD.sum(0), dbias.sum(0))


def _launch_bwd_kernel(dy, x, proj_routes, dt_weight, A, D, dt_bias, states, routes, block_l):
    """The backward kernel on its buffers: -> per-pair dx (pairs, B, D, L), the raw-dt gradient (B, K*D, L),
    per-channel-block B / C gradients (B, K, blocks, 2N, L), per-sample dA (B, K*D, N), dD and d dt_bias
    (B, K*D); route order. The raw-dt gradient is written once per position with d_state 1, in x's dtype (the
    largest tensor the kernel writes; with d_state > 1 it sums the state indices in float32); the rest float32."""
    block_d, warps, r_pad = backward_tiling(dt_weight.shape[2], proj_routes.dtype, block_l)
    meta, grid = _launch_config(x, dt_weight, A, routes, block_l, block_d, warps)
    b, d, h, w = x.shape
    length, n = h * w, meta['N']
    f32 = dict(device=x.device, dtype=torch.float32)
    dxs = torch.empty(_num_pairs(routes), b, d, length, **f32)
    ddt = torch.empty(b, routes * d, length, device=x.device, dtype=x.dtype if n == 1 else torch.float32)
    dbc = torch.empty(b, routes, meta['num_d_blocks'], 2 * n, length, **f32)
    dA, dD, dbias = (torch.empty(b, *t.shape, **f32) for t in (A, D, dt_bias))
    dy = dy.contiguous()  # float32 (the gradient of the float32 output); x is read in its own dtype
    launch(_cross_scan_bwd_kernel, grid, x, _transposed_copy(x, routes), proj_routes, dt_weight, A, D, dt_bias,
           dy, _transposed_copy(dy, routes), states, dxs, ddt, dbc, dA, dD, dbias, R_PAD=r_pad, **meta)
    return dxs, ddt, dbc, dA, dD, dbias


def _cross_scan_bwd_fake(dy, x, proj_routes, dt_weight, A, D, dt_bias, states, routes, block_l):
    f32 = dict(dtype=torch.float32)
    return (torch.empty_like(x), torch.empty_like(proj_routes), torch.empty_like(dt_weight, **f32),
            torch.empty_like(A, **f32), torch.empty_like(D, **f32), torch.empty_like(dt_bias, **f32))


_cross_scan_bwd = TritonOp('sparx_mm::cross_scan_bwd', _cross_scan_bwd, _cross_scan_bwd_fake)


def _setup_context(ctx, inputs, output):
    x, proj, dt_weight, A, D, dt_bias, routes, block_l, _block_d, _warps, _dt_dot = inputs
    # proj in route order (what the backward kernel reads) in place of proj: no second reordering, no more memory.
    ctx.save_for_backward(x, output[2] if routes == 4 else proj, dt_weight, A, D, dt_bias, output[1])
    ctx.routes, ctx.block_l = routes, block_l


def _backward(ctx, dy, _dstates, _dproj_routes):
    x, proj_routes, dt_weight, A, D, dt_bias, states = ctx.saved_tensors
    grads = _cross_scan_bwd(dy, x, proj_routes, dt_weight, A, D, dt_bias, states, ctx.routes, ctx.block_l)
    return (*grads, None, None, None, None, None)


_cross_scan_fwd = TritonOp('sparx_mm::cross_scan_fwd', _cross_scan_fwd, _cross_scan_fwd_fake, _setup_context, _backward)


def cross_selective_scan_triton(x, proj, dt_weight, A, D=None, dt_bias=None, routes=4, needs_grad=True):
    """Fused Triton implementation of :func:`sparx_mm.ops.cross_selective_scan` (inputs already checked).

    ``needs_grad``: whether a backward pass follows (the dispatcher knows): the forward kernel then takes the
    :func:`training_tiling`, whose chunk the backward kernel shares, else :func:`inference_tiling`'s. Needs CUDA
    tensors (or ``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests).
    """
    check_triton_launchable(x, 'cross_selective_scan_triton')
    kd = A.shape[0]
    # Absent D / dt_bias are zeros (their gradients are computed and dropped); parameters go in as float32.
    D = D.float() if D is not None else x.new_zeros(kd, dtype=torch.float32)
    dt_bias = dt_bias.float() if dt_bias is not None else x.new_zeros(kd, dtype=torch.float32)
    tiling = (training_tiling(dt_weight.shape[2], proj.dtype, x.shape[2] * x.shape[3]) if needs_grad
              else inference_tiling(x.shape[2] * x.shape[3], dt_weight.shape[2], proj.dtype))
    y, _, _ = _cross_scan_fwd(x.contiguous(), proj.contiguous(), dt_weight.float().contiguous(),
                              A.float().contiguous(), D.contiguous(), dt_bias.contiguous(), routes, *tiling)
    return y
