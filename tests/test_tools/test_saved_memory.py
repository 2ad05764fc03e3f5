"""tools/analysis_tools/saved_memory.py on the CPU: the census, and what the recomputation options change."""
import re

import pytest

from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def saved_memory():
    return load_tool('tools/analysis_tools/saved_memory.py')


def _total(text):
    return float(re.search(r'^total (\S+) GB', text, re.M).group(1))


def test_census_and_the_maps_the_recomputation_no_longer_keeps(saved_memory, capsys):
    common = ['--arch', 't', '--batch', '2', '--size', '64', '--dtype', 'fp32', '--device', 'cpu', '--rows', '50']
    saved_memory.main(common + ['--backbone-options', '{"ffn_recompute": true, "norm_recompute": true}'])
    recomputing = capsys.readouterr().out
    saved_memory.main(common + ['--backbone-options', '{"ffn_recompute": false, "norm_recompute": false}'])
    keeping = capsys.readouterr().out
    assert 'backbone options' in keeping.splitlines()[0]
    # Kept only without the recomputation: the FFN hidden map (fc2's input) and the normalised scan output
    # (out_proj's input).
    assert 'backbone.layers.*.blocks.*.mlp.fc2' in keeping and 'mlp.fc2' not in recomputing
    assert 'op.out_proj  torch.float32' in keeping and 'op.out_proj  torch.float32' not in recomputing
    assert _total(recomputing) < _total(keeping)


def test_bad_options_are_refused(saved_memory, capsys):
    with pytest.raises(SystemExit):
        saved_memory.main(['--device', 'cpu', '--backbone-options', '[1]'])
    assert 'must be a JSON object' in capsys.readouterr().err
