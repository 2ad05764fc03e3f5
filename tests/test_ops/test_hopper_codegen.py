"""What the Triton kernels compile to on Hopper (sm_90), checked on the CPU (``helpers.hopper_ptx``): the memory
accesses that made a difference on the H200 (docs/benchmarks.md, "1x1 convolutions"), each against a control
without the alignment it depends on, so that the check can fail. The kernels' results are checked by the op
tests (Triton's interpreter) and by tools/gpu_checks/."""
import torch

from sparx_mm.ops import triton_pointwise_conv as tpc
from sparx_mm.ops.triton_launch import power_of_two_factor

from .helpers import global_copies, hopper_ptx

POINTERS = ('x_ptr', 'w_ptr', 'b_ptr', 's_ptr', 'scale_ptr', 'shift_ptr', 'y_ptr')
INTEGERS = ('CIN_UNITS', 'COUT', 'P_UNITS', 'W_STRIDE_UNITS')


def _ptx(kernel, dtype, positions, cin, extra_constexprs):
    """The kernel at (positions, cin) with cout = 2 cin, a skip path and a bias, its tiling for them, the weight
    rows unpadded: every pointer 16-byte aligned, the integer arguments divisible by 16 only where they are."""
    tf32 = kernel is tpc._fwd_tf32_kernel
    torch_dtype = dict(fp32=torch.float32, fp16=torch.float16)[dtype]
    block_co, block_p, block_k, warps, stages = tpc.tiling(cin, 2 * cin, positions, torch_dtype, tf32)
    cin_align, p_align = power_of_two_factor(cin), power_of_two_factor(positions)
    values = dict(CIN_UNITS=cin // cin_align, COUT=2 * cin, P_UNITS=positions // p_align,
                  W_STRIDE_UNITS=cin // cin_align)
    arg_types = dict({name: f'*{dtype}' for name in POINTERS}, **{name: 'i32' for name in INTEGERS})
    constexprs = dict(HAS_BIAS=True, HAS_SKIP=True, HAS_SCALE=False, HAS_SHIFT=False, CIN_ALIGN=cin_align,
                      P_ALIGN=p_align, W_ALIGN=cin_align, BLOCK_CO=block_co, BLOCK_P=block_p, BLOCK_K=block_k)
    constexprs.update(extra_constexprs)
    aligned = POINTERS + tuple(name for name in INTEGERS if values[name] % 16 == 0)
    return hopper_ptx(kernel, arg_types, constexprs, aligned, warps, stages)


def test_tf32_kernel_copies_x_in_16_byte_pieces_onto_tensor_cores():
    """196 positions and 396 input channels (no multiple of 16): with the factors of 4 passed as constexprs every
    copy to shared memory is 16 bytes and the product is a TF32 wgmma; without them (the control, so that the
    check can fail) the copies of the weight rows and x fall back to 4 bytes."""
    ptx = _ptx(tpc._fwd_tf32_kernel, 'fp32', 196, 396, {})
    copies = global_copies(ptx)
    assert 'wgmma.mma_async.sync.aligned' in ptx and '.tf32.tf32' in ptx
    assert copies.get('cp.async 16', 0) > 0 and copies.get('cp.async 4', 0) == 0, copies
    assert copies.get('st.global.v4.b32', 0) > 0, copies  # the output and the skip path: vector accesses

    # The control keeps the arguments divided by 4: what matters here is what the compiler knows (none of them is
    # a multiple of 16 either way), not the sizes they describe.
    unaligned = global_copies(_ptx(tpc._fwd_tf32_kernel, 'fp32', 196, 396, dict(CIN_ALIGN=1, P_ALIGN=1,
                                                                                 W_ALIGN=1)))
    assert unaligned.get('cp.async 4', 0) + unaligned.get('ld.global.b32', 0) > 8, unaligned


def test_float16_kernel_reads_a_196_position_map_with_vector_copies():
    """float16 at 196 positions: x's copies are 8 bytes (196 = 4 x 49) and the skip path and output vectors, where
    without the factor each of x's elements was a 2-byte load."""
    copies = global_copies(_ptx(tpc._fwd_kernel, 'fp16', 196, 400, dict(DOT=0)))
    assert copies.get('cp.async 8', 0) > 0 and copies.get('ld.global.b16', 0) <= 1, copies
    unaligned = global_copies(_ptx(tpc._fwd_kernel, 'fp16', 196, 400, dict(DOT=0, P_ALIGN=1)))  # as above
    assert unaligned.get('ld.global.b16', 0) > 32, unaligned
