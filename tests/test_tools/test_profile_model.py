"""tools/gpu_checks/profile_model.py on the CPU: the --by-module table (CPU time there; the kernel table needs
CUDA)."""
import re
from types import SimpleNamespace

import pytest

from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def profile_model():
    return load_tool('tools/gpu_checks/profile_model.py')


def test_part_names_group_blocks_by_stage(profile_model):
    assert profile_model.part_name('backbone.layers.2.blocks.5.dmca.q') == 'stage 3 dmca.q'
    assert profile_model.part_name('backbone.layers.0.blocks.1.op') == 'stage 1 op'
    assert profile_model.part_name('backbone.layers.0.blocks.1.op.x_proj') is None  # not a timed part
    assert profile_model.part_name('backbone.layers.2.downsample') == 'downsample 3 -> 4'
    assert profile_model.part_name('backbone.patch_embed') == 'stem'
    assert profile_model.part_name('fc') == 'head'


def test_by_module_rows_in_model_order_with_the_scan_core(profile_model, capsys):
    profile_model.main(['--device', 'cpu', '--by-module', '--batch', '2', '--size', '64'])
    # Rows only: the profiler may log lines of its own (no GPU) into the same stream.
    rows = {m.group(1).strip(): (int(m.group(2)), float(m.group(3)))
            for m in re.finditer(r'^(.{32}) +(\d+) +(-?[\d.]+) +-?[\d.]+%$', capsys.readouterr().out, re.M)}
    names = list(rows)
    assert names[:2] == ['whole forward', 'stem'] and names[-1] == 'head'
    assert names.index('downsample 1 -> 2') < names.index('stage 2 pos_embed')
    # SparX-T: stage 3 has 7 blocks, 4 of them ganglion layers (DMCA), 3 projecting their input
    assert rows['stage 3 pos_embed'][0] == 7 and rows['stage 3 dmca'][0] == 4 and rows['stage 3 op.in_proj'][0] == 3
    for stage in (1, 2, 3, 4):
        op, core = rows[f'stage {stage} op'][1], rows[f'stage {stage} scan core'][1]
        parts = [ms for name, (_, ms) in rows.items() if name.startswith(f'stage {stage} op.')]
        # Each printed figure is rounded to 0.01 ms: op, core and each part off by up to 0.005.
        assert core == pytest.approx(op - sum(parts), abs=0.005 * (len(parts) + 2) + 1e-9) and 0 < core < op
    blocks = sum(ms for name, (_, ms) in rows.items() if name.startswith('stage') and '.' not in name
                 and not name.endswith('scan core'))
    assert 0 < blocks < rows['whole forward'][1]


def test_kernel_table_needs_cuda(profile_model, capsys):
    with pytest.raises(SystemExit):
        profile_model.main(['--device', 'cpu'])
    assert 'the kernel table needs a CUDA device, got --device cpu' in capsys.readouterr().err


def _event(name, start, end, device=True):
    from torch.autograd import DeviceType
    time_range = SimpleNamespace(start=start, end=end, elapsed_us=lambda: end - start)
    return SimpleNamespace(name=name, device_type=DeviceType.CUDA if device else DeviceType.CPU,
                           time_range=time_range)


def test_gpu_time_counts_each_kernel_to_its_innermost_range(profile_model):
    """Synthetic profile: 'op' spans 0-100 on the GPU with a child 'op.in_proj' at 10-30 (two kernels, an idle gap
    between them) and a second 'op.in_proj' call at 60-70; 'op' launched kernels of its own before, between and
    after; one kernel ran outside every range; host-side events of the ranges do not count."""
    events = [_event('op', 0, 100), _event('op.in_proj', 10, 30), _event('op.in_proj', 60, 70),
              _event('op', 0, 100, device=False),  # the host-side range
              _event('k_op_a', 0, 8), _event('k_child_1', 10, 14), _event('k_child_2', 25, 30),  # idle 14-25
              _event('k_op_b', 40, 55), _event('k_child_3', 60, 66), _event('k_op_c', 90, 100),
              _event('k_outside', 120, 125)]
    own, total = profile_model.gpu_time_by_range(events, {'op', 'op.in_proj'})
    assert own == {'op': 8 + 15 + 10, 'op.in_proj': 4 + 5 + 6}
    assert total == 8 + 4 + 5 + 15 + 6 + 10 + 5


def _cpu_event(name, parent=None, stack=()):
    return SimpleNamespace(name=name, stack=list(stack), cpu_parent=parent)


def test_call_site_is_the_innermost_package_frame_or_the_autograd_node(profile_model):
    import os
    frame = os.sep.join(['', 'repo', 'sparx_mm', 'ops', 'depthwise_conv.py(95): _reference'])
    python_call = _cpu_event(frame, _cpu_event('benchmark.py(80): forward'))
    assert profile_model.call_site(_cpu_event('aten::copy_', _cpu_event('aten::clone', python_call))) == \
        'ops/depthwise_conv.py(95): _reference'
    assert profile_model.call_site(_cpu_event('aten::copy_', stack=[frame])) == 'ops/depthwise_conv.py(95): _reference'
    node = _cpu_event('autograd::engine::evaluate_function: ConvolutionBackward0')
    assert profile_model.call_site(_cpu_event('aten::sum', node)) == 'backward: ConvolutionBackward0'
    assert profile_model.call_site(_cpu_event('aten::sum')) == '?'


def test_by_site_rows_largest_first_with_forward_and_backward_sites(profile_model, capsys):
    profile_model.main(['--device', 'cpu', '--by-site', '--train', '--batch', '2', '--size', '64', '--rows', '400'])
    out = capsys.readouterr().out
    assert "aten ops' own CPU time by call site" in out
    rows = [m.groups() for m in re.finditer(r'^ *([\d.]+) +(\d+)  (aten::\S+) +(.+?) +(\[.*\])?$', out, re.M)]
    assert len(rows) > 50
    times = [float(ms) for ms, *_ in rows]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    sites = {site for *_, site, _ in rows}
    assert any(site.startswith('backward: ') for site in sites)
    assert any(site.startswith('ops/depthwise_conv.py(') for site in sites)  # the reference path on the CPU


def test_by_module_and_by_site_are_exclusive(profile_model, capsys):
    with pytest.raises(SystemExit):
        profile_model.main(['--device', 'cpu', '--by-module', '--by-site'])
    assert '--by-module and --by-site are two different tables' in capsys.readouterr().err
