"""Triton selective scan (forward and backward) for CUDA tensors.

Same maths as :func:`sparx_mm.ops.selective_scan_reference` (which defines it): float32 state, float32
output, inputs of any float dtype. Each program scans ``BLOCK_D`` channels of one sample over the whole
sequence in chunks of ``BLOCK_L`` positions; inside a chunk the linear recurrence
``h_t = a_t h_{t-1} + b_t`` is a parallel ``tl.associative_scan``, across chunks a carried state. The
backward pass rescans each chunk from the states saved at chunk starts and runs the adjoint recurrence
``dh_t = C_t dy_t + a_{t+1} dh_{t+1}`` backwards, so nothing of size (L x N) per channel is stored.
d_state N is a compile-time constant (N = 1, SparX's setting, is one pass; larger N loop over states).

Importing this module needs triton but no GPU; launching needs CUDA tensors (or ``TRITON_INTERPRET=1``,
Triton's CPU interpreter, which the CPU tests use).
"""

import torch
import triton
import triton.language as tl

from .gpu_backends import check_triton_launchable
from .selective_scan import check_scan_inputs
from .triton_launch import cdiv, launch

BLOCK_L = 128


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _last_column(x, cols, BLOCK_L: tl.constexpr):
    return tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, x, 0.0), axis=1)


@triton.jit
def _first_column(x, cols):
    return tl.sum(tl.where(cols[None, :] == 0, x, 0.0), axis=1)


@triton.jit
def _chunk_states(a, bx, h0):
    """States h_t = a_t h_{t-1} + bx_t of a (BLOCK_D, BLOCK_L) chunk, from the state h0 (BLOCK_D) before it."""
    acc_a, acc_b = tl.associative_scan((a, bx), 1, _combine)
    return acc_b + acc_a * h0[:, None]


@triton.jit
def _chunk_states_reversed(a, bx, h_after, cols):
    """States h_t = a_t h_{t+1} + bx_t of a chunk scanned from its last position to its first (a backward
    route), from h_after (BLOCK_D), the state just after it; returns the states (BLOCK_D, BLOCK_L) and their
    first column, which the chunk before continues from."""
    rev_a, rev_b = tl.associative_scan((a, bx), 1, _combine, reverse=True)
    hs = rev_b + rev_a * h_after[:, None]
    return hs, _first_column(hs, cols)


@triton.jit
def _combine_adjoint(v1, q1, a1, v2, q2, a2):
    # Segments S1 then S2 in scan order, each (v: the adjoint at its last element from inside the segment,
    # q: the product of a over all but its last element, a of its last element); S1's last element feeds S2's
    # first through its own decay a1.
    return v2 + q2 * a1 * v1, q1 * a1 * q2, a2


@triton.jit
def _chunk_adjoint_of_route(a, g, carry, cols, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr):
    """The adjoint recurrence v_s = g_s + a_{s-1} v_{s-1} in scan order s (REVERSE: from the chunk's last
    position to its first, the adjoint of a forward route), where a_{s-1} is the decay of the step scanned
    before (the step the state flows to). ``carry`` (BLOCK_D): a v at the step scanned just before the chunk.
    Returns v (BLOCK_D, BLOCK_L) and a v at the chunk's last step in scan order, the next chunk's carry."""
    v, q, _ = tl.associative_scan((g, tl.full(g.shape, 1.0, tl.float32), a), 1, _combine_adjoint, reverse=REVERSE)
    v += q * carry[:, None]
    if REVERSE:
        new_carry = _first_column(a * v, cols)
    else:
        new_carry = _last_column(a * v, cols, BLOCK_L)
    return v, new_carry


