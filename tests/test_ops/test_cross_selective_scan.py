"""cross_selective_scan: the reference against VMamba's explicit composition, the route helpers, the CPU
dispatch and errors, and the fused Triton kernels under Triton's CPU interpreter."""
import re

import pytest
import torch

from sparx_mm.ops import (cross_merge, cross_scan, cross_selective_scan, cross_selective_scan_reference,
                          route_sequence, route_to_positions, selective_scan_reference)

from .helpers import run_in_triton_interpreter


def _inputs(b=2, d=6, h=3, w=5, routes=4, n=1, r=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, h, w, generator=g, dtype=dtype)
    proj = torch.randn(b, routes, r + 2 * n, h * w, generator=g, dtype=dtype)
    dt_weight = torch.randn(routes, d, r, generator=g, dtype=dtype)
    A = -torch.rand(routes * d, n, generator=g, dtype=dtype)
    D = torch.randn(routes * d, generator=g, dtype=dtype)
    bias = torch.randn(routes * d, generator=g, dtype=dtype)
    return x, proj, dt_weight, A, D, bias


def _explicit_four_routes(x, x_proj_weight, dt_weight, A, D, bias):
    """VMamba's SS2D core as the official code writes it: materialise the four routes, project each route's
    sequence, scan, merge."""
    b, d, h, w = x.shape
    xs = cross_scan(x)
    x_dbl = torch.einsum('bkdl,kcd->bkcl', xs, x_proj_weight)
    r = dt_weight.shape[2]
    n = A.shape[1]
    dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
    dts = torch.einsum('bkrl,kdr->bkdl', dts, dt_weight)
    ys = selective_scan_reference(xs.reshape(b, 4 * d, -1), dts.reshape(b, 4 * d, -1), A, bs.contiguous(),
                                  cs.contiguous(), D, bias, True)
    return cross_merge(ys.view(b, 4, d, -1), height=h, width=w).view(b, d, h, w)


def test_reference_equals_projecting_the_materialised_routes():
    x, _, dt_weight, A, D, bias = _inputs(n=2, r=3)
    x_proj_weight = torch.randn(4, 3 + 4, x.shape[1], dtype=x.dtype)
    # The projection on the map, at row-major positions, as SS2D computes it.
    proj = torch.einsum('kcd,bdl->bkcl', x_proj_weight, x.flatten(2))
    torch.testing.assert_close(cross_selective_scan_reference(x, proj, dt_weight, A, D, bias),
                               _explicit_four_routes(x, x_proj_weight, dt_weight, A, D, bias))


@pytest.mark.parametrize('routes', [1, 2, 4])
def test_route_helpers(routes):
    x = torch.arange(2 * 3 * 4.).view(1, 2, 3, 4)
    for k in range(routes):
        seq = route_sequence(x, k, routes)
        assert torch.equal(route_to_positions(seq, k, routes, 3, 4), x)
        if routes == 4:
            assert torch.equal(seq, cross_scan(x)[:, k])
    if routes == 2:
        assert torch.equal(route_sequence(x, 1, 2), x.flatten(2).flip(-1))


@pytest.mark.parametrize('routes', [1, 2])
def test_fewer_routes_scan_the_row_major_sequence(routes):
    x, proj, dt_weight, A, D, bias = _inputs(routes=routes)
    b, d, h, w = x.shape
    y = cross_selective_scan_reference(x, proj, dt_weight, A, D, bias, routes=routes)
    total = torch.zeros_like(y)
    for k in range(routes):
        flip = (lambda t: t.flip(-1)) if k == 1 else (lambda t: t)
        dts = torch.einsum('brl,dr->bdl', flip(proj[:, k, :2]), dt_weight[k])
        seq = selective_scan_reference(flip(x.flatten(2)), dts, A[k * d:(k + 1) * d],
                                       flip(proj[:, k:k + 1, 2:3]).contiguous(),
                                       flip(proj[:, k:k + 1, 3:4]).contiguous(), D[k * d:(k + 1) * d],
                                       bias[k * d:(k + 1) * d], True)
        total += flip(seq).view(b, d, h, w)
    torch.testing.assert_close(y, total)


def test_cpu_dispatch_uses_the_reference():
    args = _inputs(dtype=torch.float32)
    assert torch.equal(cross_selective_scan(*args), cross_selective_scan_reference(*args))


def test_forcing_the_fused_kernel_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    args = _inputs(dtype=torch.float32)
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        cross_selective_scan(*args, impl='fused')
    monkeypatch.setenv('SPARX_CROSS_SCAN', 'fused')
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        cross_selective_scan(*args)


