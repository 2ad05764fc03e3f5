"""What the Triton kernels compile to on Hopper (sm_90), checked on the CPU (tools/analysis_tools/hopper_codegen.py):
the memory accesses that made a difference on the H200 (docs/benchmarks.md, "1x1 convolutions"), each against a
control without the alignment or tiling it depends on, so that the check can fail. The kernels' results are
checked by the op tests (Triton's interpreter) and by tools/gpu_checks/."""
import torch
import triton
import triton.language as tl

from sparx_mm.ops import triton_pointwise_conv as tpc
from ..conftest import load_tool

codegen = load_tool('tools/analysis_tools/hopper_codegen.py')
global_copies, hopper_ptx = codegen.global_copies, codegen.hopper_ptx

_ptx = codegen.forward_ptx


def test_tf32_kernel_copies_x_in_16_byte_pieces_onto_tensor_cores():
    """196 positions and 396 input channels (no multiple of 16): with the factors of 4 passed as constexprs every
    copy to shared memory is 16 bytes and the product is a TF32 wgmma; without them (the control, so that the
    check can fail) the copies of the weight rows and x fall back to 4 bytes."""
    ptx = _ptx(tpc._conv1x1_tf32_kernel, 'fp32', 196, 396, {})
    copies = global_copies(ptx)
    assert 'wgmma.mma_async.sync.aligned' in ptx and '.tf32.tf32' in ptx
    assert copies.get('cp.async 16', 0) > 0 and copies.get('cp.async 4', 0) == 0, copies
    assert copies.get('st.global.v4.b32', 0) > 0, copies  # the output and the skip path: vector accesses

    # The control keeps the arguments divided by 4: what matters here is what the compiler knows (none of them is
    # a multiple of 16 either way), not the sizes they describe.
    unaligned = global_copies(_ptx(tpc._conv1x1_tf32_kernel, 'fp32', 196, 396, dict(CIN_ALIGN=1, P_ALIGN=1,
                                                                                 W_ALIGN=1)))
    assert unaligned.get('cp.async 4', 0) + unaligned.get('ld.global.b32', 0) > 8, unaligned


def test_grouped_tf32_kernel_keeps_16_byte_copies_and_64_channel_tiles():
    """SparX-T's first DMCA fusion conv (3 groups of 96 -> 64 channels, 56 x 56): the group's weight rows and
    parameters are offsets from the program's group, which leave x's and the weight's copies 16 bytes and the
    product a TF32 wgmma, its tile 64 output channels wide (``tiling``); the control as above."""
    assert tpc.tiling(96, 64, 3136, torch.float32, True)[0] == 64
    ptx = _ptx(tpc._conv1x1_tf32_kernel, 'fp32', 3136, 96, dict(GROUPS=3), cout=64)
    copies = global_copies(ptx)
    assert 'wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32' in ptx, codegen.tensor_core_ops(ptx)
    assert copies.get('cp.async 16', 0) > 0 and copies.get('cp.async 4', 0) == 0, copies
    unaligned = global_copies(_ptx(tpc._conv1x1_tf32_kernel, 'fp32', 3136, 96, dict(GROUPS=3, CIN_ALIGN=1, P_ALIGN=1,
                                                                                W_ALIGN=1), cout=64))
    assert unaligned.get('cp.async 4', 0) + unaligned.get('ld.global.b32', 0) > 8, unaligned


def test_gelu_epilogue_takes_8_warps_and_does_not_spill():
    """The 1x1 kernels with the GELU epilogue (the DMCA's shortcut projection, 1280 -> 640 channels at 14 x 14):
    the tiling's 8 warps keep the accumulator and the GELU in registers, TF32 and float16; the control at 4 warps
    spills."""
    for kernel, dtype, extra in ((tpc._conv1x1_tf32_kernel, 'fp32', {}), (tpc._conv1x1_kernel, 'fp16', dict(DOT=0))):
        constexprs = dict(extra, HAS_SKIP=False, ACT=1)
        assert tpc.tiling(1280, 640, 196, torch.float32 if dtype == 'fp32' else torch.float16,
                          dtype == 'fp32', True)[3] == 8
        registers, spills = codegen.ptxas_usage(_ptx(kernel, dtype, 196, 1280, constexprs, cout=640))
        assert spills == 0, (dtype, registers, spills)
        assert codegen.ptxas_usage(_ptx(kernel, dtype, 196, 1280, constexprs, cout=640, warps=4))[1] > 0, dtype


