"""tools/gpu_checks/bench_cross_scan.py on the CPU: its sizes and options (the timings need CUDA)."""
import subprocess
import sys

import pytest

from ..conftest import REPO, load_tool


@pytest.fixture(scope='module')
def bench():
    sys.path.insert(0, str(REPO / 'tools' / 'gpu_checks'))  # the script's own folder, as when it runs
    try:
        yield load_tool('tools/gpu_checks/bench_cross_scan.py')
    finally:
        sys.path.remove(str(REPO / 'tools' / 'gpu_checks'))


def test_stage_sizes_follow_the_arch_zoo(bench):
    """(d_inner, map size, dt rank) of each stage at 224 x 224: twice the width, width / 16 rounded up."""
    assert bench.stage_sizes('t') == [(192, 56, 6), (384, 28, 12), (640, 14, 20), (1024, 7, 32)]
    assert bench.stage_sizes('b') == [(240, 56, 8), (480, 28, 15), (792, 14, 25), (1272, 7, 40)]


def test_sweep_candidates_can_run(bench):
    """Tensor-core dt needs 16 or more channels and positions a program; the sweep offers both ways."""
    from sparx_mm.ops.triton_cross_scan import _padded_rank
    import torch
    for block_l, block_d, _warps, dt_dot in bench.SWEEP_TILINGS:
        assert _padded_rank(20, block_d, block_l, torch.float16, dt_dot) == (32 if dt_dot else 0)
    assert {t[3] for t in bench.SWEEP_TILINGS} == {False, True}


