"""End-to-end helpers: the demo data (made once per session) and running tools/*.py as subprocesses.

The tools run with the session's demo folder as working directory, so the demo configs' relative
``data/demo/...`` paths point at the freshly made data; work dirs live under pytest's tmp_path.
"""
import math
import os
import re
import subprocess
import sys

import pytest

from ..conftest import REPO

CONFIGS = dict(
    det=REPO / 'configs/demo/maskrcnn_sparx_t_demo.py',
    seg=REPO / 'configs/demo/upernet_sparx_t_demo.py',
    cls=REPO / 'configs/demo/sparx_t_demo_cls.py',
)
TRAIN, TEST = REPO / 'tools/train.py', REPO / 'tools/test.py'

# Settings that keep each run to a few iterations and a few evaluated images.
FAST = dict(
    det=['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=1',
         'train_dataloader.dataset.indices=2', 'val_dataloader.dataset.indices=2',
         'test_dataloader.dataset.indices=2', 'default_hooks.logger.interval=1'],
    # A checkpoint after each iteration, for the resume test.
    seg=['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1',
         'default_hooks.checkpoint.max_keep_ckpts=3',
         'train_dataloader.batch_size=2', 'train_dataloader.dataset.pipeline.2.scale=(64,64)',
         'train_dataloader.dataset.pipeline.3.crop_size=(64,64)', 'model.data_preprocessor.size=(64,64)',
         'val_dataloader.dataset.indices=2',
         'test_dataloader.dataset.indices=2', 'default_hooks.logger.interval=1'],
    cls=['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
         'train_dataloader.dataset.indices=[0,24,48,72]', 'val_dataloader.dataset.indices=[0,8,16,24]',
         'test_dataloader.dataset.indices=[0,8,16,24]', 'default_hooks.logger.interval=1'],
)


def tool_env():
    env = dict(os.environ)
    # One thread each: on a small shared machine, two OpenMP threads fighting other processes for two cores
    # are several times slower than one.
    env.setdefault('OMP_NUM_THREADS', '1')
    env.setdefault('MKL_NUM_THREADS', '1')
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def run_tool(script, *args, cwd, timeout=600):
    """Run tools/<script> with this interpreter; returns the CompletedProcess (stdout + stderr kept apart)."""
    cmd = [sys.executable, str(script), *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=str(cwd), env=tool_env(), capture_output=True, text=True, timeout=timeout)


def output(proc):
    return proc.stdout + proc.stderr


def check_ok(proc):
    assert proc.returncode == 0, f'exit code {proc.returncode}\n{output(proc)[-6000:]}'
    return output(proc)


def metric(text, key, split=None):
    """The last value logged for metric ``key`` (e.g. 'coco/bbox_mAP'), as a float; split 'val' / 'test'
    restricts the search to the lines of that loop."""
    lines = [line for line in text.splitlines()
             if split is None or f'Epoch({split})' in line or f'Iter({split})' in line]
    values = re.findall(rf'(?<![\w/]){re.escape(key)}: (\S+)', '\n'.join(lines))
    assert values, f'no {key} logged{" in " + split if split else ""}:\n{text[-4000:]}'
    return float(values[-1])


def assert_finite(value):
    assert math.isfinite(value), value
    return value


def check_error(proc, *fragments):
    """Exit code 2 and one 'error: ...' line on stderr that holds the fragments, with no traceback."""
    text = output(proc)
    assert proc.returncode == 2, f'exit code {proc.returncode}\n{text[-6000:]}'
    assert 'Traceback' not in text, text[-6000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, proc.stderr[-4000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A folder holding data/demo (made by tools/misc/make_demo_data.py): the tools' working directory."""
    root = tmp_path_factory.mktemp('demo_root')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/misc/make_demo_data.py'), '--out', 'data/demo'],
                          cwd=str(root), env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, output(proc)
    return root


@pytest.fixture(scope='session')
def trained(demo_root, tmp_path_factory):
    """Train each demo for a few iterations once per session: task -> (work dir, checkpoint, output)."""
    cache = {}

    def get(task):
        if task not in cache:
            work_dir = tmp_path_factory.mktemp(f'train_{task}')
            proc = run_tool(TRAIN, CONFIGS[task], '--work-dir', work_dir, '--cfg-options', *FAST[task],
                            cwd=demo_root)
            text = check_ok(proc)
            last = (work_dir / 'last_checkpoint').read_text().strip()
            cache[task] = (work_dir, last, text)
        return cache[task]

    return get