def test_unknown_implementation_is_a_clear_error(monkeypatch):
    args = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"unknown implementation 'fast' \(from the impl argument\)"):
        cross_selective_scan(*args, impl='fast')
    monkeypatch.setenv('SPARX_CROSS_SCAN', 'cuda')
    with pytest.raises(ValueError, match="unknown implementation 'cuda' .*SPARX_CROSS_SCAN.*'fused', 'unfused'"):
        cross_selective_scan(*args)


@pytest.mark.parametrize('change,match', [
    (dict(routes=3), 'routes must be one of'),
    (dict(x=torch.zeros(2, 6, 15)), 'x must be a 4-D tensor'),
    (dict(proj=torch.zeros(2, 4, 4, 14)), r'proj must be \(B, K, R \+ 2N, H\*W\) = \(2, 4, 4, 15\)'),
    (dict(dt_weight=torch.zeros(4, 5, 2)), r'dt_weight must be \(K, D, R\)'),
    (dict(A=torch.zeros(23, 1)), r'A must be \(K\*D, N\) = \(24, N\)'),
    (dict(D=torch.zeros(6)), r'D must be \(K\*D,\) = \(24,\)'),
    (dict(dt_bias=torch.zeros(24, 1)), r'dt_bias must be'),
])
def test_bad_inputs(change, match):
    names = ('x', 'proj', 'dt_weight', 'A', 'D', 'dt_bias')
    kwargs = dict(zip(names, _inputs(dtype=torch.float32)))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        cross_selective_scan(**kwargs)


def test_fused_triton_kernels_match_the_reference_in_the_interpreter():
    stdout = run_in_triton_interpreter('_triton_interpreter_cases.py', 900)
    worst = float(re.search(r'^WORST (\S+)', stdout, re.M).group(1))
    assert worst < 1e-5, stdout
    assert 'OPCHECK ok' in stdout, stdout
    assert 'selective_scan_triton' in stdout, stdout
    # the dt projection's gradients kernel on its own: seven cases (three with several samples a program), each
    # within its dtype's tolerance
    assert stdout.count('DT GRADS') == 7 and 'FAIL' not in stdout, stdout
    for samples_tiling in (', 2)', ', 4)'):
        assert any(line.startswith('DT GRADS') and samples_tiling + ' dt_weight' in line
                   for line in stdout.splitlines()), stdout
    assert stdout.count('inference') == 7, stdout
    # every inference tiling ran, both ways of projecting dt (the tensor-core product: float32 and float16)
    for tiling in ('float32 16 x 32 dt_dot False', 'float32 16 x 32 dt_dot True', 'float32 32 x 64 dt_dot True',
                   'float16 16 x 32 dt_dot True'):
        assert tiling in stdout, stdout
    # a long float16 sequence below rank 9: the product, the rank padded to 16
    assert re.search(r'^inference \(1, 40, 48, 45, 4, 1, 4\) float16 16 x 32 dt_dot True', stdout, re.M), stdout
    # float16 inputs: the gradients in float16 (as the inputs), within its rounding of the float32 reference
    assert float(re.search(r'float16 largest (\S+)', stdout).group(1)) < 3e-3, stdout
    assert 'dtypes ok' in stdout, stdout
    # Training, rank 20 (float32): both kernels project dt on tensor cores, the backward's rank padded to 32; rank
    # 12 (float16): the forward pass on tensor cores, the backward by multiply-adds; below rank 9 multiply-adds.
    assert re.search(r'^\(1, 24, 6, 5, 4, 1, 20\) .* backward R_PAD 32 training chunk 32 dt_dot True$', stdout,
                     re.M), stdout
    # rank 40 on 49 positions: padded to 64, one 64-position chunk
    assert re.search(r'^\(1, 24, 7, 7, 4, 1, 40\) .* backward R_PAD 64 training chunk 64 dt_dot True$', stdout,
                     re.M), stdout
    assert re.search(r'^float16 .* backward R_PAD 0 dt_dot True$', stdout, re.M), stdout
    assert stdout.count('backward R_PAD 0 training chunk 32 dt_dot False\n') == 4, stdout
    assert 'TRANSPOSE ok' in stdout, stdout
    # six training cases, the float16 one, seven inference ones, the plain scan, the transposes, seven dt
    # projection gradients cases, the custom-op check, the summary
    assert stdout.count('\n') == 25, stdout


class _FusedCalled(Exception):
    pass


@pytest.mark.parametrize('grad,size,dtype,expected', [
    (False, (8, 8), torch.float32, 'fused'), (False, (8, 8), torch.bfloat16, 'fused'),
    (True, (8, 8), torch.float32, 'fused'), (False, (65, 64), torch.float32, 'fused'),
    (False, (8, 8), torch.float64, 'unfused')])