def test_float16_kernel_reads_a_196_position_map_with_vector_copies():
    """float16 at 196 positions: x's copies are 8 bytes (196 = 4 x 49) and the skip path and output vectors, where
    without the factor each of x's elements was a 2-byte load."""
    copies = global_copies(_ptx(tpc._conv1x1_kernel, 'fp16', 196, 400, dict(DOT=0)))
    assert copies.get('cp.async 8', 0) > 0 and copies.get('ld.global.b16', 0) <= 1, copies
    unaligned = global_copies(_ptx(tpc._conv1x1_kernel, 'fp16', 196, 400, dict(DOT=0, P_ALIGN=1)))  # as above
    assert unaligned.get('ld.global.b16', 0) > 32, unaligned


def _fp32_pointers(*names):
    return {name: '*fp32' for name in names}


def test_cross_scan_reads_a_196_position_sequence_with_vector_accesses():
    """The fused scan's forward kernel at SparX-T's stage 3 (196 positions, rank 20, the tensor-core dt
    projection): vector loads and stores of the sequences with the length's factor 4 known; the control
    without it goes element by element."""
    from sparx_mm.ops import triton_cross_scan as tcs
    pointers = ('x_ptr', 'xt_ptr', 'proj_ptr', 'w_ptr', 'A_ptr', 'D_ptr', 'bias_ptr', 'y_ptr', 'states_ptr')
    arg_types = dict(_fp32_pointers(*pointers), Dm='i32', L_UNITS='i32', num_d_blocks='i32', num_chunks='i32')

    def copies(l_align):
        constexprs = dict(ROUTES=4, R=20, N=1, L_ALIGN=l_align, BLOCK_D=16, BLOCK_L=32, R_PAD=32)
        return global_copies(hopper_ptx(tcs._cross_scan_fwd_kernel, arg_types, constexprs, pointers + ('Dm', ),
                                        num_warps=4, num_stages=1))

    aligned, control = copies(4), copies(1)
    assert aligned.get('ld.global.v4.b32', 0) >= 8 and aligned.get('st.global.v4.b32', 0) >= 2, aligned
    assert aligned.get('ld.global.b32', 0) < control.get('ld.global.b32', 0) // 2, (aligned, control)


def test_group_norm_and_plane_transpose_rows_of_196_are_vector_accesses():
    """GroupNorm's normalise kernel on 196-column rows, and the plane transpose of 14 x 14 planes (several a
    program): vector accesses with the factors known, scalar ones in the controls."""
    from sparx_mm.ops import triton_group_norm as tgn
    from sparx_mm.ops import triton_transpose
    arg_types = dict(_fp32_pointers('x_ptr', 'y_ptr', 'w_ptr', 'b_ptr', 'stats_ptr'), rows='i32', C='i32',
                     S_UNITS='i32', col_blocks='i32')

    def normalise(s_align):
        constexprs = dict(S_ALIGN=s_align, HAS_WEIGHT=True, HAS_BIAS=True, BLOCK_R=4, BLOCK_S=256)
        return global_copies(hopper_ptx(tgn._normalize_kernel, arg_types, constexprs,
                                        ('x_ptr', 'y_ptr', 'w_ptr', 'b_ptr', 'stats_ptr', 'C')))

    aligned, control = normalise(4), normalise(1)
    assert aligned.get('st.global.v4.b32', 0) > 0 and control.get('st.global.v4.b32', 0) == 0, (aligned, control)

    arg_types = dict(_fp32_pointers('src_ptr', 'add_ptr', 'out_ptr'), N='i32', H_UNITS='i32', W_UNITS='i32',
                     run_planes='i32')
    block_n, block_h, block_w, _ = triton_transpose.plane_tiling(128 * 640, 14, 14)  # four planes a program

    def transpose(align):
        constexprs = dict(HAS_ADD=True, ALTERNATE=False, H_ALIGN=align, W_ALIGN=align, BLOCK_N=block_n,
                          BLOCK_H=block_h, BLOCK_W=block_w)
        return global_copies(hopper_ptx(triton_transpose._plane_transpose_kernel, arg_types, constexprs,
                                        ('src_ptr', 'add_ptr', 'out_ptr')))

    aligned, control = transpose(2), transpose(1)
    vectors = sum(n for name, n in aligned.items() if '.v2.' in name or '.v4.' in name)
    assert vectors > 0 and not any('.v2.' in name or '.v4.' in name for name in control), (aligned, control)


