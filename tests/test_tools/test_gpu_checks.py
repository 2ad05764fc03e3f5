"""tools/gpu_checks on the CPU: --jobs, which runs a check's parts in processes of their own (gpu_common's
run_parts_in_processes, and the argument lists check_pointwise_conv.py, check_depthwise_conv.py and
check_kernels.py give those processes), and check_pointwise_conv.py's padded forward (its bench's 'padded fwd')
on the reference implementation. The checks and timings themselves need a GPU."""
import sys
import textwrap

import pytest

from ..conftest import REPO, load_tool

GPU_CHECKS = REPO / 'tools' / 'gpu_checks'


@pytest.fixture
def tools_path(monkeypatch):
    """The scripts import gpu_common from their own folder, as they do when run."""
    monkeypatch.syspath_prepend(str(GPU_CHECKS))


@pytest.fixture
def gpu_common(tools_path):
    return load_tool('tools/gpu_checks/gpu_common.py')


@pytest.fixture
def part_script(tmp_path):
    """A stand-in for a check script: prints its arguments and a line on stderr, sleeps its first argument's
    seconds, exits with its second argument as status."""
    script = tmp_path / 'part.py'
    script.write_text(textwrap.dedent('''\
        import sys, time
        time.sleep(float(sys.argv[1]))
        print('ran', ' '.join(sys.argv[1:]))
        print('stderr of', sys.argv[1], file=sys.stderr)
        sys.exit(int(sys.argv[2]))
    '''))
    return str(script)


def test_parts_run_at_once_and_report_in_the_order_given(gpu_common, part_script, capsys):
    # The first part ends last: its output still comes first, each part's whole output under its header.
    assert gpu_common.run_parts_in_processes(part_script, [['0.6', '0'], ['0', '0'], ['0.1', '0']], jobs=3)
    out, err = capsys.readouterr()
    assert out.splitlines() == ['## 0.6 0: exit status 0', 'ran 0.6 0', '## 0 0: exit status 0', 'ran 0 0',
                                '## 0.1 0: exit status 0', 'ran 0.1 0']
    assert err.splitlines() == ['stderr of 0.6', 'stderr of 0', 'stderr of 0.1']


def test_a_failing_part_fails_the_check_and_the_others_still_run(gpu_common, part_script, capsys):
    assert not gpu_common.run_parts_in_processes(part_script, [['0', '1'], ['0', '0']], jobs=1)
    out = capsys.readouterr().out
    assert '## 0 1: exit status 1' in out and 'ran 0 0' in out


def test_jobs_below_one_is_a_clear_error(gpu_common, part_script):
    with pytest.raises(ValueError, match='--jobs must be 1 or more, got 0'):
        gpu_common.run_parts_in_processes(part_script, [['0', '0']], jobs=0)


@pytest.mark.parametrize('value', ['0', '-2', 'two'])
def test_jobs_option_takes_one_or_more_processes(tools_path, monkeypatch, capsys, value):
    tool = load_tool('tools/gpu_checks/check_pointwise_conv.py')
    monkeypatch.setattr(tool, 'require_cuda', lambda script: None)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--only', 'check', '--jobs', value])
    assert exit_info.value.code == 2
    assert f"--jobs takes a whole number of processes, 1 or more; got '{value}'" in capsys.readouterr().err


def _recording(calls, ok=True):
    def run_parts(script, part_argvs, jobs):
        calls.append((script, [list(argv) for argv in part_argvs], jobs))
        return ok
    return run_parts


def test_pointwise_check_parts_go_to_processes_with_the_tiling(tools_path, monkeypatch, capsys):
    tool = load_tool('tools/gpu_checks/check_pointwise_conv.py')
    calls = []
    monkeypatch.setattr(tool, 'require_cuda', lambda script: None)
    monkeypatch.setattr(tool, 'run_parts_in_processes', _recording(calls, ok=False))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--only', 'check', '--jobs', '4', '--tiling', '64', '128', '32', '4', '3'])
    assert exit_info.value.code == 1 and capsys.readouterr().out.endswith('FAILED\n')
    (script, argvs, jobs), = calls
    assert script == str(GPU_CHECKS / 'check_pointwise_conv.py') and jobs == 4
    assert [argv[3] for argv in argvs] == list(tool.CHECK_PARTS)
    assert tool.CHECK_PARTS[-3:] == ('epilogues', 'conv-and-input', 'rows') and 'autocast bfloat16' in tool.CHECK_PARTS
    assert all(argv[:3] + argv[4:] == ['--only', 'check', '--parts', '--tiling', '64', '128', '32', '4', '3']
               for argv in argvs)


