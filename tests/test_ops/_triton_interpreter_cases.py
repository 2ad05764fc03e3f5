"""Run by test_cross_selective_scan.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter must
be switched on before the kernels are defined): the fused Triton kernels against the reference, forward and
every gradient. Prints one line per case: the case and the largest relative errors."""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import torch  # noqa: E402

from sparx_mm.ops import cross_selective_scan, cross_selective_scan_reference  # noqa: E402

NAMES = ('y', 'dx', 'dproj', 'dt_weight', 'A', 'D', 'dt_bias')
# (batch, channels, H, W, routes, d_state, dt rank): H != W, L = H * W across chunk boundaries (32 with
# gradients) in both directions, channels not a multiple of the channel blocks (16 forward, 8 or 16 backward),
# ranks 2-20 (rank 20: dt on tensor cores in both kernels), every route count, N = 2, a 1 x 1 map; rank 40 on a
# 7 x 7 map (the rank padded to 64: the sequence one 64-position chunk, the backward's 4-warp tiling).
CASES = [(2, 42, 13, 11, 4, 1, 3), (1, 32, 9, 16, 2, 2, 5), (1, 8, 3, 50, 1, 1, 2), (1, 16, 1, 1, 4, 1, 4),
         (1, 24, 6, 5, 4, 1, 20), (1, 24, 7, 7, 4, 1, 40)]


def relative_errors(case):
    b, d, h, w, routes, n, r = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, h, w, generator=g)
    proj = torch.randn(b, routes, r + 2 * n, h * w, generator=g)
    dt_weight = torch.randn(routes, d, r, generator=g) * 0.3
    A = -torch.rand(routes * d, n, generator=g) - 0.1
    D = torch.randn(routes * d, generator=g)
    bias = torch.randn(routes * d, generator=g) - 2
    args = [t.requires_grad_() for t in (x, proj, dt_weight, A, D, bias)]
    upstream = torch.randn(b, d, h, w, generator=g)
    outs = []
    for impl in ('unfused', 'fused'):
        y = cross_selective_scan(*args, routes=routes, impl=impl, scan_backend='reference')
        grads = torch.autograd.grad(y, args, upstream, allow_unused=True)
        outs.append([y.detach()] + [torch.zeros_like(a) if gr is None else gr for gr, a in zip(grads, args)])
    assert torch.equal(outs[0][0], cross_selective_scan_reference(*args, routes=routes))
    return [float((t - e).abs().max() / e.abs().max().clamp_min(1e-12)) for t, e in zip(outs[1], outs[0])]