def test_depthwise_rows_of_56_columns_are_vector_accesses():
    """The depthwise forward kernel (3 x 3, GELU) on 56-column rows: the unshifted loads and the stores are
    vector accesses with the row length's factor 8 known; the control stores element by element."""
    from sparx_mm.ops import triton_depthwise_conv as tdc
    arg_types = dict(_fp32_pointers('x_ptr', 'w_ptr', 'b_ptr', 'y_ptr'), C='i32', H='i32', W_UNITS='i32',
                     n_planes='i32', run_rows='i32')

    def copies(w_align):
        constexprs = dict(K=3, ACT=1, HAS_BIAS=True, RESIDUAL=False, W_ALIGN=w_align, BLOCK_P=8, BLOCK_W=64)
        return global_copies(hopper_ptx(tdc._dwconv_kernel, arg_types, constexprs,
                                        ('x_ptr', 'w_ptr', 'b_ptr', 'y_ptr', 'C', 'n_planes')))

    aligned, control = copies(8), copies(1)
    assert aligned.get('st.global.v4.b32', 0) > 0 and control.get('st.global.v4.b32', 0) == 0, (aligned, control)
    assert aligned.get('ld.global.v4.b32', 0) > 0, aligned


def test_weight_gradient_kernel_reads_nchw_maps_onto_tensor_cores_with_vector_copies():
    """The backward's weight-gradient product reads dy and x in NCHW order, positions (its K) contiguous: a TF32
    (float32) or float16 wgmma fed by 16- / 8-byte copies at 196 positions. The control
    without the position count's factor copies 4 bytes (float32) or loads 2 bytes (float16) at a time."""
    for dtype, wgmma_types, width in (('fp32', '.tf32.tf32', 16), ('fp16', '.f16.f16', 8)):
        ptx = codegen.wgrad_ptx(320, 1280, 196, dtype)  # SparX-T's stage-3 fc1
        copies = global_copies(ptx)
        assert 'wgmma.mma_async.sync.aligned' in ptx and wgmma_types in ptx, dtype
        assert copies.get(f'cp.async {width}', 0) > 0 and copies.get('cp.async 4', 0) == 0, (dtype, copies)
        assert copies.get('ld.global.b32', 0) + copies.get('ld.global.b16', 0) == 0, (dtype, copies)
        unaligned = global_copies(codegen.wgrad_ptx(320, 1280, 196, dtype, p_align=1))
        assert unaligned.get('cp.async 4', 0) + unaligned.get('ld.global.b16', 0) > 32, (dtype, unaligned)