def test_pointwise_check_of_one_part_or_one_job_stays_in_this_process(tools_path, monkeypatch, capsys):
    tool = load_tool('tools/gpu_checks/check_pointwise_conv.py')
    calls, checked = [], []
    monkeypatch.setattr(tool, 'require_cuda', lambda script: None)
    monkeypatch.setattr(tool, 'run_parts_in_processes', _recording(calls))
    monkeypatch.setattr(tool, 'run_checks', lambda device, parts: checked.append(tuple(parts)) or True)
    for argv in (['--only', 'check', '--jobs', '4', '--parts', 'float16'], ['--only', 'check']):
        with pytest.raises(SystemExit) as exit_info:
            tool.main(argv)
        assert exit_info.value.code == 0
    assert not calls and checked == [('float16', ), tool.CHECK_PARTS]


def test_depthwise_check_one_mode_a_process_with_the_constants_and_large_once(tools_path, monkeypatch):
    tool = load_tool('tools/gpu_checks/check_depthwise_conv.py')
    calls = []
    monkeypatch.setattr(tool, 'require_cuda', lambda script: None)
    monkeypatch.setattr(tool.torch.cuda, 'get_device_name', lambda: 'no GPU')
    monkeypatch.setattr(tool, 'run_parts_in_processes', _recording(calls))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--only', 'check', '--jobs', '2', '--modes', 'float16', 'bfloat16', '--large',
                   '--fwd-tiling', '8', '4', '--max-block-w', '64'])
    assert exit_info.value.code == 0
    (_, argvs, jobs), = calls
    constants = ['--fwd-tiling', '8', '4', '--max-block-w', '64']
    assert jobs == 2 and argvs == [['--only', 'check', '--modes', 'float16', *constants, '--large'],
                                   ['--only', 'check', '--modes', 'bfloat16', *constants]]


def test_kernel_check_parts_go_to_processes_in_order(tools_path, monkeypatch, capsys):
    tool = load_tool('tools/gpu_checks/check_kernels.py')
    calls = []
    monkeypatch.setattr(tool.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(tool, 'run_parts_in_processes', _recording(calls))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--jobs', '3', '--whole-axis', '32', '64'])
    assert exit_info.value.code == 0 and 'ALL CHECKS PASSED' in capsys.readouterr().out
    (script, argvs, jobs), = calls
    assert script == str(GPU_CHECKS / 'check_kernels.py') and jobs == 3
    assert argvs == [['--only', 'scan'], ['--only', 'cross'], ['--only', 'layout', '--whole-axis', '32', '64'],
                     ['--only', 'shuffle'], ['--only', 'dmca']]


def test_parts_run_with_this_interpreter(gpu_common, tmp_path, capsys):
    """The environment's python (its torch and triton), whatever `python` on PATH is."""
    script = tmp_path / 'which.py'
    script.write_text('import sys\nprint(sys.executable)\n')
    assert gpu_common.run_parts_in_processes(str(script), [[]], jobs=1)
    assert capsys.readouterr().out.splitlines()[1] == sys.executable


def test_width_padding_makes_the_positions_a_multiple_of_eight(tools_path):
    tool = load_tool('tools/gpu_checks/check_pointwise_conv.py')
    assert [tool.width_padding(h, w) for h, w in ((7, 7), (14, 14), (56, 56), (28, 28), (9, 13), (1, 1))] == \
        [1, 2, 0, 0, 3, 7]


@pytest.mark.parametrize('h, w, groups, with_skip', [(7, 7, 1, True), (14, 14, 3, False), (9, 13, 1, False)])
def test_padded_forward_is_the_convolution(tools_path, h, w, groups, with_skip):
    """Bench's padded forward computes the same convolution (the padding's columns sliced off)."""
    import torch
    tool = load_tool('tools/gpu_checks/check_pointwise_conv.py')
    g = torch.Generator().manual_seed(h * w)
    x = torch.randn(2, 6, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(9, 6 // groups, 1, 1, generator=g, dtype=torch.float64)
    bias = torch.randn(9, generator=g, dtype=torch.float64)
    skip = torch.randn(2, 9, h, w, generator=g, dtype=torch.float64) if with_skip else None
    y = tool.padded_forward(x, weight, bias, skip, groups, impl='reference')
    expected = torch.nn.functional.conv2d(x, weight, bias, groups=groups) + (0 if skip is None else skip)
    assert y.shape == expected.shape and y.is_contiguous()
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