if __name__ == '__main__':
    from sparx_mm.ops.triton_cross_scan import backward_tiling, training_tiling
    worst = 0.0
    for case in CASES:
        errors = relative_errors(case)
        worst = max(worst, *errors)
        print(case, ' '.join(f'{name} {e:.1e}' for name, e in zip(NAMES, errors)),
              f'backward R_PAD {backward_tiling(case[-1], torch.float32)[2]}',
              f'training chunk {training_tiling(case[-1], torch.float32, case[2] * case[3])[0]}',
              f'dt_dot {training_tiling(case[-1], torch.float32, case[2] * case[3])[3]}', flush=True)
    # float16 inputs (the raw-dt gradient and the dt projection's gradient GEMMs then run in float16, as
    # autocast's own dt projection would; rank 12: the forward's dt projection on tensor cores) against the
    # float32 reference on the same rounded values.
    case = (2, 24, 7, 9, 4, 1, 12)
    b, d, h, w, routes, n, r = case
    g = torch.Generator().manual_seed(4)
    half = [torch.randn(b, d, h, w, generator=g).half(), torch.randn(b, routes, r + 2 * n, h * w, generator=g).half()]
    params = [torch.randn(routes, d, r, generator=g) * 0.3, -torch.rand(routes * d, n, generator=g) - 0.1,
              torch.randn(routes * d, generator=g), torch.randn(routes * d, generator=g) - 2]
    upstream = torch.randn(b, d, h, w, generator=g)
    results = []
    for inputs in (half, [t.float() for t in half]):
        leaves = [t.clone().requires_grad_() for t in inputs + params]
        y = cross_selective_scan(*leaves, routes=routes, impl='fused' if inputs is half else 'unfused',
                                 scan_backend='reference')
        results.append([y.detach()] + list(torch.autograd.grad(y, leaves, upstream)))
    errors = [float((t.float() - e).abs().max() / e.abs().max()) for t, e in zip(*results)]
    dtypes_ok = all(t.dtype == e.dtype for t, e in zip(results[0][1:3], half))
    print('float16', case, ' '.join(f'{name} {e:.1e}' for name, e in zip(NAMES, errors)),
          f'float16 largest {max(errors):.3e}', 'dtypes', 'ok' if dtypes_ok else 'wrong',
          f'backward R_PAD {backward_tiling(r, torch.float16)[2]}',
          f'dt_dot {training_tiling(r, torch.float16, h * w)[3]}', flush=True)
    # Inference (no gradient): the forward kernel's tilings, 16 channels x 32 positions by multiply-adds (short
    # sequences, and 2048 positions at rank 4 in float32), channels not a multiple of the blocks; the dt
    # projection as a tensor-core product: 16 x 32 (rank above 8, and 2160 positions at rank 4 padded to 16 in
    # float16), 32 x 64 (49 positions, rank 36 padded to 64), two routes, float16 inputs. 16-bit inputs are
    # checked against the reference on the same rounded values.
    from sparx_mm.ops.triton_cross_scan import inference_tiling
    for case, dtype in [((2, 40, 13, 11, 4, 1, 3), torch.float32), ((1, 40, 48, 45, 4, 1, 4), torch.float16),
                        ((1, 17, 32, 64, 4, 1, 4), torch.float32),
                        ((2, 40, 13, 11, 4, 1, 12), torch.float32), ((1, 40, 7, 7, 4, 1, 36), torch.float32),
                        ((1, 24, 5, 9, 2, 1, 10), torch.float32), ((2, 40, 13, 11, 4, 1, 12), torch.float16)]:
        b, d, h, w, routes, n, r = case
        g = torch.Generator().manual_seed(3)
        args = [torch.randn(b, d, h, w, generator=g).to(dtype),
                torch.randn(b, routes, r + 2 * n, h * w, generator=g).to(dtype),
                torch.randn(routes, d, r, generator=g) * 0.3, -torch.rand(routes * d, n, generator=g) - 0.1,
                torch.randn(routes * d, generator=g), torch.randn(routes * d, generator=g) - 2]
        with torch.no_grad():
            expected = cross_selective_scan_reference(*[a.float() for a in args], routes=routes)
            error = float((cross_selective_scan(*args, routes=routes, impl='fused') - expected).abs().max()
                          / expected.abs().max())
        worst = max(worst, error)
        block_l, block_d, _, dt_dot = inference_tiling(h * w, r, dtype)
        print('inference', case, str(dtype)[6:], f'{block_d} x {block_l} dt_dot {dt_dot}', f'y {error:.1e}',
              flush=True)
    # The plain Triton selective scan (the unfused path's kernel), two routes, N = 2, L across chunks.
    from sparx_mm.ops import selective_scan_reference
    from sparx_mm.ops.triton_scan import selective_scan_triton
    g = torch.Generator().manual_seed(2)
    scan_args = [torch.randn(2, 16, 150, generator=g), torch.randn(2, 16, 150, generator=g) - 1,
                 -torch.rand(16, 2, generator=g) - 0.1, torch.randn(2, 2, 2, 150, generator=g),
                 torch.randn(2, 2, 2, 150, generator=g), torch.randn(16, generator=g), torch.randn(16, generator=g)]
    scan_args = [t.requires_grad_() for t in scan_args]
    upstream = torch.randn(2, 16, 150, generator=g)
    results = []
    for fn in (selective_scan_reference, selective_scan_triton):
        y = fn(*scan_args, delta_softplus=True)
        results.append([y.detach()] + list(torch.autograd.grad(y, scan_args, upstream)))
    errors = [float((t - e).abs().max() / e.abs().max()) for t, e in zip(results[1], results[0])]
    worst = max(worst, *errors)
    print('selective_scan_triton', ' '.join(f'{e:.1e}' for e in errors), flush=True)
    # The plane transpose (the column-major pair's copies and the merge of the pairs' sums): exact, tiles past
    # both edges (70 x 75 in 32 x 32 tiles), a 1 x 1 map, small planes several to a program (15 planes of 14 x 14,
    # four a program: the last program's partly past the end), adding in float32 and storing in another dtype; its
    # alternating runs (the routes' projections in route order: runs of planes copied and transposed in turn), of
    # large planes and of small ones two to a program. With the default WHOLE_AXIS (64: an axis whole in one tile
    # past its end, 37 of 64) and with TILE (32: such an axis in two tiles).
    from sparx_mm.ops import triton_transpose
    from sparx_mm.ops.triton_transpose import plane_tiling, plane_transpose
    g = torch.Generator().manual_seed(5)
    exact = []
    default = triton_transpose.WHOLE_AXIS
    for whole_axis in sorted({default, triton_transpose.TILE}):
        triton_transpose.WHOLE_AXIS = whole_axis
        assert plane_tiling(15, 14, 14)[0] == 4 and plane_tiling(24, 5, 7, 6)[0] == 2
        assert plane_tiling(6, 37, 70)[1:3] == (64 if whole_axis == 64 else 32, 32)
        assert plane_tiling(2, 70, 75)[3] == (2, 3, 3)
        for shape in [(1, 2, 70, 75), (2, 3, 37, 70), (1, 2, 1, 1), (1, 1, 5, 3), (3, 5, 14, 14)]:
            src = torch.randn(shape, generator=g).half()
            add = torch.randn(shape[:-2] + shape[-2:][::-1], generator=g)
            exact.append(torch.equal(plane_transpose(src), src.transpose(-1, -2)))
            exact.append(torch.equal(plane_transpose(src, add, torch.float16),
                                     (src.transpose(-1, -2).float() + add).half()))
        for src, h, w in ((torch.randn(4, 3, 37, 40, generator=g), 37, 40),
                          (torch.randn(4, 6, 5, 7, generator=g).half(), 5, 7)):
            runs = plane_transpose(src, alternate_every=src.shape[1])
            exact.append(runs.shape == src.shape and torch.equal(runs[0::2], src[0::2])
                         and torch.equal(runs[1::2].view(2, src.shape[1], w, h), src[1::2].transpose(-1, -2)))
    triton_transpose.WHOLE_AXIS = default
    # The helpers around the kernels agree with the route definitions: x^T is the column-major route's sequence,
    # merging a map read in both orders gives twice the map, and each route's projections in route order are
    # its pair's sequence (forwards over rows of x, or of x^T for routes 1 and 3), the reordering its own inverse.
    from sparx_mm.ops import route_sequence, triton_cross_scan as tcs
    x = torch.randn(2, 3, 4, 5, generator=g)
    for routes in (1, 2, 4):
        exact.append(torch.equal(tcs._transposed_copy(x, routes).flatten(2),
                                 route_sequence(x, 1 if routes == 4 else 0, routes)))
        pairs = torch.stack([x.flatten(2), x.transpose(-1, -2).flatten(2)])[:tcs._num_pairs(routes)]
        exact.append(torch.equal(tcs._merge_pairs(pairs, routes, 4, 5), x * (2 if routes == 4 else 1)))
        proj = torch.randn(2, routes, 3, 20, generator=g).half()
        ordered = tcs._to_route_order(proj, routes, 4, 5)
        maps = proj.view(2, routes, 3, 4, 5)
        exact.extend(torch.equal(ordered[:, k], route_sequence(maps[:, k], k % 2 if routes == 4 else 0, routes))
                     for k in range(routes))
        exact.append(torch.equal(tcs._to_route_order(ordered, routes, 5, 4), proj))
    print('TRANSPOSE', 'ok' if all(exact) else exact, flush=True)
    # The dt projection's gradients from one read of ddt (the backward pass's last kernel) against torch's products:
    # several channel blocks (float32: 32 a block; float16: 70 channels in blocks of 64) and position blocks
    # (float32: 32 a block; float16: 150 positions in blocks of 128), ranks padded to 16, 32 and 64, one, two and
    # four routes, B and C rows left alone; float32 (3xTF32 products: exact in the interpreter, float32 rounding
    # on a GPU) and float16 (products in float16 as before, float32 sums). The last three with several samples a
    # program (SAMPLES 2 and 4), the batch not a multiple of them (the missing samples masked).
    for (b, routes, d, length, r, n), dtype, samples in [((2, 4, 70, 150, 6, 1), torch.float32, None),
                                                         ((1, 2, 20, 49, 20, 2), torch.float32, None),
                                                         ((1, 1, 70, 33, 40, 1), torch.float32, None),
                                                         ((2, 4, 70, 150, 12, 1), torch.float16, None),
                                                         ((3, 4, 70, 150, 12, 1), torch.float16, 2),
                                                         ((5, 2, 40, 49, 20, 1), torch.float16, 4),
                                                         ((3, 4, 20, 33, 6, 1), torch.float32, 2)]:
        ddt = torch.randn(b, routes * d, length, generator=g).to(dtype)
        proj = torch.randn(b, routes, r + 2 * n, length, generator=g).to(dtype)
        weight = torch.randn(routes, d, r, generator=g)
        dproj = torch.full_like(proj, 7.0)
        tile = tcs.dt_projection_tiling(d, length, r, dtype)
        if samples is not None:
            tile = tile[:5] + (samples, )
        rule, tcs.dt_projection_tiling = tcs.dt_projection_tiling, lambda *_, tile=tile: tile
        try:
            d_weight = tcs._dt_projection_grads(ddt, proj, weight, dproj)
        finally:
            tcs.dt_projection_tiling = rule
        g_ = ddt.float().view(b, routes, d, length)
        p_ = proj[:, :, :r].float()
        w_ = weight.to(dtype).float()
        expected_w = torch.einsum('bkdl,bkrl->kdr', g_.double(), p_.double())
        expected_p = torch.einsum('kdr,bkdl->bkrl', w_.double(), g_.double())
        errors = [float((d_weight - expected_w).abs().max() / expected_w.abs().max()),
                  float((dproj[:, :, :r].double() - expected_p).abs().max() / expected_p.abs().max())]
        tol = 1e-5 if dtype == torch.float32 else 2e-3
        left_alone = bool((dproj[:, :, r:] == 7.0).all())
        print(f'DT GRADS {(b, routes, d, length, r, n)} {str(dtype)[6:]} tiling {tile} dt_weight {errors[0]:.1e} '
              f'dproj {errors[1]:.1e}{"" if max(errors) <= tol and left_alone else " FAIL"}', flush=True)
    # The custom-op registration (schema, fake tensors for torch.compile, autograd) on a tiny case.
    from sparx_mm.ops import triton_cross_scan
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(1, 8, 3, 5, generator=g), torch.randn(1, 4, 4, 15, generator=g),
            torch.randn(4, 8, 2, generator=g), -torch.rand(32, 1, generator=g), torch.randn(32, generator=g),
            torch.randn(32, generator=g)]
    report = torch.library.opcheck(triton_cross_scan._cross_scan_fwd.op,
                                   [t.requires_grad_() for t in args] + [4, triton_cross_scan.TRAIN_BLOCK_L, 16, 4,
                                                                          False])
    print('OPCHECK', 'ok' if set(report.values()) == {'SUCCESS'} else report)
    print(f'WORST {worst:.3e}')
    sys.exit(0)