def test_automatic_choice_where_triton_runs(grad, size, dtype, expected, monkeypatch):
    """With triton usable (as on CUDA): the fused kernels at any map size, with or without gradients; the unfused
    composition for float64 inputs."""
    from sparx_mm.ops import gpu_backends, triton_cross_scan
    monkeypatch.delenv('SPARX_CROSS_SCAN', raising=False)
    monkeypatch.setattr(gpu_backends, 'triton_usable', lambda x: True)

    def fused(*args):
        raise _FusedCalled

    monkeypatch.setattr(triton_cross_scan, 'cross_selective_scan_triton', fused)
    args = _inputs(dtype=torch.float32, h=size[0], w=size[1])
    args = (args[0].to(dtype), args[1].to(dtype)) + args[2:]
    if grad:
        args[0].requires_grad_()
    if expected == 'fused':
        with pytest.raises(_FusedCalled):
            cross_selective_scan(*args)
    else:
        assert torch.equal(cross_selective_scan(*args), cross_selective_scan_reference(*args))
        if grad:
            cross_selective_scan(*args).sum().backward()
            assert args[0].grad is not None


@pytest.mark.parametrize('routes', [1, 2])
def test_pair_layout_helpers_of_the_fused_kernels(routes):
    """The fused kernels read the routes' projections in route order: with one or two routes that is proj itself
    (four routes: a Triton kernel reorders them, as _triton_interpreter_cases.py checks, with x^T and the merge
    of the pairs' outputs)."""
    from sparx_mm.ops import triton_cross_scan as tcs
    proj = torch.randn(2, routes, 3, 20)
    assert torch.equal(tcs._to_route_order(proj, routes, 4, 5), proj)
    assert torch.equal(tcs._to_route_order(proj.transpose(2, 3).contiguous().transpose(2, 3), routes, 4, 5), proj)


def test_inference_tilings_project_dt_on_tensor_cores_only_where_the_kernel_can():
    """tl.dot needs 16 or more rows and columns a program, and the product's operand split is written for
    float32 and float16 projections: the tiling rule only asks for it there, with ranks above 8 or float16 inputs
    of 2048 or more positions (where it measured faster); the rank is padded to a power of two of 16 or more; a
    tiling that cannot take it is refused with a clear error instead of miscompiling."""
    from sparx_mm.ops import triton_cross_scan as tcs
    chosen = set()
    for length in (1, 49, 64, 65, 196, 784, 2047, 2048, 3136, 65536):
        for rank in (1, 4, 6, 8, 9, 12, 20, 25, 32, 33, 40, 64, 100):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                block_l, block_d, warps, dt_dot = tcs.inference_tiling(length, rank, dtype)
                chosen.add((block_l, block_d, warps, dt_dot))
                assert dt_dot == (dtype != torch.bfloat16 and (rank > 8 or length >= 2048 and dtype == torch.float16))
                padded = tcs._padded_rank(rank, block_d, block_l, dtype, dt_dot)
                if dt_dot:
                    assert padded >= max(16, rank) and padded & (padded - 1) == 0
                else:
                    assert padded == 0
    # SparX's sizes pick these (measured tilings in inference_tiling's docstring).
    assert tcs.inference_tiling(3136, 6, torch.float16) == (32, 16, 4, True)
    assert tcs.inference_tiling(3136, 6, torch.float32) == (32, 16, 4, False)
    assert tcs.inference_tiling(196, 20, torch.float32) == (32, 16, 4, True)
    assert tcs.inference_tiling(49, 40, torch.float16) == (64, 32, 4, True)
    assert tcs.inference_tiling(196, 25, torch.bfloat16) == (32, 16, 4, False)
    assert len(chosen) == 3, chosen  # the three tilings of the interpreter test, none other
    for block_d, block_l, dtype in ((8, 32, torch.float32), (16, 8, torch.float16), (16, 32, torch.bfloat16)):
        with pytest.raises(ValueError, match='dt_dot needs 16 or more channels and positions'):
            tcs._padded_rank(20, block_d, block_l, dtype, True)


def test_the_training_forward_projects_dt_on_tensor_cores_where_inference_does(monkeypatch):
    """The training tiling (the backward kernel's chunk) takes the tensor-core dt projection for ranks above 8
    and float32 / float16 projections, and only with programs of 16 or more channels; TRAIN_DT_DOT turns it
    off."""
    from sparx_mm.ops import triton_cross_scan as tcs
    for rank in (2, 6, 8, 9, 12, 20, 32, 40):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            block_l, block_d, warps, dt_dot = tcs.training_tiling(rank, dtype, 784)
            assert (block_l, (block_d, warps)) == (tcs.TRAIN_BLOCK_L, tcs.TRAIN_FWD_TILING)
            assert dt_dot == (rank > 8 and dtype != torch.bfloat16)
            assert tcs._padded_rank(rank, block_d, block_l, dtype, dt_dot) == (
                max(16, 1 << (rank - 1).bit_length()) if dt_dot else 0)
    monkeypatch.setattr(tcs, 'TRAIN_DT_DOT', False)
    assert not tcs.training_tiling(20, torch.float16, 784)[3]
    monkeypatch.setattr(tcs, 'TRAIN_DT_DOT', True)
    monkeypatch.setattr(tcs, 'TRAIN_FWD_TILING', (8, 2))  # a program narrower than tl.dot's 16 rows
    assert tcs.training_tiling(20, torch.float16, 784) == (tcs.TRAIN_BLOCK_L, 8, 2, False)


