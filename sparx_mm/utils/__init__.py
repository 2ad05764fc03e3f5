"""Utilities of sparx-mm (FLOP counting: :mod:`sparx_mm.utils.flops`)."""
from .flops import (FlopReport, SparXClassifier, analytic_scan_flops, count_config_flops, count_flops,
                    count_params, format_report, selective_scan_flops)

__all__ = ['FlopReport', 'SparXClassifier', 'analytic_scan_flops', 'count_config_flops', 'count_flops',
           'count_params', 'format_report', 'selective_scan_flops']
