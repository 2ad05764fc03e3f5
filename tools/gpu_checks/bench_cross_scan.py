"""Time SS2D's scan core on the GPU: the fused Triton kernel against the unfused composition.

    python tools/gpu_checks/bench_cross_scan.py [--batch 128] [--infer-tiling BLOCK_L BLOCK_D WARPS DT_DOT]
        [--train-tiling BLOCK_L BLOCK_D WARPS] [--bwd-tiling BLOCK_D WARPS]

For SparX-T's four stage sizes at 224 x 224 (d_inner 192 / 384 / 640 / 1024 on 56 / 28 / 14 / 7 maps, dt
ranks 6 / 12 / 20 / 32), fp32 and fp16 inputs: milliseconds of the forward pass and of forward + backward,
for the fused kernel (``impl='fused'``) and for cross-scan copies + the Triton selective scan + merge
(``impl='unfused', scan_backend='triton'``). The options override the fused kernel's tiling.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from sparx_mm.ops import cross_selective_scan  # noqa: E402
from sparx_mm.ops import triton_cross_scan  # noqa: E402
from gpu_common import timed  # noqa: E402

STAGES = [(192, 56, 6), (384, 28, 12), (640, 14, 20), (1024, 7, 32)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--train-tiling', type=int, nargs=3, metavar=('BLOCK_L', 'BLOCK_D', 'WARPS'), default=None,
                        help="the fused kernels' chunk length and the forward kernel's channels per program and warps "
                             'when gradients follow, instead of the defaults')
    parser.add_argument('--bwd-tiling', type=int, nargs=2, metavar=('BLOCK_D', 'WARPS'), default=None,
                        help="the backward kernel's channels per program and warps")
    parser.add_argument('--infer-tiling', type=int, nargs=4, metavar=('BLOCK_L', 'BLOCK_D', 'WARPS', 'DT_DOT'),
                        default=None, help='one forward tiling for every size when no gradient follows, instead of '
                        "inference_tiling's; DT_DOT 1 runs the dt projection on tensor cores (16 or more channels "
                        'and positions, float32 / float16 inputs), 0 as multiply-adds')
    args = parser.parse_args()
    if args.train_tiling:
        triton_cross_scan.TRAIN_BLOCK_L = args.train_tiling[0]
        triton_cross_scan.TRAIN_FWD_TILING = tuple(args.train_tiling[1:])
    if args.bwd_tiling:
        triton_cross_scan.BWD_TILING = tuple(args.bwd_tiling)
    if args.infer_tiling:
        triton_cross_scan.inference_tiling = lambda length, rank, dtype: (*args.infer_tiling[:3],
                                                                          bool(args.infer_tiling[3]))
    print(f'# {torch.cuda.get_device_name()}, batch {args.batch}; training: BLOCK_L {triton_cross_scan.TRAIN_BLOCK_L}, '
          f'(BLOCK_D, warps) forward {triton_cross_scan.TRAIN_FWD_TILING} backward {triton_cross_scan.BWD_TILING}; '
          f'inference (BLOCK_L, BLOCK_D, warps, dt_dot) {args.infer_tiling or "by size (inference_tiling)"}; ms')
    print(f'{"d_inner":>7} {"HxW":>6} {"dtype":>5} {"fused fwd":>10} {"unfused fwd":>12} {"fused f+b":>10} '
          f'{"unfused f+b":>12}')
    device = torch.device('cuda')
    for channels, size, rank in STAGES:
        for dtype in (torch.float32, torch.float16):
            g = torch.Generator(device='cpu').manual_seed(0)
            b, k = args.batch, 4
            x = torch.randn(b, channels, size, size, generator=g).to(device, dtype).requires_grad_()
            proj = torch.randn(b, k, rank + 2, size * size, generator=g).to(device, dtype).requires_grad_()
            params = [torch.randn(k, channels, rank, generator=g) * rank ** -0.5,
                      -torch.rand(k * channels, 1, generator=g) - 0.1, torch.randn(k * channels, generator=g),
                      torch.randn(k * channels, generator=g) - 3]
            params = [p.to(device).requires_grad_() for p in params]
            upstream = torch.randn(b, channels, size, size, device=device)
            row = []
            for mode in ('fwd', 'fwd+bwd'):
                for fused in (True, False):
                    def run():
                        with torch.set_grad_enabled(mode != 'fwd'):
                            if fused:
                                y = cross_selective_scan(x, proj, *params, impl='fused')
                            else:
                                y = cross_selective_scan(x, proj, *params, impl='unfused', scan_backend='triton')
                            if mode != 'fwd':
                                y.backward(upstream)
                    row.append(timed(run)[0])
            print(f'{channels:>7} {size:>3}x{size:<2} {str(dtype)[6:]:>5} {row[0]:>10.2f} {row[1]:>12.2f} '
                  f'{row[2]:>10.2f} {row[3]:>12.2f}', flush=True)


if __name__ == '__main__':
    main()
