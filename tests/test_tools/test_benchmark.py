"""tools/analysis_tools/benchmark.py on the CPU: its table, its options, and a setting that does not fit."""
import pytest
import torch

from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def benchmark():
    return load_tool('tools/analysis_tools/benchmark.py')


def _rows(text):
    return [line.split() for line in text.splitlines() if line and not line.startswith(('#', 'arch'))]


def test_prints_one_row_per_setting_in_channels_last(benchmark, capsys):
    benchmark.main(['--arch', 't', '--batch', '2', '--size', '32', '--device', 'cpu', '--mode', 'infer', 'train',
                    '--warmup', '0', '--iters', '1', '--channels-last'])
    out = capsys.readouterr().out
    assert 'channels-last' in out.splitlines()[0]
    rows = _rows(out)
    assert [row[:5] for row in rows] == [['t', 'infer', 'fp32', '2', '32'], ['t', 'train', 'fp32', '2', '32']]
    assert all(float(row[6]) > 0 for row in rows)  # img/s
    for row in rows:  # host ms: the forward (and backward) calls' share of the step (ms/iter)
        assert 0 < float(row[8]) <= float(row[5])


def test_a_setting_out_of_memory_is_reported_and_the_table_goes_on(benchmark, capsys, monkeypatch):
    real_measure = benchmark.measure

    def measure(arch, batch, size, device, dtype, mode, *args):
        if mode == 'train':
            raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real_measure(arch, batch, size, device, dtype, mode, *args)

    monkeypatch.setattr(benchmark, 'measure', measure)
    benchmark.main(['--arch', 't', '--batch', '1', '--size', '32', '--device', 'cpu', '--mode', 'train', 'infer',
                    '--warmup', '0', '--iters', '1'])
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ['t', 'train', 'fp32', '1', '32', 'out', 'of', 'memory']
    assert rows[1][:2] == ['t', 'infer'] and float(rows[1][6]) > 0


def test_bad_sizes_are_rejected(benchmark):
    with pytest.raises(SystemExit):
        benchmark.main(['--batch', '0', '--device', 'cpu'])


def test_backbone_options_reach_the_backbone_and_bad_ones_are_refused(benchmark, capsys, monkeypatch):
    seen = []
    real = benchmark.Classifier

    def classifier(arch, **options):
        seen.append(options)
        return real(arch, **options)

    monkeypatch.setattr(benchmark, 'Classifier', classifier)
    benchmark.main(['--arch', 't', '--batch', '2', '--size', '32', '--device', 'cpu', '--mode', 'train',
                    '--warmup', '0', '--iters', '1', '--backbone-options', '{"ffn_recompute": false}'])
    out = capsys.readouterr().out
    assert seen == [{'ffn_recompute': False}]
    assert "backbone options {'ffn_recompute': False}" in out.splitlines()[0]
    for bad, message in (('{"ffn_recompute": ', 'must be a JSON object'), ('[1]', 'must be a JSON object'),
                         ('{"no_such_option": 1}', "unexpected keyword argument 'no_such_option'"),
                         ('{"ffn_recompute": "yes"}', "ffn_recompute must be True or False")):
        with pytest.raises(SystemExit):
            benchmark.main(['--device', 'cpu', '--backbone-options', bad])
        assert message in capsys.readouterr().err
