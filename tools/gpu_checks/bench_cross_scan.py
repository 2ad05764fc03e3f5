"""Time SS2D's scan core on the GPU: the fused Triton kernel against the unfused composition.

    python tools/gpu_checks/bench_cross_scan.py [--arch t] [--batch 128] [--stages N ...] [--sweep-inference]
        [--sweep-training] [--fused-only] [--sweep-dt-grads]
        [--infer-tiling BLOCK_L BLOCK_D WARPS DT_DOT] [--train-tiling BLOCK_L BLOCK_D WARPS] [--train-fma]
        [--bwd-tiling BLOCK_D WARPS] [--bwd-dot-tiling BLOCK_D WARPS] [--bwd-fma] [--dt-dot-min-rank R]

For the four stage sizes of SparX-T (or ``--arch s`` / ``b``) at 224 x 224 (d_inner twice the stage width on
56 / 28 / 14 / 7 maps, dt rank the width / 16 rounded up; SparX-T: 192 / 384 / 640 / 1024 channels, ranks 6 /
12 / 20 / 32), fp32 and fp16 inputs: milliseconds of the forward pass and of forward + backward, for the fused
kernel (``impl='fused'``) and for cross-scan copies + the Triton selective scan + merge (``impl='unfused',
scan_backend='triton'``; ``--fused-only`` leaves it out, "-"). The tiling options override the fused kernel's;
``--dt-dot-min-rank`` sets the lowest dt rank projected on tensor cores, forward and backward (defaults 9 and 17).
``--sweep-inference`` times instead the forward pass without autograd under each candidate inference tiling, the
dt projection by multiply-adds and on tensor cores, next to the one
:func:`~sparx_mm.ops.triton_cross_scan.inference_tiling` picks (the sweep behind that function's docstring).
``--sweep-training`` times forward + backward (float16 inputs, the training tilings) under each of
``TRAINING_VARIANTS``, the defaults with one setting moved. ``--sweep-dt-grads`` times the scan backward's last
kernel alone, the dt projection's gradients from the raw-dt gradient (float16, the kernel and the sum of its
partial products), under each of ``DT_GRADS_TILINGS`` next to
:func:`~sparx_mm.ops.triton_cross_scan.dt_projection_tiling`'s choice, each result checked against the choice's.
"""
import argparse
import math
import os
import sys
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.models.backbones.sparx_mamba import SparXMamba  # noqa: E402
from sparx_mm.ops import cross_selective_scan  # noqa: E402
from sparx_mm.ops import triton_cross_scan  # noqa: E402
from check_kernels import make_cross_inputs  # noqa: E402
from gpu_common import timed  # noqa: E402

#: (BLOCK_L, BLOCK_D, warps, dt_dot) candidates of --sweep-inference (dt_dot needs 16 or more of both blocks).
SWEEP_TILINGS = [(64, 32, 4, False), (64, 16, 4, False), (32, 16, 4, False), (32, 16, 4, True), (64, 16, 4, True),
                 (32, 32, 4, True), (64, 32, 4, True), (16, 32, 4, True)]


def stage_sizes(arch):
    """(d_inner, map size, dt rank) of each stage's SS2D at 224 x 224."""
    dims = SparXMamba.arch_zoo[arch]['dims']
    return [(2 * dim, size, math.ceil(dim / 16)) for dim, size in zip(dims, (56, 28, 14, 7))]


def chosen_stages(arch, stage_numbers=None):
    """:func:`stage_sizes` of the stages numbered in ``stage_numbers`` (1-4; all where None), in stage order."""
    return [sizes for number, sizes in enumerate(stage_sizes(arch), 1) if not stage_numbers or number in stage_numbers]


def scan_inputs(channels, size, rank, dtype, batch, device, requires_grad):
    """The keyword inputs of a four-route scan core (check_kernels.py's, fixed seed)."""
    inputs = make_cross_inputs(batch, channels, size, size, 4, 1, rank, dtype, device)
    return {name: t.requires_grad_(requires_grad) for name, t in inputs.items()}


