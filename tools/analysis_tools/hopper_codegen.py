"""What the Triton kernels compile to on Hopper (sm_90, H100 / H200), on a machine without a GPU.

    python tools/analysis_tools/hopper_codegen.py [--arch t]
        [--part scan-backward dt-projection-grads pointwise-wgrad pointwise-gelu channel-shuffle]

Each kernel is compiled by Triton for ``GPUTarget('cuda', 90, 32)`` at the sizes of the model's layers (batch
128, 224 x 224) with the launch's tiling, and its PTX assembled by Triton's bundled ptxas: per configuration, the
registers a thread uses and the bytes it spills, the tensor-core instructions, and the global loads, stores and
asynchronous copies by width. Registers bound how many programs a multiprocessor holds (64K a multiprocessor);
scalar accesses where vector ones would do were the losses found on the H200 (docs/benchmarks.md, "1x1
convolutions"). Nothing runs: these are facts about the code, not timings.

Parts: ``scan-backward``: the fused scan's backward kernel at each stage, with :func:`backward_tiling`'s choice
and with the 8-channel multiply-adds; ``dt-projection-grads``: the scan backward's last kernel (the dt projection's
gradients from one read of the raw-dt gradient) at each stage, float16, bfloat16, float32; ``pointwise-wgrad``: the
1x1 convolutions' weight-gradient kernel, float16 and TF32; ``pointwise-gelu``: the 1x1 forward kernels with the GELU
epilogue (the DMCAs' shortcut projections in inference), with the launch's warps and with 4; ``channel-shuffle``:
the DMCA's concatenation + shuffle (``concat_shuffled``) at each stage's map, forward and backward. The helpers are
what ``tests/test_ops/test_hopper_codegen.py`` asserts with.
"""
import argparse
import collections
import math
import os
import re
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.models.backbones.sparx_mamba import SparXMamba  # noqa: E402
from sparx_mm.ops import triton_cross_scan as tcs  # noqa: E402
from sparx_mm.ops import triton_pointwise_conv as tpc  # noqa: E402
from sparx_mm.ops.pointwise_conv import triton_is_faster  # noqa: E402
from sparx_mm.ops.triton_launch import power_of_two_factor  # noqa: E402

MAP_SIZES = (56, 28, 14, 7)


def hopper_ptx(kernel, arg_types: dict, constexprs: dict, multiples_of_16=(), num_warps: int = 4,
               num_stages: int = 3, stage: str = 'ptx') -> str:
    """The PTX of a Triton ``kernel`` compiled for sm_90 on this machine: no GPU is needed, only triton's bundled
    ptxas. ``arg_types``: each runtime argument's Triton type ('*fp32', 'i32', ...) in order; ``constexprs``: the
    constexpr values; ``multiples_of_16``: the names of the arguments the launch would find divisible by 16
    (pointers: 16-byte aligned), as Triton's specialisation marks them. ``stage``: another of the compilation's
    texts instead ('ttir': Triton's IR before the GPU passes)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile
    signature = dict(arg_types, **{name: 'constexpr' for name in constexprs})
    names = list(kernel.arg_names)
    attrs = {(names.index(name), ): [['tt.divisibility', 16]] for name in multiples_of_16}
    source = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton_compile(source, target=GPUTarget('cuda', 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    return compiled.asm[stage]


def global_copies(ptx: str) -> dict:
    """Counts of the PTX's global-memory loads, stores and asynchronous copies to shared memory, by width:
    {'ld.global.b32': 12, 'ld.global.v4.b32': 8, 'cp.async 16': 36, ...}."""
    counts = collections.Counter(re.findall(r'\b((?:ld|st)\.global(?:\.[a-z0-9]+)*)', ptx))
    for size in re.findall(r'cp\.async\.c[ag]\.shared\.global(?:\.[a-z0-9]+)* \[[^]]*\], \[[^]]*\], (\w+)', ptx):
        counts[f'cp.async {int(size, 0)}'] += 1
    return dict(counts)


def tensor_core_ops(ptx: str) -> list:
    """The distinct tensor-core product instructions of the PTX (wgmma / mma shapes and types)."""
    return sorted(set(re.findall(r'\b((?:wgmma\.mma_async|mma)\.sync\.aligned\.[\w.]+)', ptx)))


def ptxas_usage(ptx: str) -> tuple:
    """(registers a thread, spill store bytes) of the PTX assembled for sm_90a by triton's bundled ptxas."""
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'kernel.ptx')
        with open(path, 'w') as f:
            f.write(ptx)
        result = subprocess.run([ptxas, '-v', '--gpu-name', 'sm_90a', path, '-o', os.path.join(folder, 'k.cubin')],
                                capture_output=True, text=True)
    report = result.stdout + result.stderr
    if result.returncode:
        raise RuntimeError(f'ptxas failed: {report[-2000:]}')
    registers = re.search(r'Used (\d+) registers', report)
    spills = re.search(r'(\d+) bytes spill stores', report)
    return int(registers.group(1)), int(spills.group(1)) if spills else 0