def test_sweep_and_a_fixed_inference_tiling_are_refused_together():
    result = subprocess.run([sys.executable, str(REPO / 'tools/gpu_checks/bench_cross_scan.py'), '--sweep-inference',
                             '--infer-tiling', '32', '16', '4', '1'], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and 'leave out --infer-tiling' in result.stderr, result.stderr


def test_train_fma_projects_dt_by_multiply_adds_in_training(bench, monkeypatch):
    import argparse
    import torch
    from sparx_mm.ops import triton_cross_scan
    for name in ('TRAIN_DT_DOT', 'TRAIN_BLOCK_L', 'TRAIN_FWD_TILING', 'BWD_TILING', 'BWD_DOT_TILING', 'BWD_DT_DOT',
                 'inference_tiling'):
        monkeypatch.setattr(triton_cross_scan, name, getattr(triton_cross_scan, name))  # restored afterwards
    assert triton_cross_scan.training_tiling(20, torch.float16, 784)[3]
    bench.apply_tiling_options(argparse.Namespace(train_tiling=None, train_fma=True, bwd_tiling=None,
                                                  bwd_dot_tiling=None, bwd_fma=False, infer_tiling=None))
    assert not triton_cross_scan.training_tiling(20, torch.float16, 784)[3]
    assert triton_cross_scan.backward_tiling(20, torch.float16) == (16, 2, 32)


def test_backward_options_pick_the_backward_tilings(bench, monkeypatch):
    """--bwd-dot-tiling sets the tensor-core tiling, --bwd-fma turns that path off: the 8-channel multiply-adds
    (R_PAD 0) at every rank."""
    import argparse
    import torch
    from sparx_mm.ops import triton_cross_scan
    for name in ('BWD_TILING', 'BWD_DOT_TILING', 'BWD_DOT_WIDE_TILING', 'BWD_DT_DOT'):
        monkeypatch.setattr(triton_cross_scan, name, getattr(triton_cross_scan, name))
    options = dict(train_tiling=None, train_fma=False, bwd_tiling=None, infer_tiling=None)
    bench.apply_tiling_options(argparse.Namespace(**options, bwd_dot_tiling=[32, 8], bwd_fma=False))
    assert triton_cross_scan.backward_tiling(20, torch.float16) == (32, 8, 32)
    assert triton_cross_scan.backward_tiling(40, torch.float16) == (32, 8, 64)  # at every rank
    assert triton_cross_scan.backward_tiling(6, torch.float16) == (8, 2, 0)  # rank 6: multiply-adds
    bench.apply_tiling_options(argparse.Namespace(**options, bwd_dot_tiling=None, bwd_fma=True))
    assert triton_cross_scan.backward_tiling(20, torch.float16) == (8, 2, 0)


def test_train_tiling_sets_one_tiling_at_every_length(bench, monkeypatch):
    """--train-tiling: the chunk and the forward tiling at every sequence length (the 14 x 14 rule and the one-chunk
    rule for 7 x 7 maps overridden)."""
    import argparse
    import torch
    from sparx_mm.ops import triton_cross_scan as tcs
    for name in ('TRAIN_BLOCK_L', 'TRAIN_FWD_TILING', 'TRAIN_FWD_MID_TILING', 'TRAIN_ONE_CHUNK_L'):
        monkeypatch.setattr(tcs, name, getattr(tcs, name))
    bench.apply_tiling_options(argparse.Namespace(train_tiling=[32, 32, 8], train_fma=False, bwd_tiling=None,
                                                  bwd_dot_tiling=None, bwd_fma=False, infer_tiling=None))
    for length in (49, 196, 784):
        assert tcs.training_tiling(40, torch.float16, length) == (32, 32, 8, True), length


def test_dt_dot_min_rank_moves_the_tensor_core_threshold(bench, monkeypatch):
    """--dt-dot-min-rank 1 puts stage 1's rank 6 on tensor cores: in training, forward and backward, and in the
    forward pass without gradients (16 x 32 tiles instead of the long-sequence multiply-add tiling); bfloat16 stays
    on multiply-adds."""
    import argparse
    import torch
    from sparx_mm.ops import triton_cross_scan
    for name in ('DT_DOT_MIN_RANK', 'BWD_DT_DOT_MIN_RANK'):
        monkeypatch.setattr(triton_cross_scan, name, getattr(triton_cross_scan, name))
    assert not triton_cross_scan.training_tiling(6, torch.float16, 784)[3]
    assert triton_cross_scan.backward_tiling(6, torch.float16) == (8, 2, 0)
    bench.apply_tiling_options(argparse.Namespace(train_tiling=None, train_fma=False, bwd_tiling=None,
                                                  bwd_dot_tiling=None, bwd_fma=False, infer_tiling=None,
                                                  dt_dot_min_rank=1))
    assert triton_cross_scan.training_tiling(6, torch.float16, 784)[3]
    assert triton_cross_scan.backward_tiling(6, torch.float16) == (16, 2, 16)
    assert triton_cross_scan.inference_tiling(3136, 6, torch.float16) == (32, 16, 4, True)
    assert not triton_cross_scan.training_tiling(6, torch.bfloat16, 784)[3]


def test_help_names_the_new_options():
    result = subprocess.run([sys.executable, str(REPO / 'tools/gpu_checks/bench_cross_scan.py'), '--fused-only',
                             '--help'], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert all(option in result.stdout for option in ('--fused-only', '--dt-dot-min-rank', '--sweep-training',
                                                      '--sweep-dt-grads'))


def test_dt_grads_candidates_are_distinct_and_include_the_one_sample_baseline(bench):
    """--sweep-dt-grads' (BLOCK_D, warps, stages, SAMPLES) candidates: distinct, the rule's one-sample tiling
    among them (the baseline at stage 3), samples 1, 2 and 4."""
    import torch
    from sparx_mm.ops import triton_cross_scan as tcs
    assert len(set(bench.DT_GRADS_TILINGS)) == len(bench.DT_GRADS_TILINGS)
    chosen = tcs.dt_projection_tiling(792, 196, 25, torch.float16)
    assert (chosen[0], *chosen[3:]) in bench.DT_GRADS_TILINGS
    assert {t[3] for t in bench.DT_GRADS_TILINGS} == {1, 2, 4}


def test_training_variants_set_existing_settings_and_restore_them(bench):
    """Each --sweep-training variant moves existing triton_cross_scan settings to tilings the kernels take at every
    SparX-T and B stage (the tensor-core path's 16 or more channels), and the module is as before afterwards."""
    import torch
    from sparx_mm.ops import triton_cross_scan as tcs
    names = {name for _label, settings in bench.TRAINING_VARIANTS for name in settings}
    before = {name: getattr(tcs, name) for name in names}
    labels = [label for label, _settings in bench.TRAINING_VARIANTS]
    assert labels[0] == 'default' and len(set(labels)) == len(labels)
    for _label, settings in bench.TRAINING_VARIANTS:
        with bench.tiling_settings(settings):
            for name, value in settings.items():
                assert getattr(tcs, name) == value
            for _channels, size, rank in bench.stage_sizes('t') + bench.stage_sizes('b'):
                block_l, block_d, _warps, dt_dot = tcs.training_tiling(rank, torch.float16, size * size)
                tcs._padded_rank(rank, block_d, block_l, torch.float16, dt_dot)  # raises where dt_dot cannot fit
                bwd_block_d, _bwd_warps, r_pad = tcs.backward_tiling(rank, torch.float16, block_l)
                # the backward takes the product only where the forward pass does (not at ranks 9-16)
                assert r_pad == 0 or (dt_dot and bwd_block_d >= 16)
    assert {name: getattr(tcs, name) for name in names} == before
    with pytest.raises(RuntimeError), bench.tiling_settings(dict(TRAIN_BLOCK_L=64)):
        raise RuntimeError('restored on the way out')
    assert tcs.TRAIN_BLOCK_L == before['TRAIN_BLOCK_L']


def test_sweep_training_refuses_tiling_options():
    result = subprocess.run([sys.executable, str(REPO / 'tools/gpu_checks/bench_cross_scan.py'), '--sweep-training',
                             '--bwd-tiling', '16', '4'], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and 'leave out the tiling options' in result.stderr, result.stderr


def test_columns_not_timed_print_a_dash(bench):
    """--fused-only leaves the unfused columns untimed (NaN): they print "-", aligned with the timed ones."""
    cells = bench.timing_cells([1.234, float('nan'), 5.0, float('nan')])
    assert cells.split() == ['1.23', '-', '5.00', '-'] and len(cells) == len(bench.timing_cells([1.0] * 4))
