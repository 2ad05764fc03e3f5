"""tools/analysis_tools/op_census.py: the GPU code path's aten ops on the CPU, Triton launches counted."""
import re

import pytest

from sparx_mm.models import layers
from sparx_mm.ops import gpu_backends, triton_cross_scan

from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def op_census():
    return load_tool('tools/analysis_tools/op_census.py')


def test_census_counts_the_gpu_paths_kernels_and_finds_the_strided_ops(op_census):
    """SparX-T at 64 x 64 on the GPU path: one fused scan a SS2D block (13), its plane transposes (x^T, the routes'
    projections, the merge), the layer kernels, the DMCAs' shuffled concatenations (a launch an input: x,
    attention, values in each of the 7 DMCAs), which read no strided channel slices any more (torch's path did);
    SS2D itself makes none (its x_proj once copied x transposed)."""
    usable, launch = gpu_backends.triton_usable, triton_cross_scan.launch
    launches, census = op_census.run_census('t', 64, 1, 'infer', 'fp32')
    assert launches['_cross_scan_fwd_kernel'] == 13 and launches['_plane_transpose_kernel'] == 39
    assert launches['_normalize_kernel'] > 0 and launches['_dwconv_kernel'] > 0
    assert launches['_shuffle_copy_kernel'] == 3 * 7
    strided_sites = {site for op, strided, site, _ in census.calls if strided}
    assert strided_sites and not any('channel_shuffle.py' in site or site.startswith('models/sparx/dmca.py') and
                                     site.endswith(' forward') for site in strided_sites), strided_sites
    assert not any('ss2d.py' in site for site in strided_sites), strided_sites
    # Everything patched is restored.
    assert gpu_backends.triton_usable is usable and triton_cross_scan.launch is launch
    assert layers.CHANNELS_LAST_DEVICES == ('cuda', )


def test_training_census_takes_the_channels_last_runs_and_prints_rows(op_census, capsys):
    op_census.main(['--arch', 't', '--size', '64', '--batch', '1', '--mode', 'train', '--rows', '500'])
    out = capsys.readouterr().out
    assert '_cross_scan_bwd_kernel 13' in out and 'aten.convolution_backward' in out
    totals = re.search(r'# (\d+) aten op calls, ([\d.]+) MB of operands \+ outputs; with a strided operand (\d+) '
                       r'calls, ([\d.]+) MB', out)
    assert totals and 0 < int(totals[3]) < int(totals[1]) and 0 < float(totals[4]) < float(totals[2]), out[:600]
    # The stem's input reaches its first conv channels-last (as on a GPU in grad mode).
    assert 'aten.convolution ' in out and '(1, 3, 64, 64) float32 strides (12288, 1, 192, 3)' in out


def test_inside_ops_counts_the_wrappers_own_ops_and_restores_the_custom_ops(op_census):
    """--inside-ops: the ops inside the fused scan's wrappers (the backward's sums of its kernels' partial results)
    are rows of their own, at the wrapper's call site; without it they are inside the custom ops and not seen."""
    from sparx_mm.ops import triton_op
    traced = triton_op.traced_call
    _, outside = op_census.run_census('t', 64, 1, 'train', 'fp16')
    _, inside = op_census.run_census('t', 64, 1, 'train', 'fp16', inside_ops=True)
    assert triton_op.traced_call is traced

    def sites(census):
        return {site for _, _, site, _ in census.calls}

    assert any(site.startswith('ops/triton_cross_scan.py') and '_cross_scan_bwd' in site for site in sites(inside))
    assert not any('_cross_scan_bwd' in site for site in sites(outside))


@pytest.mark.parametrize('argv', [['--size', '16'], ['--batch', '0'], ['--rows', '0'], ['--mode', 'eval']])
def test_bad_arguments_are_usage_errors(op_census, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        op_census.main(argv)
    assert exit_info.value.code == 2 and 'usage' in capsys.readouterr().err
