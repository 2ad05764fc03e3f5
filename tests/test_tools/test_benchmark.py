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


@pytest.mark.parametrize('optimizer, fused', [('adamw', None), ('adamw-fused', True)])
def test_optimizer_option_builds_that_adamw(benchmark, capsys, monkeypatch, optimizer, fused):
    built = []
    real = torch.optim.AdamW

    def adamw(params, **kwargs):
        built.append(kwargs)
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, 'AdamW', adamw)
    benchmark.main(['--arch', 't', '--batch', '2', '--size', '32', '--device', 'cpu', '--mode', 'train',
                    '--warmup', '0', '--iters', '1', '--optimizer', optimizer])
    out = capsys.readouterr().out
    assert f'optimizer {optimizer}' in out.splitlines()[0] and float(_rows(out)[0][6]) > 0
    assert [kwargs.get('fused') for kwargs in built] == [fused]


def test_unfolded_times_inference_with_every_batch_norm_as_its_own_module(benchmark, capsys, monkeypatch):
    """--unfolded: the folding of FoldingSequential is off while the model runs (and back on after)."""
    from sparx_mm.models import layers
    folds = []
    real = layers.fold_batch_norm
    monkeypatch.setattr(layers, 'fold_batch_norm', lambda *args: folds.append(1) or real(*args))
    argv = ['--arch', 't', '--batch', '1', '--size', '32', '--device', 'cpu', '--warmup', '0', '--iters', '1']
    benchmark.main(argv + ['--unfolded'])
    assert 'BatchNorms unfolded' in capsys.readouterr().out.splitlines()[0] and not folds
    benchmark.main(argv)
    assert folds  # the stem's, the downsampling's and the DMCAs' BatchNorms


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


def test_a_failing_setting_is_reported_with_its_traceback_the_table_goes_on_and_the_exit_status_says_so(
        benchmark, capsys, monkeypatch):
    real_measure = benchmark.measure

    def measure(arch, batch, size, device, dtype, mode, *args):
        if mode == 'train':
            try:
                raise ValueError('the first error (simulated)')
            except ValueError:
                raise RuntimeError('operation failed due to a previous error during capture\nmore text')
        return real_measure(arch, batch, size, device, dtype, mode, *args)

    monkeypatch.setattr(benchmark, 'measure', measure)
    with pytest.raises(SystemExit, match=r'1 setting\(s\) failed \(t train fp32\); their tracebacks are above'):
        benchmark.main(['--arch', 't', '--batch', '1', '--size', '32', '--device', 'cpu', '--mode', 'train', 'infer',
                        '--warmup', '0', '--iters', '1'])
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert ' '.join(rows[0]) == ('t train fp32 1 32 failed (RuntimeError: operation failed due to a previous error '
                                 'during capture)')
    assert rows[1][:2] == ['t', 'infer'] and float(rows[1][6]) > 0
    # the whole chain: the error that caused the failure, then the failure itself
    assert captured.err.index('ValueError: the first error (simulated)') < captured.err.index('RuntimeError: ')


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


def test_cuda_graph_needs_cuda_and_excludes_compile(benchmark, capsys):
    for argv, message in (
            (['--device', 'cpu', '--cuda-graph'], '--cuda-graph needs a CUDA device, got --device cpu'),
            (['--device', 'cuda', '--cuda-graph', '--compile'], '--cuda-graph and --compile are exclusive')):
        with pytest.raises(SystemExit):
            benchmark.main(argv)
        assert message in capsys.readouterr().err


def test_cuda_graph_steps_replay_the_captured_model(benchmark, monkeypatch):
    """With cuda_graph, every timed step runs through what graph_inference / graph_training return (CUDA graphs
    themselves need a GPU: check_kernels.py --only graph compares them with eager mode there)."""
    calls = []

    def graph_inference(model, x, dtype):
        assert not model.training and dtype == 'fp32'
        calls.append('capture infer')
        return lambda: calls.append('replay') or model(x), None

    def graph_training(model, x, dtype):
        assert model.training and dtype == 'fp32'
        calls.append('capture train')
        real_forward = model.forward
        model.forward = lambda inputs: calls.append('replay') or real_forward(inputs)
        return model

    monkeypatch.setattr(benchmark, 'graph_inference', graph_inference)
    monkeypatch.setattr(benchmark, 'graph_training', graph_training)
    for mode in ('infer', 'train'):
        calls.clear()
        result = benchmark.measure('t', 2, 32, torch.device('cpu'), 'fp32', mode, 1, 2, cuda_graph=True)
        assert calls == [f'capture {mode}'] + ['replay'] * 3  # one warm-up step and two timed ones
        assert result['img_s'] > 0
