"""tools/dist_*.sh and tools/slurm_*.sh build the OpenMMLab command lines, with the repository on PYTHONPATH.

torchrun and srun are replaced by stubs that print what they were given (no GPUs or Slurm here)."""
import os
import stat
import subprocess

import pytest

from ..conftest import REPO

STUB = """#!/usr/bin/env bash
echo "PYTHONPATH=$PYTHONPATH"
for arg in "$@"; do echo "ARG=$arg"; done
"""


def _stub(path):
    path.write_text(STUB)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run(script, *args, env=None, cwd):
    full_env = dict(os.environ, **(env or {}))
    full_env.pop('PYTHONPATH', None)
    proc = subprocess.run(['bash', str(REPO / 'tools' / script), *args], cwd=str(cwd), env=full_env,
                          capture_output=True, text=True, timeout=60)
    args_seen = [line[4:] for line in proc.stdout.splitlines() if line.startswith('ARG=')]
    paths = [line[11:] for line in proc.stdout.splitlines() if line.startswith('PYTHONPATH=')]
    return proc, args_seen, paths


@pytest.mark.parametrize('script, args, tool, positional', [
    ('dist_train.sh', ['cfg.py', '4', '--amp'], 'train.py', ['cfg.py']),
    ('dist_test.sh', ['cfg.py', 'ckpt.pth', '4', '--out', 'r.pkl'], 'test.py', ['cfg.py', 'ckpt.pth']),
])
def test_dist_scripts(tmp_path, script, args, tool, positional):
    python = _stub(tmp_path / 'python')
    env = dict(PYTHON=str(python), NNODES='2', NODE_RANK='1', PORT='29999', MASTER_ADDR='10.0.0.1')
    proc, seen, paths = _run(script, *args, env=env, cwd=tmp_path)  # run from elsewhere: paths are the script's
    assert proc.returncode == 0, proc.stderr
    assert paths == [str(REPO)]
    assert seen[:2] == ['-m', 'torch.distributed.run']
    assert {'--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1', '--nproc_per_node=4',
            '--master_port=29999'} <= set(seen)
    i = seen.index(str(REPO / 'tools' / tool))
    extra = args[len(positional) + 1:]
    assert seen[i + 1:] == positional + ['--launcher', 'pytorch'] + extra


@pytest.mark.parametrize('script, tool, fourth, expected_tail', [
    ('slurm_train.sh', 'train.py', 'work', ['cfg.py', '--work-dir=work', '--launcher=slurm', '--amp']),
    ('slurm_test.sh', 'test.py', 'ckpt.pth', ['cfg.py', 'ckpt.pth', '--launcher=slurm', '--amp']),
])
def test_slurm_scripts(tmp_path, script, tool, fourth, expected_tail):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _stub(bin_dir / 'srun')
    env = dict(PATH=f'{bin_dir}:{os.environ["PATH"]}', PYTHON='python3', GPUS='16', GPUS_PER_NODE='8',
               CPUS_PER_TASK='3', SRUN_ARGS='--quotatype=auto --time=10')
    proc, seen, paths = _run(script, 'gpu', 'job1', 'cfg.py', fourth, '--amp', env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert paths == [str(REPO)]
    assert seen[:2] == ['-p', 'gpu']
    assert {'--job-name=job1', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=3',
            '--kill-on-bad-exit=1', '--quotatype=auto', '--time=10'} <= set(seen)
    i = seen.index('python3')
    assert seen[i + 1:] == ['-u', str(REPO / 'tools' / tool)] + expected_tail


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'])
def test_usage_without_arguments(tmp_path, script):
    proc, _, _ = _run(script, cwd=tmp_path)
    assert proc.returncode == 2 and 'usage:' in proc.stderr
