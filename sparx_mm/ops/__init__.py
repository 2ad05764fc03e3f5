"""Scan operators of the SparX-Mamba blocks, and the fused layer operators of SparX's blocks (one-group
GroupNorm, depthwise conv + activation, 1x1 conv + bias + skip path, a BatchNorm folded into a convolution, NCHW <->
channels-last conversion, a channel concatenation with a channel shuffle).

Only torch is imported here, so the package works on CPU-only machines;
accelerated backends (Triton, mamba-ssm) register themselves with
:func:`register_scan_backend` from their own modules.
"""
from .batch_norm_fold import fold_batch_norm, fold_batch_norm_reference
from .channel_shuffle import concat_shuffled, concat_shuffled_reference, shuffle_groups
from .cross_scan import cross_merge, cross_scan
from .cross_selective_scan import (ROUTE_COUNTS, cross_selective_scan, cross_selective_scan_reference,
                                   route_sequence, route_to_positions)
from .depthwise_conv import depthwise_conv2d_act, depthwise_conv2d_act_reference
from .pointwise_conv import (add_skip_path, pointwise_conv2d, pointwise_conv2d_and_input, pointwise_conv2d_reference,
                             scale_samples, scaled_skip_path, skip_path_dtype)
from .group_norm import (OneGroupNorm, group_norm_one_group, group_norm_one_group_reference,
                         group_norm_one_group_with_recipe, group_norm_one_group_with_skip)
from .memory_format import convert_memory_format
from .selective_scan import (available_scan_backends, check_scan_inputs,
                             register_scan_backend, selective_scan,
                             selective_scan_reference,
                             unregister_scan_backend)
from . import gpu_backends  # noqa: F401,E402  (registers 'triton' and 'mamba_ssm'; imports neither)

__all__ = [
    'OneGroupNorm',
    'add_skip_path',
    'concat_shuffled',
    'concat_shuffled_reference',
    'convert_memory_format',
    'ROUTE_COUNTS',
    'cross_selective_scan',
    'cross_selective_scan_reference',
    'route_sequence',
    'route_to_positions',
    'available_scan_backends',
    'check_scan_inputs',
    'cross_merge',
    'cross_scan',
    'depthwise_conv2d_act',
    'depthwise_conv2d_act_reference',
    'fold_batch_norm',
    'fold_batch_norm_reference',
    'group_norm_one_group',
    'group_norm_one_group_reference',
    'group_norm_one_group_with_recipe',
    'group_norm_one_group_with_skip',
    'pointwise_conv2d',
    'pointwise_conv2d_and_input',
    'pointwise_conv2d_reference',
    'register_scan_backend',
    'scale_samples',
    'scaled_skip_path',
    'selective_scan',
    'selective_scan_reference',
    'shuffle_groups',
    'skip_path_dtype',
    'unregister_scan_backend',
]