@triton.jit
def _delta(delta_ptr, bias, rows, t, mask, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Raw delta (+ bias) and softplus of it, float32 (B_D, B_L)."""
    raw = tl.load(delta_ptr + rows[:, None] * L + t[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return raw, dt


@triton.jit
def _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, bias, A_n, rows, bc_row, t, mask, mask_t, L,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """One chunk's inputs in float32 and its recurrence terms a_t = exp(dt A), b_t = dt B u (identity
    past the end of the sequence)."""
    u = tl.load(u_ptr + rows[:, None] * L + t[None, :], mask=mask, other=0.0).to(tl.float32)
    raw, dt = _delta(delta_ptr, bias, rows, t, mask, L, HAS_BIAS, SOFTPLUS)
    Bt = tl.load(B_ptr + bc_row + t, mask=mask_t, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + bc_row + t, mask=mask_t, other=0.0).to(tl.float32)
    a = tl.where(mask, tl.exp(dt * A_n[:, None]), 1.0)
    bx = tl.where(mask, dt * Bt[None, :] * u, 0.0)
    return u, raw, dt, Bt, Ct, a, bx


@triton.jit
def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
                     KD, L, K, channels_per_route, num_chunks,
                     N: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # element offsets of large inputs pass 2**31
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d < KD
    route = (pid_d * BLOCK_D) // channels_per_route  # BLOCK_D divides channels_per_route
    rows = b * KD + d
    cols = tl.arange(0, BLOCK_L)
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    for n in tl.static_range(N):
        A_n = tl.load(A_ptr + d * N + n, mask=mask_d, other=0.0).to(tl.float32)
        bc_row = ((b * K + route) * N + n) * L
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
        for c in range(num_chunks):
            t = c * BLOCK_L + cols
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            u, _, dt, Bt, Ct, a, bx = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, bias, A_n, rows, bc_row, t,
                                                   mask, mask_t, L, HAS_BIAS, SOFTPLUS)
            tl.store(states_ptr + ((b * KD + d) * N + n) * num_chunks + c, h, mask=mask_d)
            hs = _chunk_states(a, bx, h)
            y = hs * Ct[None, :]
            y_ptrs = y_ptr + rows[:, None] * L + t[None, :]
            if n == 0:
                if HAS_D:
                    y += skip[:, None] * u
            else:
                y += tl.load(y_ptrs, mask=mask, other=0.0)
            tl.store(y_ptrs, y, mask=mask)
            h = _last_column(hs, cols, BLOCK_L)


@triton.jit
def _scan_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr,
                     du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                     KD, L, K, channels_per_route, num_chunks,
                     N: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # element offsets of large inputs pass 2**31
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d < KD
    route = (pid_d * BLOCK_D) // channels_per_route
    rows = b * KD + d
    cols = tl.arange(0, BLOCK_L)
    bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    skip = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for n in tl.static_range(N):
        A_n = tl.load(A_ptr + d * N + n, mask=mask_d, other=0.0).to(tl.float32)
        bc_row = ((b * K + route) * N + n) * L
        dh_next = tl.zeros([BLOCK_D], dtype=tl.float32)  # a dh at the step after the chunk
        dA_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for step in range(num_chunks):
            c = num_chunks - 1 - step
            t = c * BLOCK_L + cols
            mask_t = t < L
            mask = mask_d[:, None] & mask_t[None, :]
            offs = rows[:, None] * L + t[None, :]
            u, raw, dt, Bt, Ct, a, bx = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, bias, A_n, rows, bc_row, t,
                                                     mask, mask_t, L, HAS_BIAS, SOFTPLUS)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            # Recompute the chunk's states from the one saved at its start.
            h0 = tl.load(states_ptr + ((b * KD + d) * N + n) * num_chunks + c, mask=mask_d, other=0.0)
            hs = _chunk_states(a, bx, h0)
            # dh_t = C_t dy_t + a_{t+1} dh_{t+1}, a_{t+1} folded into the scan (no delta at shifted positions).
            dh, dh_next = _chunk_adjoint_of_route(a, tl.where(mask, Ct[None, :] * dy, 0.0), dh_next, cols, True,
                                                  BLOCK_L)
            h_prev_a = hs - bx  # = a_t * h_{t-1}
            ddt = dh * (Bt[None, :] * u + A_n[:, None] * h_prev_a)
            dA_acc += tl.sum(tl.where(mask, dh * dt * h_prev_a, 0.0), axis=1)
            du = dh * dt * Bt[None, :]
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(mask, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=1)
            tl.atomic_add(dB_ptr + bc_row + t, tl.sum(tl.where(mask, dh * dt * u, 0.0), axis=0), mask=mask_t)
            tl.atomic_add(dC_ptr + bc_row + t, tl.sum(tl.where(mask, dy * hs, 0.0), axis=0), mask=mask_t)
            if n == 0:
                if HAS_D:
                    du += skip[:, None] * dy
                    dD_acc += tl.sum(tl.where(mask, dy * u, 0.0), axis=1)
            else:
                du += tl.load(du_ptr + offs, mask=mask, other=0.0)
                ddt += tl.load(ddelta_ptr + offs, mask=mask, other=0.0)
            tl.store(du_ptr + offs, du, mask=mask)
            tl.store(ddelta_ptr + offs, ddt, mask=mask)
        tl.atomic_add(dA_ptr + d * N + n, dA_acc, mask=mask_d)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d, dbias_acc, mask=mask_d)
    if HAS_D:
        tl.atomic_add(dD_ptr + d, dD_acc, mask=mask_d)


def _block_d(channels_per_route: int) -> int:
    """Largest power of two <= 32 dividing the channels of a route, so a program never spans two routes."""
    block = 32
    while channels_per_route % block:
        block //= 2
    return block


def _launch_config(u, A, B):
    batch, kd, length = u.shape
    routes, n = B.shape[1], A.shape[1]
    per_route = kd // routes
    block_d = _block_d(per_route)
    num_chunks = cdiv(length, BLOCK_L)
    grid = (cdiv(kd, block_d), batch)
    return dict(KD=kd, L=length, K=routes, channels_per_route=per_route, num_chunks=num_chunks, N=n,
                BLOCK_D=block_d, BLOCK_L=BLOCK_L), grid


class _TritonSelectiveScan(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        A = A.float().contiguous()
        meta, grid = _launch_config(u, A, B)
        has_d, has_bias = D is not None, delta_bias is not None
        D_ = D.float().contiguous() if has_d else A  # placeholder pointer, never read
        bias_ = delta_bias.float().contiguous() if has_bias else A
        y = torch.empty(u.shape, device=u.device, dtype=torch.float32)
        states = torch.empty(u.shape[0], u.shape[1], meta['N'], meta['num_chunks'], device=u.device,
                             dtype=torch.float32)
        launch(_scan_fwd_kernel, grid, u, delta, A, B, C, D_, bias_, y, states, HAS_D=has_d, HAS_BIAS=has_bias,
               SOFTPLUS=bool(delta_softplus), num_warps=4, **meta)
        ctx.save_for_backward(u, delta, A, B, C, D_, bias_, states)
        ctx.flags = (has_d, has_bias, bool(delta_softplus))
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (D, delta_bias))
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D_, bias_, states = ctx.saved_tensors
        has_d, has_bias, softplus = ctx.flags
        meta, grid = _launch_config(u, A, B)
        f32 = dict(device=u.device, dtype=torch.float32)
        du, ddelta = torch.empty(u.shape, **f32), torch.empty(u.shape, **f32)
        dA = torch.zeros(A.shape, **f32)
        dB, dC = torch.zeros(B.shape, **f32), torch.zeros(C.shape, **f32)
        dD = torch.zeros(D_.shape, **f32) if has_d else dA
        dbias = torch.zeros(bias_.shape, **f32) if has_bias else dA
        launch(_scan_bwd_kernel, grid, u, delta, A, B, C, D_, bias_, dy.contiguous(), states, du, ddelta, dA, dB,
               dC, dD, dbias, HAS_D=has_d, HAS_BIAS=has_bias, SOFTPLUS=softplus, num_warps=4, **meta)
        d_dtype, bias_dtype = ctx.dtypes
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA, dB.to(B.dtype), dC.to(C.dtype),
                dD.to(d_dtype) if has_d else None, dbias.to(bias_dtype) if has_bias else None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Triton selective scan; arguments and result as :func:`selective_scan_reference` (CUDA only)."""
    check_scan_inputs(u, delta, A, B, C, D, delta_bias)
    check_triton_launchable(u, 'selective_scan_triton', dtypes=None)  # computes in float32 from any float dtype
    return _TritonSelectiveScan.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)