#: The 1x1 forward kernels' pointer and integer arguments, in order.
FORWARD_POINTERS = ('x_ptr', 'w_ptr', 'b_ptr', 's_ptr', 'scale_ptr', 'shift_ptr', 'bs_ptr', 'y_ptr')
FORWARD_INTEGERS = ('CIN_UNITS', 'COUT', 'P_UNITS', 'SAMPLES', 'W_STRIDE_UNITS')


def forward_ptx(kernel, dtype: str, positions: int, cin: int, extra_constexprs: dict, cout=None, warps=None) -> str:
    """A 1x1 forward kernel (``tpc._conv1x1_kernel`` or ``tpc._conv1x1_tf32_kernel``; 'fp16' / 'fp32') at (positions,
    cin) with cout (default 2 cin), a bias and a skip path unless ``extra_constexprs`` say otherwise, the launch's
    tiling for them (``warps`` overrides its warps), the weight rows unpadded: every pointer 16-byte aligned, the
    integer arguments divisible by 16 only where they are. With GROUPS among ``extra_constexprs``, cin and cout
    are a group's."""
    tf32 = kernel is tpc._conv1x1_tf32_kernel
    torch_dtype = dict(fp32=torch.float32, fp16=torch.float16)[dtype]
    cout = 2 * cin if cout is None else cout
    block_co, block_p, block_k, tiling_warps, stages = tpc.tiling(cin, cout, positions, torch_dtype, tf32,
                                                                  extra_constexprs.get('ACT', 0) != 0)
    cin_align, p_align = power_of_two_factor(cin), power_of_two_factor(positions)
    values = dict(CIN_UNITS=cin // cin_align, COUT=cout, P_UNITS=positions // p_align, SAMPLES=128,
                  W_STRIDE_UNITS=cin // cin_align)
    arg_types = dict({name: f'*{dtype}' for name in FORWARD_POINTERS}, **{name: 'i32' for name in FORWARD_INTEGERS})
    constexprs = dict(HAS_BIAS=True, HAS_SKIP=True, HAS_SCALE=False, HAS_SHIFT=False, HAS_BRANCH_SCALE=False, ACT=0,
                      GROUPS=1, CIN_ALIGN=cin_align, P_ALIGN=p_align, W_ALIGN=cin_align, BLOCK_CO=block_co,
                      BLOCK_P=block_p, BLOCK_K=block_k)
    constexprs.update(extra_constexprs)
    aligned = FORWARD_POINTERS + tuple(name for name in FORWARD_INTEGERS if values[name] % 16 == 0)
    return hopper_ptx(kernel, arg_types, constexprs, aligned, warps or tiling_warps, stages)


def gelu_forward_ptx(cin: int, cout: int, positions: int, dtype: str, warps=None) -> str:
    """The 1x1 forward kernel with the GELU epilogue, a bias and no skip path (``forward_ptx``)."""
    kernel, extra = (tpc._conv1x1_tf32_kernel, {}) if dtype == 'fp32' else (tpc._conv1x1_kernel, dict(DOT=0))
    return forward_ptx(kernel, dtype, positions, cin, dict(extra, HAS_SKIP=False, ACT=1), cout=cout, warps=warps)


def dt_projection_grads_ptx(dtype: str, channels: int, length: int, rank: int, tiling=None) -> str:
    """The scan backward's dt projection gradients kernel (four routes, batch 128) for ``dtype`` ('fp32', 'fp16',
    'bf16') raw-dt gradients of ``channels`` x ``length`` at dt rank ``rank``, with ``dt_projection_tiling``'s
    tiling for that dtype or ``tiling`` (BLOCK_D, BLOCK_L, R_PAD, warps, stages, SAMPLES)."""
    torch_dtype = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)[dtype]
    block_d, block_l, r_pad, warps, stages, samples = tiling or tcs.dt_projection_tiling(channels, length, rank,
                                                                                          torch_dtype)
    l_align = power_of_two_factor(length)
    arg_types = dict(ddt_ptr=f'*{dtype}', proj_ptr=f'*{dtype}', w_ptr='*fp32', dproj_ptr=f'*{dtype}', dw_ptr='*fp32',
                     Dm='i32', L_UNITS='i32', R='i32', PROJ_ROWS='i32', num_l_blocks='i32', B='i32')
    values = dict(Dm=channels, L_UNITS=length // l_align, R=rank, PROJ_ROWS=rank + 2,
                  num_l_blocks=-(-length // block_l), B=128)
    aligned = ('ddt_ptr', 'proj_ptr', 'w_ptr', 'dproj_ptr', 'dw_ptr') + tuple(
        name for name, value in values.items() if value % 16 == 0)
    constexprs = dict(ROUTES=4, L_ALIGN=l_align, BLOCK_D=block_d, BLOCK_L=block_l, R_PAD=r_pad, SAMPLES=samples)
    return hopper_ptx(tcs._dt_projection_grads_kernel, arg_types, constexprs, aligned, warps, stages)


def scan_backward_ptx(rank: int, length: int, dtype: str, block_d: int, warps: int, r_pad: int) -> str:
    """The fused scan's backward kernel (four routes, d_state 1, TRAIN_BLOCK_L positions a chunk) for a sequence
    of ``length`` positions with ``dtype`` ('fp32' / 'fp16') inputs."""
    pointers = ('x_ptr', 'xt_ptr', 'proj_ptr', 'w_ptr', 'A_ptr', 'D_ptr', 'bias_ptr', 'dy_ptr', 'dyt_ptr',
                'states_ptr', 'dx_ptr', 'ddt_ptr', 'dbc_ptr', 'dA_ptr', 'dD_ptr', 'dbias_ptr')
    arg_types = {name: f'*{dtype}' if name in ('x_ptr', 'xt_ptr', 'proj_ptr', 'ddt_ptr') else '*fp32'
                 for name in pointers}
    arg_types.update(Dm='i32', L_UNITS='i32', num_d_blocks='i32', num_chunks='i32')
    constexprs = dict(ROUTES=4, R=rank, N=1, L_ALIGN=power_of_two_factor(length), BLOCK_D=block_d,
                      BLOCK_L=tcs.TRAIN_BLOCK_L, R_PAD=r_pad)
    return hopper_ptx(tcs._cross_scan_bwd_kernel, arg_types, constexprs, pointers + ('Dm', ), warps, 1)


def wgrad_ptx(cin: int, cout: int, positions: int, dtype: str, p_align=None, groups: int = 1) -> str:
    """The 1x1 convolutions' weight-gradient kernel for a (cout, cin) weight (a group's, of ``groups``) at
    ``positions`` positions, float16 or TF32 ('fp16' / 'fp32') products, its :func:`wgrad_tiling`; the position
    count passed divided by ``p_align`` (default: its power-of-two factor, as the launch does)."""
    torch_dtype = dict(fp32=torch.float32, fp16=torch.float16)[dtype]
    block_co, block_ci, block_p, warps, stages = tpc.wgrad_tiling(cin, cout, positions, torch_dtype)
    p_align = power_of_two_factor(positions) if p_align is None else p_align
    values = dict(CIN=cin, COUT=cout, P_UNITS=positions // p_align, SAMPLES=128, SAMPLES_PER_SPLIT=15)
    arg_types = dict(dy_ptr=f'*{dtype}', x_ptr=f'*{dtype}', dw_ptr='*fp32', **{name: 'i32' for name in values})
    constexprs = dict(DOT=3 if dtype == 'fp32' else 0, GROUPS=groups, P_ALIGN=p_align, BLOCK_CO=block_co,
                      BLOCK_CI=block_ci, BLOCK_P=block_p)
    aligned = ('dy_ptr', 'x_ptr', 'dw_ptr') + tuple(name for name, v in values.items() if v % 16 == 0)
    return hopper_ptx(tpc._conv1x1_wgrad_kernel, arg_types, constexprs, aligned, warps, stages)


def shuffle_copy_ptx(positions: int, dtype: str, scatter: bool, warps=None) -> str:
    """concat_shuffled's plane-copy kernel for planes of ``positions`` elements, 'fp16' / 'fp32', forward
    (``scatter``) or backward, with ``triton_channel_shuffle.TILING`` (its warps unless ``warps``)."""
    from sparx_mm.ops import triton_channel_shuffle as shuffle
    block_r, block_hw, tile_warps = shuffle.shuffle_tiling(128 * 320, positions)  # a DMCA input's planes
    constexprs = dict(GROUPS=3, SCATTER=scatter, HW_ALIGN=power_of_two_factor(positions), BLOCK_R=block_r,
                      BLOCK_HW=block_hw)
    arg_types = dict(src_ptr=f'*{dtype}', dst_ptr=f'*{dtype}', rows='i32', C='i32', start='i32', N='i32',
                     HW_UNITS='i32')
    return hopper_ptx(shuffle._shuffle_copy_kernel, arg_types, constexprs, ('src_ptr', 'dst_ptr'),
                      warps or tile_warps)


def summary(ptx: str) -> str:
    registers, spills = ptxas_usage(ptx)
    copies = ' '.join(f'{name} {n}' for name, n in sorted(global_copies(ptx).items()))
    products = ', '.join(op.split('.aligned.')[1] for op in tensor_core_ops(ptx)) or 'none'
    return f'{registers:>3} registers, spills {spills} B | tensor cores: {products} | {copies}'


def scan_backward_configs(arch: str):
    """(label, scan_backward_ptx's arguments) of each stage's backward kernel, float16 and float32 inputs: the
    tiling :func:`backward_tiling` picks, and the 8-channel multiply-adds where it picks the tensor cores."""
    dims = SparXMamba.arch_zoo[arch]['dims']
    for dim, size in zip(dims, MAP_SIZES):
        rank = math.ceil(dim / 16)
        for dtype, torch_dtype in (('fp16', torch.float16), ('fp32', torch.float32)):
            chosen = tcs.backward_tiling(rank, torch_dtype)
            tilings = [('chosen', chosen)] + ([('multiply-adds', (*tcs.BWD_TILING, 0))] if chosen[2] else [])
            for name, (block_d, warps, r_pad) in tilings:
                yield (f'scan backward d_inner {2 * dim} {size}x{size} rank {rank} {dtype} {name} '
                       f'({block_d} channels, {warps} warps, R_PAD {r_pad})',
                       (rank, size * size, dtype, block_d, warps, r_pad))


def dt_projection_grads_configs(arch: str):
    """(label, dt_projection_grads_ptx's arguments) of each stage's dt projection gradients kernel, float16,
    bfloat16 and float32 raw-dt gradients, with ``dt_projection_tiling``'s tiling."""
    dims = SparXMamba.arch_zoo[arch]['dims']
    for dim, size in zip(dims, MAP_SIZES):
        rank = math.ceil(dim / 16)
        for dtype in ('fp16', 'bf16', 'fp32'):
            yield (f'dt projection gradients d_inner {2 * dim} {size}x{size} rank {rank} {dtype}',
                   (dtype, 2 * dim, size * size, rank))


def pointwise_wgrad_configs(arch: str):
    """(label, wgrad_ptx's arguments) of each stage's four 1x1 convolutions and a DMCA's grouped fusion conv at its
    width (3 groups, 3C -> 2C rounded down to a multiple of 3), float16 and TF32; the label says where the model
    keeps cuDNN's convolution instead (the automatic choice, ``pointwise_conv.triton_is_faster``)."""
    dims = SparXMamba.arch_zoo[arch]['dims']
    for dim, size in zip(dims, MAP_SIZES):
        where = '' if triton_is_faster(size * size) else ' (the model runs cuDNN here)'
        for cin, cout, groups in ((dim, 2 * dim, 1), (2 * dim, dim, 1), (dim, 4 * dim, 1), (4 * dim, dim, 1),
                                  (3 * dim, 2 * dim // 3 * 3, 3)):
            grouped = f' ({groups} groups)' if groups > 1 else ''
            for dtype, name in (('fp16', 'float16'), ('fp32', 'TF32')):
                yield (f'1x1 weight gradient {cin}->{cout}{grouped} {size}x{size} {name}{where}',
                       (cin // groups, cout // groups, size * size, dtype, None, groups))


def pointwise_gelu_configs(arch: str):
    """(label, gelu_forward_ptx's arguments) of each distinct DMCA shortcut projection's 1x1 conv + GELU (the
    model's, at 224 x 224) where the model runs the kernel, float16 and TF32, with the launch's warps and with 4."""
    from sparx_mm.models.sparx.dmca import DMCA
    model = SparXMamba(arch)
    seen = []
    for stage, size in zip(model.layers, MAP_SIZES):
        for module in stage.modules():
            conv = module.shortcut_proj[3] if isinstance(module, DMCA) else None
            if conv is None or not triton_is_faster(size * size) or (conv.in_channels, size) in seen:
                continue
            seen.append((conv.in_channels, size))
            for dtype, name in (('fp16', 'float16'), ('fp32', 'TF32')):
                for warps, warps_text in ((None, "the launch's warps"), (4, '4 warps')):
                    yield (f'1x1 + GELU {conv.in_channels}->{conv.out_channels} {size}x{size} {name}, {warps_text}',
                           (conv.in_channels, conv.out_channels, size * size, dtype, warps))


def channel_shuffle_configs(arch: str):
    """(label, shuffle_copy_ptx's arguments) of the DMCAs' concatenation + shuffle at each stage's map, forward and
    backward, float16 and float32."""
    for size in MAP_SIZES:
        for dtype in ('fp16', 'fp32'):
            for scatter, name in ((True, 'forward'), (False, 'backward')):
                yield f'concat_shuffled {size}x{size} {dtype} {name}', (size * size, dtype, scatter)


#: Each part's configurations and the function compiling one.
PARTS = {'scan-backward': (scan_backward_configs, scan_backward_ptx),
         'dt-projection-grads': (dt_projection_grads_configs, dt_projection_grads_ptx),
         'pointwise-wgrad': (pointwise_wgrad_configs, wgrad_ptx),
         'pointwise-gelu': (pointwise_gelu_configs, gelu_forward_ptx),
         'channel-shuffle': (channel_shuffle_configs, shuffle_copy_ptx)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='t', choices=sorted(SparXMamba.arch_zoo), help="whose layers (default t)")
    parser.add_argument('--part', nargs='+', choices=tuple(PARTS), default=tuple(PARTS))
    args = parser.parse_args()
    print(f'# SparX-{args.arch.upper()} layers compiled for sm_90 (no GPU): registers a thread, spills, tensor-core '
          'products, global accesses by width')
    for part in args.part:
        configs, compile_one = PARTS[part]
        for label, arguments in configs(args.arch):
            print(f'{label}: {summary(compile_one(*arguments))}', flush=True)


if __name__ == '__main__':
    main()