#: --sweep-training's variants: (label, triton_cross_scan settings that differ from the defaults), one setting
#: moved at a time (the prefetching kernels' registers differ from those the defaults were chosen with). 'wide':
#: the backward's tiling where the dt rank pads to 64 (SparX-S's and B's stage 4; with 2 warps, 'wide 16x2', it
#: spills 600 / 660 bytes a thread on sm_90), 'one chunk off' / 'fwd mid 16x4': the rules for 7 x 7 and 14 x 14
#: maps (:func:`~sparx_mm.ops.triton_cross_scan.training_tiling`) undone.
TRAINING_VARIANTS = [
    ('default', {}),
    ('chunk 64', dict(TRAIN_BLOCK_L=64)),
    ('one chunk off', dict(TRAIN_ONE_CHUNK_L=0)),
    ('fwd 32x4', dict(TRAIN_FWD_TILING=(32, 4))),
    ('fwd 16x2', dict(TRAIN_FWD_TILING=(16, 2))),
    ('fwd mid 16x4', dict(TRAIN_FWD_MID_TILING=(16, 4))),
    ('bwd fma 16x4', dict(BWD_TILING=(16, 4))),
    ('bwd fma 8x1', dict(BWD_TILING=(8, 1))),
    ('bwd dot 16x4', dict(BWD_DOT_TILING=(16, 4))),
    ('bwd dot 16x8', dict(BWD_DOT_TILING=(16, 8))),
    ('bwd dot 32x4', dict(BWD_DOT_TILING=(32, 4))),
    ('wide 16x2', dict(BWD_DOT_WIDE_TILING=(16, 2))),
    ('wide 16x8', dict(BWD_DOT_WIDE_TILING=(16, 8))),
    ('bwd dot rank 9', dict(BWD_DT_DOT_MIN_RANK=9)),
    ('dot from rank 1', dict(DT_DOT_MIN_RANK=1, BWD_DT_DOT_MIN_RANK=1)),
]


#: --sweep-dt-grads' candidates (BLOCK_D, warps, stages, SAMPLES), BLOCK_L and R_PAD as the rule sets them:
#: samples a program (their partial weight-gradient products summed in the program) and warps and stages whose
#: shared memory fits an H100's (up to 112 KB at 196 positions; some spill registers there: hopper_codegen.py).
DT_GRADS_TILINGS = [(64, 4, 3, 1), (64, 8, 3, 1), (64, 4, 3, 2), (64, 8, 3, 2), (64, 8, 2, 2), (64, 8, 2, 4)]


