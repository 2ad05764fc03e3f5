"""Triton kernels of :func:`sparx_mm.ops.cross_selective_scan` (SS2D's scan core), forward and backward.

One program scans ``BLOCK_D`` channels of one route of one sample, in chunks of ``BLOCK_L`` positions of the
route's order (the chunked associative scan of ``triton_scan.py``). Instead of reading materialised route
copies it computes, per chunk, the row-major positions ``p`` that the route visits and gathers ``x[:, :, p]``
and the projections ``proj[:, k, :, p]`` directly; ``dt = softplus(dt_weight_k @ proj_dt + bias)`` is a small
matmul in the kernel. Each route writes its output at row-major positions into (B, K, D, L), summed over K
afterwards (no atomics: the result is deterministic).

The backward pass rescans each chunk from the saved chunk-start states (as ``triton_scan.py`` does), runs the
adjoint recurrence backwards, and writes du per route at row-major positions; the gradients of the
projections (dt ranks, B, C), shared by the channels of a route, are summed across programs with atomics.

Importing this module needs triton but no GPU; launching needs CUDA tensors, or ``TRITON_INTERPRET=1``
(Triton's CPU interpreter, which the CPU tests use).
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .triton_scan import _chunk_adjoint, _chunk_states, _last_column, interpreting

BLOCK_D = 32
#: (BLOCK_L, num_warps) for routes longer than LONG_ROUTE and for the others: the faster of the tilings
#: timed by tools/gpu_checks/bench_cross_scan.py on an H100 (long routes gain from 8 warps, short ones from
#: shorter chunks). Ranks padded beyond MAX_LONG_RANK take the short tiling: the long one's dt tiles would
#: not fit in shared memory in the backward kernel.
LONG_ROUTE = 1024
LONG_TILING = (128, 8)
SHORT_TILING = (64, 4)
MAX_LONG_RANK = 32


def _rank_padding(rank: int) -> int:
    return max(16, triton.next_power_of_2(rank))  # tl.dot needs every dimension >= 16


def _tiling(length: int, rank: int):
    return LONG_TILING if length > LONG_ROUTE and _rank_padding(rank) <= MAX_LONG_RANK else SHORT_TILING


@triton.jit
def _positions(t, route, H, W, L, ROUTES: tl.constexpr):
    """Row-major positions visited at steps ``t`` of route ``route`` (see cross_selective_scan.route_sequence)."""
    s = t
    if ROUTES > 1:
        s = tl.where(route >= ROUTES // 2, L - 1 - t, t)
    if ROUTES == 4:
        s = tl.where(route % 2 == 1, (s % H) * W + s // H, s)
    return s


@triton.jit
def _dt_chunk(proj_base, w_tile, bias, p, ranks, mask_rl, L):
    """Raw dt (dt_weight @ proj_dt + bias) and softplus of it, float32 (BLOCK_D, BLOCK_L)."""
    dtr = tl.load(proj_base + ranks[:, None] * L + p[None, :], mask=mask_rl, other=0.0).to(tl.float32)
    raw = tl.dot(w_tile, dtr, input_precision='ieee') + bias[:, None]
    dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return dtr, raw, dt


@triton.jit
def _program_setup(w_ptr, bias_ptr, D_ptr, Dm, L, R, num_d_blocks, ROUTES: tl.constexpr, N: tl.constexpr,
                   BLOCK_D: tl.constexpr, R_PAD: tl.constexpr):
    """What a program (BLOCK_D channels of one route of one sample) reads once: its indices, dt weights, bias,
    D, and the offsets of its projections, of its rows of x, of its rows of a per-route (B, K, D, L) buffer
    and of its saved states."""
    b = tl.program_id(1).to(tl.int64)  # element offsets of large inputs pass 2**31
    pid = tl.program_id(0)
    route = pid // num_d_blocks
    dl = (pid % num_d_blocks) * BLOCK_D + tl.arange(0, BLOCK_D)  # channel within the route
    mask_d = dl < Dm
    kd = route * Dm + dl  # index into the (K*D,) parameters
    ranks = tl.arange(0, R_PAD)
    mask_r = ranks < R
    w_tile = tl.load(w_ptr + kd[:, None] * R + ranks[None, :], mask=mask_d[:, None] & mask_r[None, :],
                     other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + kd, mask=mask_d, other=0.0).to(tl.float32)
    skip = tl.load(D_ptr + kd, mask=mask_d, other=0.0).to(tl.float32)
    proj_offset = (b * ROUTES + route) * (R + 2 * N) * L
    x_rows = (b * Dm + dl) * L
    route_rows = ((b * ROUTES + route) * Dm + dl) * L
    state_rows = (b * ROUTES * Dm + kd) * N
    return route, mask_d, kd, ranks, mask_r, w_tile, bias, skip, proj_offset, x_rows, route_rows, state_rows


@triton.jit
def _route_chunk(x_ptr, proj_base, x_rows, w_tile, bias, A_n, ranks, mask_r, mask_d, c, n, route, H, W, L, R,
                 N: tl.constexpr, ROUTES: tl.constexpr, BLOCK_L: tl.constexpr):
    """Chunk ``c`` of the route: its steps, masks and row-major positions, the inputs gathered there (float32)
    and the recurrence terms a_t = exp(dt A), b_t = dt B u (identity past the end of the route)."""
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_t = t < L
    mask = mask_d[:, None] & mask_t[None, :]
    mask_rl = mask_r[:, None] & mask_t[None, :]
    p = _positions(t, route, H, W, L, ROUTES)
    u = tl.load(x_ptr + x_rows[:, None] + p[None, :], mask=mask, other=0.0).to(tl.float32)
    dtr, raw, dt = _dt_chunk(proj_base, w_tile, bias, p, ranks, mask_rl, L)
    Bt = tl.load(proj_base + (R + n) * L + p, mask=mask_t, other=0.0).to(tl.float32)
    Ct = tl.load(proj_base + (R + N + n) * L + p, mask=mask_t, other=0.0).to(tl.float32)
    a = tl.where(mask, tl.exp(dt * A_n[:, None]), 1.0)
    bx = tl.where(mask, dt * Bt[None, :] * u, 0.0)
    return t, mask_t, mask, mask_rl, p, u, dtr, raw, dt, Bt, Ct, a, bx


@triton.jit
def _cross_scan_fwd_kernel(x_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
                           Dm, H, W, L, R, num_d_blocks, num_chunks,
                           ROUTES: tl.constexpr, N: tl.constexpr, R_PAD: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    route, mask_d, kd, ranks, mask_r, w_tile, bias, skip, proj_offset, x_rows, y_rows, state_rows = \
        _program_setup(w_ptr, bias_ptr, D_ptr, Dm, L, R, num_d_blocks, ROUTES, N, BLOCK_D, R_PAD)
    proj_base = proj_ptr + proj_offset
    cols = tl.arange(0, BLOCK_L)
    for n in tl.static_range(N):
        A_n = tl.load(A_ptr + kd * N + n, mask=mask_d, other=0.0).to(tl.float32)
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
        for c in range(num_chunks):
            t, mask_t, mask, mask_rl, p, u, dtr, raw, dt, Bt, Ct, a, bx = _route_chunk(
                x_ptr, proj_base, x_rows, w_tile, bias, A_n, ranks, mask_r, mask_d, c, n, route, H, W, L, R, N,
                ROUTES, BLOCK_L)
            tl.store(states_ptr + (state_rows + n) * num_chunks + c, h, mask=mask_d)
            hs = _chunk_states(a, bx, h)
            y = hs * Ct[None, :]
            y_ptrs = y_ptr + y_rows[:, None] + p[None, :]
            if n == 0:
                y += skip[:, None] * u
            else:
                y += tl.load(y_ptrs, mask=mask, other=0.0)
            tl.store(y_ptrs, y, mask=mask)
            h = _last_column(hs, cols, BLOCK_L)


@triton.jit
def _cross_scan_bwd_kernel(x_ptr, proj_ptr, w_ptr, A_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr,
                           dx_ptr, dproj_ptr, dw_ptr, dA_ptr, dD_ptr, dbias_ptr,
                           Dm, H, W, L, R, num_d_blocks, num_chunks,
                           ROUTES: tl.constexpr, N: tl.constexpr, R_PAD: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    route, mask_d, kd, ranks, mask_r, w_tile, bias, skip, proj_offset, x_rows, dx_rows, state_rows = \
        _program_setup(w_ptr, bias_ptr, D_ptr, Dm, L, R, num_d_blocks, ROUTES, N, BLOCK_D, R_PAD)
    proj_base = proj_ptr + proj_offset
    dproj_base = dproj_ptr + proj_offset
    cols = tl.arange(0, BLOCK_L)
    dw_acc = tl.zeros([BLOCK_D, R_PAD], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for n in tl.static_range(N):
        A_n = tl.load(A_ptr + kd * N + n, mask=mask_d, other=0.0).to(tl.float32)
        dh_next = tl.zeros([BLOCK_D], dtype=tl.float32)
        dA_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for step in range(num_chunks):
            c = num_chunks - 1 - step
            t, mask_t, mask, mask_rl, p, u, dtr, raw, dt, Bt, Ct, a, bx = _route_chunk(
                x_ptr, proj_base, x_rows, w_tile, bias, A_n, ranks, mask_r, mask_d, c, n, route, H, W, L, R, N,
                ROUTES, BLOCK_L)
            # Every route's output is summed into y, so each reads the same dy at its positions.
            dy = tl.load(dy_ptr + x_rows[:, None] + p[None, :], mask=mask, other=0.0).to(tl.float32)
            # Recompute the chunk's states from the one saved at its start.
            h0 = tl.load(states_ptr + (state_rows + n) * num_chunks + c, mask=mask_d, other=0.0)
            hs = _chunk_states(a, bx, h0)
            # a_{t+1}: the decay that carries dh back from step t+1 to t (0 past the end of the route).
            t_next = t + 1
            mask_tn = t_next < L
            p_next = _positions(t_next, route, H, W, L, ROUTES)
            _, _, dt_next = _dt_chunk(proj_base, w_tile, bias, p_next, ranks, mask_r[:, None] & mask_tn[None, :],
                                      L)
            a_next = tl.where(mask_d[:, None] & mask_tn[None, :], tl.exp(dt_next * A_n[:, None]), 0.0)
            dh, dh_next = _chunk_adjoint(a_next, tl.where(mask, Ct[None, :] * dy, 0.0), dh_next, cols)

            h_prev_a = hs - bx  # = a_t * h_{t-1}
            dA_acc += tl.sum(tl.where(mask, dh * dt * h_prev_a, 0.0), axis=1)
            # softplus' derivative is sigmoid(raw) (the identity branch above 20 has sigmoid ~ 1).
            draw = tl.where(mask, dh * (Bt[None, :] * u + A_n[:, None] * h_prev_a) * tl.sigmoid(raw), 0.0)
            dbias_acc += tl.sum(draw, axis=1)
            dw_acc += tl.dot(draw, tl.trans(dtr), input_precision='ieee')
            ddtr = tl.dot(tl.trans(w_tile), draw, input_precision='ieee')
            tl.atomic_add(dproj_base + ranks[:, None] * L + p[None, :], ddtr, mask=mask_rl)
            tl.atomic_add(dproj_base + (R + n) * L + p, tl.sum(tl.where(mask, dh * dt * u, 0.0), axis=0),
                          mask=mask_t)
            tl.atomic_add(dproj_base + (R + N + n) * L + p, tl.sum(tl.where(mask, dy * hs, 0.0), axis=0),
                          mask=mask_t)
            du = dh * dt * Bt[None, :]
            dx_ptrs = dx_ptr + dx_rows[:, None] + p[None, :]
            if n == 0:
                du += skip[:, None] * dy
                dD_acc += tl.sum(tl.where(mask, dy * u, 0.0), axis=1)
            else:
                du += tl.load(dx_ptrs, mask=mask, other=0.0)
            tl.store(dx_ptrs, du, mask=mask)
        tl.atomic_add(dA_ptr + kd * N + n, dA_acc, mask=mask_d)
    tl.atomic_add(dw_ptr + kd[:, None] * R + ranks[None, :], dw_acc, mask=mask_d[:, None] & mask_r[None, :])
    tl.atomic_add(dbias_ptr + kd, dbias_acc, mask=mask_d)
    tl.atomic_add(dD_ptr + kd, dD_acc, mask=mask_d)


def _launch_config(x, dt_weight, A, routes):
    batch, channels, height, width = x.shape
    rank = dt_weight.shape[2]
    length = height * width
    num_d_blocks = triton.cdiv(channels, BLOCK_D)
    block_l, warps = _tiling(length, rank)
    meta = dict(Dm=channels, H=height, W=width, L=length, R=rank, num_d_blocks=num_d_blocks,
                num_chunks=triton.cdiv(length, block_l), ROUTES=routes, N=A.shape[1],
                R_PAD=_rank_padding(rank), BLOCK_D=BLOCK_D, BLOCK_L=block_l, num_warps=warps)
    return meta, (routes * num_d_blocks, batch)


# The kernels are wrapped as torch.library custom ops (with shape-only "fake" versions and a registered
# autograd formula) so that torch.compile captures whole SparX blocks around them instead of breaking the
# graph at an opaque autograd.Function.
@torch.library.custom_op('sparx_mm::cross_scan_fwd', mutates_args=())
def _cross_scan_fwd(x: torch.Tensor, proj: torch.Tensor, dt_weight: torch.Tensor, A: torch.Tensor,
                    D: torch.Tensor, dt_bias: torch.Tensor, routes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """-> y (B, D, H, W) float32, chunk-start states (B, K*D, N, chunks) float32."""
    meta, grid = _launch_config(x, dt_weight, A, routes)
    b, d, h, w = x.shape
    f32 = dict(device=x.device, dtype=torch.float32)
    ys = torch.empty(b, routes, d, h * w, **f32)
    states = torch.empty(b, A.shape[0], meta['N'], meta['num_chunks'], **f32)
    _cross_scan_fwd_kernel[grid](x, proj, dt_weight, A, D, dt_bias, ys, states, **meta)
    return ys.sum(dim=1).view(b, d, h, w), states


@_cross_scan_fwd.register_fake
def _(x, proj, dt_weight, A, D, dt_bias, routes):
    b, d, h, w = x.shape
    chunks = triton.cdiv(h * w, _tiling(h * w, dt_weight.shape[2])[0])
    return (x.new_empty(b, d, h, w, dtype=torch.float32),
            x.new_empty(b, A.shape[0], A.shape[1], chunks, dtype=torch.float32))


@torch.library.custom_op('sparx_mm::cross_scan_bwd', mutates_args=())
def _cross_scan_bwd(dy: torch.Tensor, x: torch.Tensor, proj: torch.Tensor, dt_weight: torch.Tensor,
                    A: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor, states: torch.Tensor,
                    routes: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor]:
    """-> dx, dproj (in the inputs' dtypes), d dt_weight, dA, dD, d dt_bias (float32)."""
    meta, grid = _launch_config(x, dt_weight, A, routes)
    b, d, h, w = x.shape
    f32 = dict(device=x.device, dtype=torch.float32)
    dxs = torch.empty(b, routes, d, h * w, **f32)
    dproj = torch.zeros(proj.shape, **f32)
    grads = [torch.zeros(t.shape, **f32) for t in (dt_weight, A, D, dt_bias)]
    # The backward kernel specialised for float16 / bfloat16 inputs ran ~2x slower than on float32 ones (H100,
    # stage-1 sizes); converting the inputs first costs far less.
    x_, proj_ = x.float(), proj.float()
    _cross_scan_bwd_kernel[grid](x_, proj_, dt_weight, A, D, dt_bias, dy.contiguous().float(), states, dxs, dproj,
                                 *grads, **meta)
    return (dxs.sum(dim=1).view(x.shape).to(x.dtype), dproj.to(proj.dtype), *grads)


@_cross_scan_bwd.register_fake
def _(dy, x, proj, dt_weight, A, D, dt_bias, states, routes):
    f32 = dict(dtype=torch.float32)
    return (torch.empty_like(x), torch.empty_like(proj), torch.empty_like(dt_weight, **f32),
            torch.empty_like(A, **f32), torch.empty_like(D, **f32), torch.empty_like(dt_bias, **f32))


def _setup_context(ctx, inputs, output):
    x, proj, dt_weight, A, D, dt_bias, routes = inputs
    ctx.save_for_backward(x, proj, dt_weight, A, D, dt_bias, output[1])
    ctx.routes = routes


def _backward(ctx, dy, _dstates):
    x, proj, dt_weight, A, D, dt_bias, states = ctx.saved_tensors
    grads = _cross_scan_bwd(dy, x, proj, dt_weight, A, D, dt_bias, states, ctx.routes)
    return (*grads, None)


_cross_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def cross_selective_scan_triton(x, proj, dt_weight, A, D=None, dt_bias=None, routes=4):
    """Fused Triton implementation of :func:`sparx_mm.ops.cross_selective_scan` (inputs already checked).

    Needs CUDA tensors (or ``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests).
    """
    if not x.is_cuda and not interpreting():
        raise RuntimeError('cross_selective_scan_triton needs CUDA tensors; on CPU use the reference '
                           "(backend='reference', or leave the backend unset)")
    if x.dtype == torch.float64:
        raise TypeError('cross_selective_scan_triton computes in float32; float64 inputs need the reference '
                        "backend (backend='reference')")
    kd = A.shape[0]
    # Absent D / dt_bias are zeros (their gradients are computed and dropped); parameters go in as float32.
    D = D.float() if D is not None else x.new_zeros(kd, dtype=torch.float32)
    dt_bias = dt_bias.float() if dt_bias is not None else x.new_zeros(kd, dtype=torch.float32)
    y, _ = _cross_scan_fwd(x.contiguous(), proj.contiguous(), dt_weight.float().contiguous(),
                           A.float().contiguous(), D.contiguous(), dt_bias.contiguous(), routes)
    return y
