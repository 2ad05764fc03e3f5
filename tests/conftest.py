import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

# mmengine 0.10.7 loads its own checkpoints with torch.load's old default.
os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
warnings.filterwarnings('ignore', category=UserWarning)

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO.parent / 'shared' / 'spec'
KEYS_DIR = REPO / 'tests' / 'data' / 'official_keys'


def official_keys(name: str):
    """[key, shape] list of an official checkpoint: name in t, s, b, det_t, ..., seg_b."""
    path = KEYS_DIR / f'official_keys_{name}.json'
    return json.loads(path.read_text())


def load_tool(relative_path: str):
    """A script of the repository (e.g. 'tools/analysis_tools/benchmark.py') imported as a module, for testing its
    functions in-process."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(f'sparx_tool_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_state_dict(keys, seed=0):
    """Random tensors of the given [key, shape] list, small enough for a deep net to stay finite and with
    valid BatchNorm statistics (positive variances)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        if not shape:
            state[key] = torch.tensor(7)
        elif key.endswith('running_var'):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope='module')
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures('one_torch_thread')``): on a small
    CPU shared with other work, intra-op threads spin against each other (a 20x slowdown measured); no result
    depends on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root():
    return REPO
