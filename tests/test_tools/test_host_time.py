"""tools/gpu_checks/host_time.py on the CPU: its table, the launch A/B rows and the profile (the launch
micro-benchmark needs CUDA)."""
import pytest

from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def host_time():
    return load_tool('tools/gpu_checks/host_time.py')


def test_one_row_per_setting_and_launch_with_ordered_statistics(host_time, capsys):
    from sparx_mm.ops import triton_launch
    host_time.main(['--device', 'cpu', '--size', '64', '--iters', '2', '--warmup', '0', '--launch-ab',
                    '--profile', '5'])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (['infer'], ['train'])]
    assert [row[:3] for row in rows] == [[m, d, launch] for m, d in (('infer', 'fp32'), ('infer', 'fp16'),
                                                                     ('train', 'fp16'))
                                         for launch in ('cached', 'triton')]
    for row in rows:
        low, quartile, median = map(float, row[3:])
        assert 0 < low <= quartile <= median
    assert 'Ordered by: internal time' in out  # the cProfile table
    assert triton_launch.ENABLED  # switched back on


def test_refuses_cuda_without_a_gpu_and_zero_iterations(host_time, capsys):
    import torch
    with pytest.raises(SystemExit):
        host_time.main(['--device', 'cpu', '--iters', '0'])
    assert '--iters must be 1 or more' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            host_time.main([])
        assert 'needs a CUDA GPU' in capsys.readouterr().err