def test_scan_backward_recomputes_dt_on_tensor_cores_at_stage_3():
    """The fused scan's backward kernel at SparX-T's stage 3 (rank 20, 196 positions, float16 inputs) with
    backward_tiling's choice: dt recomputed by a tensor-core product (mma), its operands loaded as tiles, nothing
    spilled (the prefetched chunk included); the control (R_PAD 0, the multiply-adds in 8-channel programs) issues
    the rank's weight and projection loads element by element."""
    from sparx_mm.ops import triton_cross_scan as tcs
    block_d, warps, r_pad = tcs.backward_tiling(20, torch.float16)
    assert (block_d, r_pad) == (16, 32)
    dot = codegen.scan_backward_ptx(20, 196, 'fp16', block_d, warps, r_pad)
    control = codegen.scan_backward_ptx(20, 196, 'fp16', *tcs.BWD_TILING, 0)
    assert codegen.tensor_core_ops(dot) and not codegen.tensor_core_ops(control)
    scalar_loads = [global_copies(p).get('ld.global.b32', 0) for p in (dot, control)]
    assert scalar_loads[0] * 4 < scalar_loads[1], scalar_loads
    assert codegen.ptxas_usage(dot)[1] == 0, codegen.ptxas_usage(dot)


@triton.jit
def _approximate_reciprocal_sqrt(x_ptr, y_ptr):
    """The control of the next test: ``1 / tl.sqrt(x)`` as Triton writes it by default."""
    offs = tl.arange(0, 16)
    tl.store(y_ptr + offs, 1.0 / tl.sqrt(tl.load(x_ptr + offs)))


def test_batch_norm_fold_kernel_rounds_as_torch_on_hopper():
    """The BatchNorm-folding kernel compiles for sm_90 with the correctly rounded square root and division (torch's
    rsqrt rounding), not the approximate ones Triton emits for ``tl.sqrt`` / ``/``; the control writes the
    approximate form to show the check tells them apart."""
    from sparx_mm.ops import triton_batch_norm_fold as tbf
    pointers = ('w_ptr', 'b_ptr', 'mean_ptr', 'var_ptr', 'gamma_ptr', 'beta_ptr', 'w_out_ptr', 'b_out_ptr')
    arg_types = dict(_fp32_pointers(*pointers), COUT='i32', ROW='i32', eps='fp32')
    constexprs = dict(HAS_BIAS=True, HAS_GAMMA=True, HAS_BETA=True, BLOCK_R=tbf.BLOCK_R, BLOCK_C=tbf.BLOCK_C)
    ptx = hopper_ptx(tbf._fold_kernel, arg_types, constexprs, pointers, 4, 1)
    assert 'sqrt.rn.f32' in ptx and 'div.rn.f32' in ptx and 'sqrt.approx' not in ptx
    assert codegen.ptxas_usage(ptx)[1] == 0

    control = hopper_ptx(_approximate_reciprocal_sqrt, _fp32_pointers('x_ptr', 'y_ptr'), {}, ('x_ptr', 'y_ptr'), 1, 1)
    assert 'sqrt.approx' in control and 'div.full.f32' in control and 'div.rn.f32' not in control


def _loads_carried_to_the_next_iteration(ttir: str) -> list:
    """For each loop of a kernel's Triton IR, how many values it carries into its next iteration are results of
    loads issued in it (a prefetch: issued in one iteration, used in the next)."""
    import re
    loads = set(re.findall(r'(%[\w.#]+) = tt\.load', ttir))
    return [sum(name in loads for name in re.findall(r'%[\w.#]+', operands))
            for operands in re.findall(r'scf\.yield ([^:\n]*)', ttir)]


