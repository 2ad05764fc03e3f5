"""The GPU backends are registered, never chosen for CPU tensors, and need nothing GPU-only to import."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from sparx_mm.ops import available_scan_backends, selective_scan


def _inputs(kd=8, routes=4, length=5, n=1):
    return (torch.randn(2, kd, length), torch.randn(2, kd, length), -torch.rand(kd, n),
            torch.randn(2, routes, n, length), torch.randn(2, routes, n, length))


def test_gpu_backends_are_registered_but_not_available_on_cpu():
    assert available_scan_backends() == ['mamba_ssm', 'triton', 'reference']
    assert available_scan_backends(torch.zeros(1, 4, 3)) == ['reference']


@pytest.mark.parametrize('backend', ['triton', 'mamba_ssm'])
def test_forcing_a_gpu_backend_on_cpu_tensors_is_a_clear_error(backend, monkeypatch):
    with pytest.raises(RuntimeError, match=f"{backend}.*is not available for cpu tensors"):
        selective_scan(*_inputs(), backend=backend)
    monkeypatch.setenv('SPARX_SCAN_BACKEND', backend)
    with pytest.raises(RuntimeError, match=f"{backend}.*is not available for cpu tensors"):
        selective_scan(*_inputs())


def test_triton_wrapper_checks_inputs_then_device(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    triton_scan = importlib.import_module('sparx_mm.ops.triton_scan')  # triton comes with torch's install
    u, delta, A, B, C = _inputs()
    with pytest.raises(ValueError, match='delta'):
        triton_scan.selective_scan_triton(u, delta[:, :, :3], A, B, C)
    with pytest.raises(RuntimeError, match='needs CUDA tensors'):
        triton_scan.selective_scan_triton(u, delta, A, B, C)


def test_block_size_never_spans_two_routes():
    from sparx_mm.ops.triton_scan import _block_d
    for per_route in (192, 384, 640, 656, 1024, 1088, 480, 792, 1272, 7):
        block = _block_d(per_route)
        assert per_route % block == 0 and block <= 32


def test_importing_and_running_on_cpu_loads_no_gpu_module():
    # A whole (small) SparX-Mamba forward and backward on CPU: the scan, the scan core, the one-group GroupNorm
    # and the depthwise convs all take their reference paths, and no Triton module of ours or mamba-ssm loads.
    code = ('import sys, torch, sparx_mm; from sparx_mm.models import SparXMamba; '
            'arch = dict(depths=[1, 2, 1, 1], dims=[16, 32, 48, 64], ganglion_starts=[None, 1, None, 0]); '
            'x = torch.randn(1, 3, 64, 64, requires_grad=True); sum(f.sum() for f in SparXMamba(arch)(x)).backward(); '
            'print(sorted(m for m in sys.modules if m.startswith(("sparx_mm.ops.triton", "mamba_ssm"))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.stdout.strip().splitlines()[-1] == '[]', out.stdout
