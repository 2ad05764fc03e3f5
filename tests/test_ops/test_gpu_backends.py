"""The GPU backends are registered, never chosen for CPU tensors, and need nothing GPU-only to import."""
import importlib
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


def test_importing_the_package_loads_no_gpu_backend_module():
    code = ('import sys, sparx_mm, sparx_mm.ops; '
            'print(any(m in sys.modules for m in ("sparx_mm.ops.triton_scan", "mamba_ssm")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