def test_fused_scan_loops_prefetch_the_next_chunk():
    """Both fused scan kernels, with dt by multiply-adds (rank 6) and on tensor cores (rank 20), carry loads into
    the next iteration of every route's chunk loop: each chunk's inputs are loaded during the chunk before. The
    control, the plain selective scan's kernel, loads each chunk where it uses it: nothing carried."""
    from sparx_mm.ops import triton_cross_scan as tcs
    from sparx_mm.ops import triton_scan
    forward_pointers = ('x_ptr', 'xt_ptr', 'proj_ptr', 'w_ptr', 'A_ptr', 'D_ptr', 'bias_ptr', 'y_ptr', 'states_ptr')
    backward_pointers = ('x_ptr', 'xt_ptr', 'proj_ptr', 'w_ptr', 'A_ptr', 'D_ptr', 'bias_ptr', 'dy_ptr', 'dyt_ptr',
                         'states_ptr', 'dx_ptr', 'ddt_ptr', 'dbc_ptr', 'dA_ptr', 'dD_ptr', 'dbias_ptr')
    sizes = dict(Dm='i32', L_UNITS='i32', num_d_blocks='i32', num_chunks='i32')
    for rank, r_pad in ((6, 0), (20, 32)):
        constexprs = dict(ROUTES=4, R=rank, N=1, L_ALIGN=4, BLOCK_D=16, BLOCK_L=32, R_PAD=r_pad)
        for kernel, pointers in ((tcs._cross_scan_fwd_kernel, forward_pointers),
                                 (tcs._cross_scan_bwd_kernel, backward_pointers)):
            ttir = hopper_ptx(kernel, dict(_fp32_pointers(*pointers), **sizes), constexprs, pointers, 4, 1, 'ttir')
            carried = _loads_carried_to_the_next_iteration(ttir)
            assert len(carried) == 2 and min(carried) >= 3, (kernel.fn.__name__, rank, carried)

    pointers = ('u_ptr', 'delta_ptr', 'A_ptr', 'B_ptr', 'C_ptr', 'D_ptr', 'bias_ptr', 'y_ptr', 'states_ptr')
    constexprs = dict(N=1, HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_D=16, BLOCK_L=triton_scan.BLOCK_L)
    ttir = hopper_ptx(triton_scan._scan_fwd_kernel, dict(_fp32_pointers(*pointers), KD='i32', L='i32', K='i32',
                                                         channels_per_route='i32', num_chunks='i32'),
                      constexprs, pointers, 4, 1, 'ttir')
    carried = _loads_carried_to_the_next_iteration(ttir)
    assert carried and max(carried) == 0, carried


def test_dt_projection_gradients_stream_ddt_onto_tensor_cores_without_spilling():
    """The scan backward's dt projection gradients (one read of the raw-dt gradient): float16 at SparX-T's stage 1
    (3136 positions, rank 6) and stage 3 (196, rank 20) on tensor cores (wgmma) with the ddt tiles copied in 16-byte
    (stage 1) / 8-byte (196 positions) pieces, nothing spilled; float32 (3xTF32) with its own tiling at ranks 20
    and 40 spills nothing, where the 16-bit tiling (the control) spills."""
    ptx = codegen.dt_projection_grads_ptx('fp16', 192, 3136, 6)
    copies = global_copies(ptx)
    assert copies.get('cp.async 16', 0) > 0 and 'wgmma' in ptx and codegen.ptxas_usage(ptx)[1] == 0, copies
    ptx = codegen.dt_projection_grads_ptx('fp16', 640, 196, 20)
    assert global_copies(ptx).get('cp.async 8', 0) > 0 and codegen.ptxas_usage(ptx)[1] == 0
    for rank in (20, 40):
        assert codegen.ptxas_usage(codegen.dt_projection_grads_ptx('fp32', 640, 196, rank))[1] == 0, rank
    assert codegen.ptxas_usage(codegen.dt_projection_grads_ptx('fp32', 640, 196, 20, (64, 128, 32, 4, 3, 1)))[1] > 0


def test_channel_shuffle_moves_14x14_planes_with_vector_accesses_and_7x7_ones_without_spilling():
    """concat_shuffled's plane copies: 196-element float16 rows (8-byte aligned) with 8-byte loads and stores, both
    directions; 7 x 7 planes (scalar accesses, 64 rows a program) spill nothing at the launch's 8 warps, where 4
    (the control) spill."""
    for scatter in (True, False):
        copies = global_copies(codegen.shuffle_copy_ptx(196, 'fp16', scatter))
        assert copies.get('ld.global.v2.b32', 0) > 0 and copies.get('st.global.v2.b32', 0) > 0, copies
    assert codegen.ptxas_usage(codegen.shuffle_copy_ptx(49, 'fp16', False))[1] == 0
    assert codegen.ptxas_usage(codegen.shuffle_copy_ptx(49, 'fp16', False, warps=4))[1] > 0