def test_the_training_tiling_by_sequence_length():
    """14 x 14 maps (65-256 positions): the forward's 2-warp tiling; sequences of 64 positions or fewer whose dt
    rank pads to 64 (SparX-S's and B's stage 4, ranks 34 and 40): one 64-position chunk, and the backward's 4-warp
    tiling at that padded rank; SparX-T's stage 4 (rank 32) and the multiply-add path (bfloat16) keep 32-position
    chunks."""
    from sparx_mm.ops import triton_cross_scan as tcs
    assert tcs.training_tiling(20, torch.float16, 196) == (32, *tcs.TRAIN_FWD_MID_TILING, True)
    assert tcs.training_tiling(25, torch.float16, 196)[1:3] == (16, 2)
    for length in (64, 257, 784, 3136):
        assert tcs.training_tiling(25, torch.float16, length)[1:3] == tcs.TRAIN_FWD_TILING, length
    assert tcs.training_tiling(40, torch.float16, 49) == (64, *tcs.TRAIN_FWD_TILING, True)
    assert tcs.training_tiling(34, torch.float32, 49)[0] == 64
    assert tcs.training_tiling(32, torch.float16, 49)[0] == 32  # padded to 32
    assert tcs.training_tiling(40, torch.float16, 65)[0] == 32  # two chunks
    assert tcs.training_tiling(40, torch.bfloat16, 49) == (32, *tcs.TRAIN_FWD_TILING, False)
    assert tcs.backward_tiling(40, torch.float16, 64) == (*tcs.BWD_DOT_WIDE_TILING, 64)
    assert tcs.backward_tiling(34, torch.float16, 32) == (*tcs.BWD_DOT_WIDE_TILING, 64)
    assert tcs.backward_tiling(32, torch.float16, 32) == (*tcs.BWD_DOT_TILING, 32)


def test_the_backward_recomputes_dt_on_tensor_cores_from_rank_17(monkeypatch):
    """The backward kernel's dt: by multiply-adds in BWD_TILING's programs up to rank 16 (where the training
    forward may use the product: ranks 9-16), on tensor cores in BWD_DOT_TILING's from rank 17 (BWD_DOT_WIDE_TILING's
    where the rank pads to 64), float32 / float16 projections only; BWD_DT_DOT_MIN_RANK moves the threshold."""
    from sparx_mm.ops import triton_cross_scan as tcs
    for rank in (6, 9, 12, 16, 17, 20, 32, 40):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            dot = rank >= 17 and dtype != torch.bfloat16
            r_pad = max(16, 1 << (rank - 1).bit_length())
            tiling = tcs.BWD_DOT_WIDE_TILING if r_pad >= tcs.BWD_DOT_WIDE_R_PAD else tcs.BWD_DOT_TILING
            expected = (*tiling, r_pad) if dot else (*tcs.BWD_TILING, 0)
            assert tcs.backward_tiling(rank, dtype) == expected, (rank, dtype)
    monkeypatch.setattr(tcs, 'BWD_DT_DOT_MIN_RANK', 9)
    assert tcs.backward_tiling(12, torch.float16) == (*tcs.BWD_DOT_TILING, 16)


def test_dt_projection_gradients_take_two_samples_a_program_where_the_sweep_found_it_faster():
    """16-bit: two samples a program where a program's positions are the whole sequence (7 x 7) or the padded
    rank is 16 (stages 1-2), one at 14 x 14 (196 positions in 128-position blocks, rank above 16: spills with
    two); float32 always one (3xTF32 products take three times the registers)."""
    from sparx_mm.ops import triton_cross_scan as tcs
    stages = [(240, 3136, 8), (480, 784, 15), (792, 196, 25), (1272, 49, 40),  # SparX-B
              (192, 3136, 6), (384, 784, 12), (640, 196, 20), (1024, 49, 32)]  # SparX-T
    for dtype in (torch.float16, torch.bfloat16):
        samples = [tcs.dt_projection_tiling(*stage, dtype)[5] for stage in stages]
        assert samples == [2, 2, 1, 2, 2, 2, 1, 2], dtype
    assert tcs.dt_projection_tiling(1272, 49, 40, torch.float16) == (64, 64, 64, 4, 3, 2)
    assert {tcs.dt_projection_tiling(*stage, torch.float32)[5] for stage in stages} == {1}
