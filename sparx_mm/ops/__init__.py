"""Scan operators of the SparX-Mamba blocks.

Only torch is imported here, so the package works on CPU-only machines;
accelerated backends (Triton, mamba-ssm) register themselves with
:func:`register_scan_backend` from their own modules.
"""
from .cross_scan import cross_merge, cross_scan
from .cross_selective_scan import (ROUTE_COUNTS, cross_selective_scan, cross_selective_scan_reference,
                                   route_sequence, route_to_positions)
from .selective_scan import (available_scan_backends, check_scan_inputs,
                             register_scan_backend, selective_scan,
                             selective_scan_reference,
                             unregister_scan_backend)
from . import gpu_backends  # noqa: F401,E402  (registers 'triton' and 'mamba_ssm'; imports neither)

__all__ = [
    'ROUTE_COUNTS',
    'cross_selective_scan',
    'cross_selective_scan_reference',
    'route_sequence',
    'route_to_positions',
    'available_scan_backends',
    'check_scan_inputs',
    'cross_merge',
    'cross_scan',
    'register_scan_backend',
    'selective_scan',
    'selective_scan_reference',
    'unregister_scan_backend',
]