@contextmanager
def tiling_settings(settings):
    """triton_cross_scan's module attributes (tilings, thresholds, tiling rules) set to ``settings`` inside the
    block, restored after."""
    saved = {name: getattr(triton_cross_scan, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(triton_cross_scan, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(triton_cross_scan, name, value)


def sweep_inference(arch, batch, device, stage_numbers=None):
    """Forward ms without autograd for every SWEEP_TILINGS entry (dt_dot ones with float32 / float16 inputs),
    and the automatic choice."""
    chosen_rule = triton_cross_scan.inference_tiling
    print('inference tilings (BLOCK_L, BLOCK_D, warps): ms with dt by multiply-adds (fma) / on tensor cores (dot)')
    for channels, size, rank in chosen_stages(arch, stage_numbers):
        for dtype in (torch.float32, torch.float16):
            inputs = scan_inputs(channels, size, rank, dtype, batch, device, False)

            def run():
                with torch.no_grad():
                    cross_selective_scan(**inputs, impl='fused')
            cells = [f'chosen {chosen_rule(size * size, rank, dtype)} {timed(run)[0]:.3f}']
            for tiling in SWEEP_TILINGS:
                with tiling_settings(dict(inference_tiling=lambda length, r, d, tiling=tiling: tiling)):
                    cells.append(f'{"dot" if tiling[3] else "fma"} {tiling[:3]} {timed(run)[0]:.3f}')
            print(f'{channels:>5} {size:>2}x{size:<2} rank {rank:>2} {str(dtype)[6:]:>7} | ' + ' | '.join(cells),
                  flush=True)


def sweep_training(arch, batch, device, dtype=torch.float16, stage_numbers=None):
    """Forward + backward ms (the training tilings) under every TRAINING_VARIANTS entry, float16 inputs."""
    print(f'training variants, {str(dtype)[6:]} inputs: forward + backward ms')
    print(f'{"d_inner":>7} {"HxW":>6} rank | ' + ' | '.join(f'{label:>15}' for label, _ in TRAINING_VARIANTS))
    for channels, size, rank in chosen_stages(arch, stage_numbers):
        inputs = scan_inputs(channels, size, rank, dtype, batch, device, True)
        upstream = torch.randn(batch, channels, size, size, device=device)

        def run():
            cross_selective_scan(**inputs, impl='fused').backward(upstream)
        cells = []
        for _label, settings in TRAINING_VARIANTS:
            with tiling_settings(settings):
                cells.append(f'{timed(run)[0]:>15.3f}')
        print(f'{channels:>7} {size:>3}x{size:<2} {rank:>4} | ' + ' | '.join(cells), flush=True)


def sweep_dt_grads(arch, batch, device, dtype=torch.float16, stage_numbers=None):
    """ms of ``_dt_projection_grads`` (kernel + partial sums) at each stage under every DT_GRADS_TILINGS entry and
    the rule's choice; a tiling whose weight gradient or dproj differs from the choice's by more than float16
    rounding is marked."""
    rule = triton_cross_scan.dt_projection_tiling
    print(f'dt projection gradients, {str(dtype)[6:]} ddt: ms (kernel + sums) by (BLOCK_D, warps, stages, SAMPLES); '
          '"!" marks a result off the chosen tiling\'s')
    for channels, size, rank in chosen_stages(arch, stage_numbers):
        length = size * size
        inputs = scan_inputs(channels, size, rank, dtype, batch, device, False)
        proj, weight = inputs['proj'], inputs['dt_weight']
        g = torch.Generator(device='cpu').manual_seed(channels)
        ddt = torch.randn(batch, 4 * channels, length, generator=g).to(device, dtype)
        dproj = torch.empty_like(proj)

        def run():
            return triton_cross_scan._dt_projection_grads(ddt, proj, weight, dproj)
        chosen = rule(channels, length, rank, dtype)
        expected_w, expected_p = run().clone(), dproj.clone()
        cells = [f'chosen {(chosen[0], *chosen[3:])} {timed(run)[0]:.3f}']
        for block_d, warps, stages, samples in DT_GRADS_TILINGS:
            tiling = (block_d, chosen[1], chosen[2], warps, stages, samples)
            with tiling_settings(dict(dt_projection_tiling=lambda *_, tiling=tiling: tiling)):
                ms = timed(run)[0]
                w_err = float((run() - expected_w).abs().max() / expected_w.abs().max())
                p_err = float((dproj - expected_p).abs().max().float() / expected_p.abs().max().float())
            cells.append(f'{(block_d, warps, stages, samples)} {ms:.3f}{"!" if max(w_err, p_err) > 2e-3 else ""}')
        print(f'{channels:>5} {size:>2}x{size:<2} rank {rank:>2} | ' + ' | '.join(cells), flush=True)


def apply_tiling_options(args):
    """Set triton_cross_scan's tilings as the options ask (for this process)."""
    if args.train_tiling:
        triton_cross_scan.TRAIN_BLOCK_L = args.train_tiling[0]
        triton_cross_scan.TRAIN_FWD_TILING = triton_cross_scan.TRAIN_FWD_MID_TILING = tuple(args.train_tiling[1:])
        triton_cross_scan.TRAIN_ONE_CHUNK_L = 0  # one tiling at every length
    if args.train_fma:
        triton_cross_scan.TRAIN_DT_DOT = False
    if args.bwd_tiling:
        triton_cross_scan.BWD_TILING = tuple(args.bwd_tiling)
    if args.bwd_dot_tiling:
        triton_cross_scan.BWD_DOT_TILING = triton_cross_scan.BWD_DOT_WIDE_TILING = tuple(args.bwd_dot_tiling)
    if args.bwd_fma:
        triton_cross_scan.BWD_DT_DOT = False
    if getattr(args, 'dt_dot_min_rank', None):
        triton_cross_scan.DT_DOT_MIN_RANK = args.dt_dot_min_rank
        triton_cross_scan.BWD_DT_DOT_MIN_RANK = args.dt_dot_min_rank
    if args.infer_tiling:
        triton_cross_scan.inference_tiling = lambda length, rank, dtype: (*args.infer_tiling[:3],
                                                                          bool(args.infer_tiling[3]))


def timing_cells(row) -> str:
    """The four timing columns (fused / unfused forward, fused / unfused forward + backward), ms; a column not
    timed (NaN: ``--fused-only``) prints "-"."""
    return ' '.join(f'{ms:>{width}.2f}' if ms == ms else f'{"-":>{width}}' for ms, width in zip(row, (10, 12, 10, 12)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--arch', default='t', choices=sorted(SparXMamba.arch_zoo),
                        help='whose stage sizes (default t)')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--stages', type=int, nargs='+', choices=(1, 2, 3, 4), default=None, metavar='N',
                        help='time these stages only (1-4; default all)')
    parser.add_argument('--sweep-inference', action='store_true',
                        help='time the candidate inference tilings instead (see the module doc)')
    parser.add_argument('--train-tiling', type=int, nargs=3, metavar=('BLOCK_L', 'BLOCK_D', 'WARPS'), default=None,
                        help="the fused kernels' chunk length and the forward kernel's channels per program and warps "
                             'when gradients follow, one tiling at every length instead of the defaults')
    parser.add_argument('--train-fma', action='store_true',
                        help='the forward kernel projects dt by multiply-adds when gradients follow, instead of on '
                             'tensor cores where training_tiling puts it')
    parser.add_argument('--bwd-tiling', type=int, nargs=2, metavar=('BLOCK_D', 'WARPS'), default=None,
                        help="the backward kernel's channels per program and warps where it recomputes dt by "
                             'multiply-adds')
    parser.add_argument('--bwd-dot-tiling', type=int, nargs=2, metavar=('BLOCK_D', 'WARPS'), default=None,
                        help="the same where it recomputes dt on tensor cores (16 or more channels), at every rank")
    parser.add_argument('--bwd-fma', action='store_true',
                        help='the backward kernel recomputes dt by multiply-adds at every rank, instead of on '
                             'tensor cores where backward_tiling puts it')
    parser.add_argument('--infer-tiling', type=int, nargs=4, metavar=('BLOCK_L', 'BLOCK_D', 'WARPS', 'DT_DOT'),
                        default=None, help='one forward tiling for every size when no gradient follows, instead of '
                        "inference_tiling's; DT_DOT 1 runs the dt projection on tensor cores (16 or more channels "
                        'and positions, float32 / float16 inputs), 0 as multiply-adds')
    parser.add_argument('--dt-dot-min-rank', type=int, default=None, metavar='R',
                        help='the lowest dt rank the kernels project on tensor cores (float32 / float16 inputs), '
                             'instead of DT_DOT_MIN_RANK and BWD_DT_DOT_MIN_RANK')
    parser.add_argument('--sweep-training', action='store_true',
                        help='time forward + backward under each of TRAINING_VARIANTS instead (float16 inputs)')
    parser.add_argument('--sweep-dt-grads', action='store_true',
                        help="time the dt projection gradients' kernel under each of DT_GRADS_TILINGS instead")
    parser.add_argument('--fused-only', action='store_true',
                        help='time the fused kernels only (the unfused columns print "-")')
    args = parser.parse_args()
    if args.sweep_inference and args.infer_tiling:
        parser.error('--sweep-inference times its own inference tilings: leave out --infer-tiling')
    training_options = ('train_tiling', 'train_fma', 'bwd_tiling', 'bwd_dot_tiling', 'bwd_fma', 'dt_dot_min_rank')
    if args.sweep_training and any(getattr(args, name) for name in training_options):
        parser.error('--sweep-training times its own training tilings: leave out the tiling options')
    apply_tiling_options(args)
    dot_from = f'from rank {triton_cross_scan.DT_DOT_MIN_RANK}'
    bwd_dot_from = f'from rank {triton_cross_scan.BWD_DT_DOT_MIN_RANK}'
    print(f'# {torch.cuda.get_device_name()}, SparX-{args.arch.upper()} stage sizes, batch {args.batch}; training: '
          f'BLOCK_L {triton_cross_scan.TRAIN_BLOCK_L} ({triton_cross_scan.TRAIN_ONE_CHUNK_L} for short sequences '
          f'at padded rank {triton_cross_scan.BWD_DOT_WIDE_R_PAD}), (BLOCK_D, warps) forward '
          f'{triton_cross_scan.TRAIN_FWD_TILING} ({triton_cross_scan.TRAIN_FWD_MID_TILING} at '
          f'{triton_cross_scan.TRAIN_FWD_MID_LENGTHS} positions) '
          f'(dt {"on tensor cores " + dot_from if triton_cross_scan.TRAIN_DT_DOT else "by multiply-adds"}) '
          f'backward {triton_cross_scan.BWD_TILING} (multiply-adds) / {triton_cross_scan.BWD_DOT_TILING} '
          f'({triton_cross_scan.BWD_DOT_WIDE_TILING} at padded rank {triton_cross_scan.BWD_DOT_WIDE_R_PAD}; dt on '
          f'tensor cores{" " + bwd_dot_from if triton_cross_scan.BWD_DT_DOT else ": off"}); '
          f'inference (BLOCK_L, BLOCK_D, warps, dt_dot) {args.infer_tiling or "by size (inference_tiling)"}; ms')
    device = torch.device('cuda')
    if args.sweep_inference or args.sweep_training or args.sweep_dt_grads:
        if args.sweep_dt_grads:
            sweep_dt_grads(args.arch, args.batch, device, stage_numbers=args.stages)
        if args.sweep_inference:
            sweep_inference(args.arch, args.batch, device, stage_numbers=args.stages)
        if args.sweep_training:
            sweep_training(args.arch, args.batch, device, stage_numbers=args.stages)
        return
    print(f'{"d_inner":>7} {"HxW":>6} {"dtype":>5} {"fused fwd":>10} {"unfused fwd":>12} {"fused f+b":>10} '
          f'{"unfused f+b":>12}')
    for channels, size, rank in chosen_stages(args.arch, args.stages):
        for dtype in (torch.float32, torch.float16):
            inputs = scan_inputs(channels, size, rank, dtype, args.batch, device, True)
            upstream = torch.randn(args.batch, channels, size, size, device=device)
            row = []
            for mode in ('fwd', 'fwd+bwd'):
                for fused in (True, False):
                    if args.fused_only and not fused:
                        row.append(float('nan'))
                        continue
                    def run():
                        with torch.set_grad_enabled(mode != 'fwd'):
                            if fused:
                                y = cross_selective_scan(**inputs, impl='fused')
                            else:
                                y = cross_selective_scan(**inputs, impl='unfused', scan_backend='triton')
                            if mode != 'fwd':
                                y.backward(upstream)
                    row.append(timed(run)[0])
            print(f'{channels:>7} {size:>3}x{size:<2} {str(dtype)[6:]:>5} ' + timing_cells(row), flush=True)


if __name__ == '__main__':
    main()
