"""1x1 convolution fused with its bias and the block's skip path: one pass over memory.

For ``x`` (B, Cin, H, W), ``weight`` (Cout, Cin / groups, 1, 1), ``bias`` (Cout,) or None and an optional
``skip`` (B, Cout, H, W) with an optional per-channel ``skip_scale`` / ``skip_shift`` (Cout,)::

    pointwise_conv2d(x, weight, bias, skip, skip_scale, skip_shift, groups=groups)
        = conv2d(x, weight, bias, groups=groups) + (skip * skip_scale + skip_shift)
    pointwise_conv2d(x, weight, bias, groups=groups, activation=act)
        = act(conv2d(x, weight, bias, groups=groups))

(an activation, 'gelu' (exact) or 'silu', or a skip path, not both). A per-sample ``branch_scale`` (B,) scales the
convolution (bias included) before the skip path is added, stochastic depth's ``drop_path(branch) + LS(x)``::

    pointwise_conv2d(x, weight, bias, skip, skip_scale, skip_shift, branch_scale=s)
        = conv2d(x, weight, bias) * s[b] + (skip * skip_scale + skip_shift)

(``s``: 0 for a dropped sample, 1 / keep probability for a kept one; a constant, no gradient).

SparX uses it for every 1x1 convolution of a block: SS2D's ``in_proj`` and ConvFFN's ``fc1`` (no skip), and
SS2D's ``out_proj`` and ConvFFN's ``fc2`` with the block's residual ``LS(x) + branch(...)`` folded in (LayerScale
is the skip path's scale and shift); and for the DMCAs' 1x1 convolutions, their grouped fusion conv
(``groups=3``) included. On GPUs PyTorch runs such a convolution as cuDNN's NHWC GEMM between two layout
conversions of the NCHW maps, then adds the bias in a separate pass that cannot vectorise, then the skip in a
third: at SparX-T's stage-1 sizes the bias add alone takes three times the GEMM. The Triton kernel reads the
NCHW map directly as the GEMM's operand, one sample (and group) a program column, and adds the bias and the
skip path to the float32 accumulator before the one store. Where cuDNN measured faster (7 x 7 maps) the
automatic choice keeps it (:func:`triton_is_faster`), except in 16-bit training steps, where one cuBLAS GEMM on
the map's channels-last rows, channels padded to a multiple of 8, beats cuDNN's forward and backward
(:func:`gemm_on_rows_pays`, :func:`conv1x1_on_rows`).

Output dtype (both implementations): the convolution runs in ``conv_dtype`` = the autocast dtype when autocast
is enabled for x's device type and x is not float64, else x's dtype; without a skip the output has
``conv_dtype``, with one ``torch.promote_types(skip path dtype, conv_dtype)`` (:func:`skip_path_dtype`: a scaled
or shifted skip path under autocast has the autocast dtype, as the official LayerScale, a depthwise 1x1
``F.conv2d``, has): what the official blocks produce under autocast. float32 convolutions
use TF32 in the Triton kernel exactly when ``torch.backends.cudnn.allow_tf32`` lets cuDNN use it (the default),
so the fused op rounds as the convolution it replaces does.

:func:`pointwise_conv2d_reference` is the definition with plain torch ops; :func:`pointwise_conv2d` checks its
inputs and runs the Triton kernel (``triton_pointwise_conv.py``, CUDA tensors) or the reference, as
:func:`sparx_mm.ops.gpu_backends.layer_kernel_impl` chooses.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gpu_backends
from .conv_inputs import autocast_on, check_conv_tensors, conv_dtype, shape_text
from .depthwise_conv import ACTIVATIONS, activation_fn
from .selective_scan import requested_choice

__all__ = ['add_skip_path', 'conv1x1_on_rows', 'gemm_on_rows_pays', 'pointwise_conv2d', 'pointwise_conv2d_and_input',
           'pointwise_conv2d_reference', 'scale_samples', 'scaled_skip_path', 'skip_path_dtype']

_NAME = 'pointwise_conv2d'
#: Convolution dtypes of :func:`conv1x1_on_rows` in the automatic choice (float32 stays with cuDNN, whose TF32
#: setting, ``torch.backends.cudnn.allow_tf32``, cuBLAS's matmul does not follow).
ROWS_GEMM_DTYPES = (torch.float16, torch.bfloat16)
#: The channel multiple :func:`conv1x1_on_rows` pads its operands to: 16-byte rows of 16-bit values, which
#: cuBLAS's vectorised kernels need (SparX-B's 636 / 396 / 1908 channels are 8-byte rows).
ROWS_GEMM_CHANNEL_MULTIPLE = 8


def _check_inputs(x, weight, bias, skip, skip_scale, skip_shift, groups, activation=None, branch_scale=None):
    if type(groups) is not int or groups < 1:
        raise ValueError(f'{_NAME}: groups must be a positive int, got {groups!r}')
    if activation not in ACTIVATIONS:
        raise ValueError(f'{_NAME}: unknown activation {activation!r}; choose one of {ACTIVATIONS}')
    if activation is not None and skip is not None:
        raise ValueError(f'{_NAME}: an activation ({activation!r}) applies to the convolution without a skip path; '
                         'pass one or the other')
    if branch_scale is not None:
        _check_branch_scale(x, branch_scale, activation)
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f'{_NAME}: x must be a 4-D tensor (B, Cin, H, W), got {shape_text(x)}')
    if not x.is_floating_point():
        raise TypeError(f'{_NAME}: x must be a floating-point tensor, got {x.dtype}')
    if not isinstance(weight, Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f'{_NAME}: weight must be a 1x1 kernel (Cout, Cin / groups, 1, 1), got {shape_text(weight)}')
    if weight.shape[1] * groups != x.shape[1]:
        raise ValueError(f'{_NAME}: weight takes {weight.shape[1]} input channels a group (shape {shape_text(weight)}, '
                         f'groups={groups}) but x has {x.shape[1]} (shape {shape_text(x)})')
    cout = weight.shape[0]
    if cout % groups:
        raise ValueError(f'{_NAME}: the output channels (weight {shape_text(weight)}) must be a multiple of '
                         f'groups={groups}')
    for name, t in (('bias', bias), ('skip_scale', skip_scale), ('skip_shift', skip_shift)):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != (cout, )):
            raise ValueError(f'{_NAME}: {name} must be None or a (Cout,) = ({cout},) tensor, got {shape_text(t)}')
    if skip is None:
        if skip_scale is not None or skip_shift is not None:
            raise ValueError(f'{_NAME}: skip_scale / skip_shift scale and shift the skip path; pass skip too')
    else:
        expected = (x.shape[0], cout) + tuple(x.shape[2:])
        if not isinstance(skip, Tensor) or tuple(skip.shape) != expected:
            raise ValueError(f'{_NAME}: skip must be the output\'s shape (B, Cout, H, W) = {expected}, got '
                             f'{shape_text(skip)}')
        if not skip.is_floating_point():
            raise TypeError(f'{_NAME}: skip must be a floating-point tensor, got {skip.dtype}')
    params = (('weight', weight), ('bias', bias))
    check_conv_tensors(_NAME, x, params + (('skip', skip), ('skip_scale', skip_scale), ('skip_shift', skip_shift),
                                           ('branch_scale', branch_scale)), params)


def _check_branch_scale(x, branch_scale, activation):
    if activation is not None:
        raise ValueError(f'{_NAME}: branch_scale scales the convolution before a skip path is added; it does not '
                         f'combine with an activation ({activation!r})')
    batch = x.shape[0] if isinstance(x, Tensor) and x.dim() == 4 else None
    if not isinstance(branch_scale, Tensor) or branch_scale.dim() != 1 or branch_scale.shape[0] != batch:
        raise ValueError(f'{_NAME}: branch_scale must be a (B,) = ({batch},) tensor, one factor a sample, got '
                         f'{shape_text(branch_scale)}')
    if not branch_scale.is_floating_point():
        raise TypeError(f'{_NAME}: branch_scale must be a floating-point tensor, got {branch_scale.dtype}')
    if branch_scale.requires_grad:
        raise ValueError(f'{_NAME}: branch_scale is a constant (stochastic depth\'s per-sample factors) and takes no '
                         'gradient; pass it detached')


def skip_path_dtype(skip: Tensor, skip_scale: Optional[Tensor] = None,
                    skip_shift: Optional[Tensor] = None) -> torch.dtype:
    """The dtype of the skip path ``skip * skip_scale + skip_shift``. Scaled or shifted under autocast
    (:func:`~sparx_mm.ops.conv_inputs.autocast_on`): the autocast dtype, since the official LayerScale is a
    depthwise 1x1 convolution (``F.conv2d``), which autocast runs in its dtype, so the residual stream of the
    official blocks stays in it; otherwise torch's promotion of the three dtypes."""
    if (skip_scale is not None or skip_shift is not None) and autocast_on(skip):
        return conv_dtype(skip)
    dtype = skip.dtype
    for t in (skip_scale, skip_shift):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def scaled_skip_path(skip: Tensor, skip_scale: Optional[Tensor] = None,
                     skip_shift: Optional[Tensor] = None) -> Tensor:
    """``skip * skip_scale + skip_shift`` with plain torch ops (one addcmul with both), in
    :func:`skip_path_dtype`: LayerScale's forward.

    Shapes: skip (B, C, H, W), skip_scale / skip_shift (C,) or None -> (B, C, H, W).
    """
    if skip_scale is None and skip_shift is None:
        return skip
    dtype = skip_path_dtype(skip, skip_scale, skip_shift)
    skip = skip.to(dtype)
    scale = None if skip_scale is None else skip_scale.to(dtype).view(1, -1, 1, 1)
    shift = None if skip_shift is None else skip_shift.to(dtype).view(1, -1, 1, 1)
    if scale is not None and shift is not None:
        return torch.addcmul(shift, skip, scale)
    return skip * scale if scale is not None else skip + shift


def add_skip_path(y: Tensor, skip: Tensor, skip_scale: Optional[Tensor] = None,
                  skip_shift: Optional[Tensor] = None) -> Tensor:
    """``skip * skip_scale + skip_shift + y`` with plain torch ops, as the blocks write ``LS(x) + branch``
    (:func:`scaled_skip_path`, then the sum).

    Shapes: y and skip (B, C, H, W), skip_scale / skip_shift (C,) or None -> (B, C, H, W).
    """
    return scaled_skip_path(skip, skip_scale, skip_shift) + y


def scale_samples(y: Tensor, branch_scale: Optional[Tensor]) -> Tensor:
    """``y * branch_scale[b]`` in y's dtype (stochastic depth's product), or y itself without a scale.

    Shapes: y (B, ...), branch_scale (B,) or None -> y's shape.
    """
    if branch_scale is None:
        return y
    return y * branch_scale.to(y.dtype).view((-1, ) + (1, ) * (y.dim() - 1))


def conv1x1_on_rows(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 kernel as one matrix product over x's positions: x's channels-last
    rows (B*H*W, Cin) times weight^T (a cuBLAS GEMM under ``F.linear``, bias in its epilogue), the result copied
    back to NCHW; Cin and Cout padded with zeros to multiples of ROWS_GEMM_CHANNEL_MULTIPLE (the padded columns'
    products are zero, the padded outputs are dropped). Plain torch ops: autograd's backward pass is two more
    GEMMs on the rows (dx, dweight) and the layout copies. One group; dtypes and autocast as ``F.linear``'s (the
    same rule as ``F.conv2d``'s).

    Shapes: x (B, Cin, H, W), weight (Cout, Cin, 1, 1), bias (Cout,) or None -> (B, Cout, H, W), contiguous.
    """
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    pad_in, pad_out = -cin % ROWS_GEMM_CHANNEL_MULTIPLE, -cout % ROWS_GEMM_CHANNEL_MULTIPLE
    rows = x.permute(0, 2, 3, 1)
    rows = (F.pad(rows, (0, pad_in)) if pad_in else rows).reshape(b * h * w, cin + pad_in)
    matrix = weight.reshape(cout, cin)
    if pad_in or pad_out:
        matrix = F.pad(matrix, (0, pad_in, 0, pad_out))
    if bias is not None and pad_out:
        bias = F.pad(bias, (0, pad_out))
    y = F.linear(rows, matrix, bias).view(b, h, w, cout + pad_out)
    return y[..., :cout].permute(0, 3, 1, 2).contiguous()


def _on_cuda(x: Tensor) -> bool:
    return x.is_cuda


def gemm_on_rows_pays(x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int, impl: Optional[str]) -> bool:
    """Whether the automatic choice (``impl`` and SPARX_LAYER_KERNELS unset) runs the convolution as
    :func:`conv1x1_on_rows` instead of cuDNN's: CUDA tensors, a map where the Triton kernel does not run
    (:func:`triton_is_faster`), one group, a 16-bit convolution (ROWS_GEMM_DTYPES) and a gradient to follow.

    Measured on an H100 (batch 128, 7 x 7 maps, float16 autocast, forward + backward ms, cuDNN (with the skip
    add) against the rows GEMM; ``tools/gpu_checks/check_pointwise_conv.py --only rows-bench --arch b``,
    2026-12-06): SparX-B 636 -> 2544 0.809 / 0.393, 2544 -> 636 + skip 0.771 / 0.412, 636 -> 1272 0.413 / 0.261,
    1272 -> 636 + skip 0.475 / 0.282, 396 -> 396 0.214 / 0.170 (bfloat16 within 6 %); SparX-T (a one-off probe
    of the same steps) 512 -> 2048 0.314 / 0.290, 2048 -> 512 0.313 / 0.290, 1024 -> 512 0.217 / 0.192. SparX-B
    fp16 training 235.0 -> 228.6 ms a step with this and the scan's 7 x 7 tiling (``benchmark.py``). The forward
    pass alone is not always faster (2544 -> 636 + skip: 0.166 against 0.185; T's 1024 -> 512 0.061 against
    0.075), so inference keeps cuDNN."""
    # The environment is read last: only 16-bit training steps on small maps get that far.
    return (_on_cuda(x) and groups == 1 and x.numel() > 0 and not triton_is_faster(x.shape[2] * x.shape[3])
            and conv_dtype(x) in ROWS_GEMM_DTYPES and gpu_backends.gradient_needed(x, weight, bias)
            and requested_choice(impl, gpu_backends.LAYER_KERNELS_ENV, 'impl')[0] is None)


def _reference(x, weight, bias, skip, skip_scale, skip_shift, groups=1, activation=None, branch_scale=None,
               on_rows=False):
    y = conv1x1_on_rows(x, weight, bias) if on_rows else F.conv2d(x, weight, bias, groups=groups)
    if activation is not None:
        return activation_fn(activation)(y)
    y = scale_samples(y, branch_scale)
    return y if skip is None else add_skip_path(y, skip, skip_scale, skip_shift)


def pointwise_conv2d_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                               skip: Optional[Tensor] = None, skip_scale: Optional[Tensor] = None,
                               skip_shift: Optional[Tensor] = None, branch_scale: Optional[Tensor] = None,
                               groups: int = 1, activation: Optional[str] = None) -> Tensor:
    """The operator (module doc) with plain torch ops: ``F.conv2d``, the per-sample product, LayerScale's addcmul,
    an add; or the activation.

    Shapes: x (B, Cin, H, W), weight (Cout, Cin / groups, 1, 1), bias / skip_scale / skip_shift (Cout,) or None,
    skip (B, Cout, H, W) or None, branch_scale (B,) or None -> (B, Cout, H, W), in the dtype of the module doc's
    rule.
    """
    _check_inputs(x, weight, bias, skip, skip_scale, skip_shift, groups, activation, branch_scale)
    return _reference(x, weight, bias, skip, skip_scale, skip_shift, groups, activation, branch_scale)


def _dtypes(x, skip, skip_scale, skip_shift):
    """(conv dtype, output dtype) of the module doc's rule."""
    dtype = conv_dtype(x)
    if skip is None:
        return dtype, dtype
    return dtype, torch.promote_types(skip_path_dtype(skip, skip_scale, skip_shift), dtype)


def triton_is_faster(positions: int) -> bool:
    """Whether the Triton kernel beats cuDNN's convolution with its separate bias and skip adds at this map size:
    the automatic choice of :func:`pointwise_conv2d` (forcing 'triton' runs the kernel everywhere).

    Measured on an H200 (batch 128, the 1x1 convs of SparX-T and B at 224 x 224, forward,
    ``tools/gpu_checks/check_pointwise_conv.py --only bench --arch t|b``): float16 1.25-3.6x at 3136 and 784
    positions, 1.06-2.25x at 196 (with a skip path too, since the kernel reads such maps with vector loads),
    0.52-1.04x at 49; float32 (TF32) 1.17-2.6x at 3136 and 784, 0.93-1.67x at 196, 0.44-1.18x at 49: the map
    size alone decides, with or without a skip path, in every dtype.

    At 49 positions again with the kernels whose tiles run on across samples (H100, SparX-B's stage-4 convs, batch
    128, ``check_pointwise_conv.py --only bench --arch b``, 2026-12-06): float16 0.50-0.70x (the fastest of 18
    tilings 0.55-0.75x, 0.153-0.425 ms against cuDNN's 0.094-0.246 with the adds), TF32 1.17-1.41x. SparX-B with the
    kernel on 7 x 7 maps too: fp16 training 237.9 -> 245.3 ms a step (240.2 with cuDNN's backward behind it), fp16
    inference 67.6 -> 70.2 ms, fp32 inference 93.0 -> 91.8 ms; so 7 x 7 maps stay with cuDNN. Compiled for sm_90,
    the float16 kernel reads a 49-position map's x tiles element by element (2-byte loads: asynchronous copies take
    4, 8 or 16 bytes), the TF32 kernel with 4-byte asynchronous copies that its loop pipelines.
    """
    return positions >= 128


def _runs_reference(x: Tensor, impl: Optional[str]) -> bool:
    """Whether the reference runs (``impl``, the environment, else :func:`triton_is_faster` at x's map size); an
    empty x takes it: nothing to launch."""
    faster = triton_is_faster(x.shape[2] * x.shape[3])
    return gpu_backends.layer_kernel_impl(x, impl, _NAME, faster) == 'reference' or x.numel() == 0


def pointwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, skip: Optional[Tensor] = None,
                     skip_scale: Optional[Tensor] = None, skip_shift: Optional[Tensor] = None,
                     branch_scale: Optional[Tensor] = None, impl: Optional[str] = None, groups: int = 1,
                     activation: Optional[str] = None) -> Tensor:
    """``(conv1x1(x) + bias) * branch_scale[b] + (skip * skip_scale + skip_shift)`` in one pass (module doc),
    differentiable (branch_scale excepted: a constant).

    ``impl`` (else the ``SPARX_LAYER_KERNELS`` variable, else automatic): 'triton' runs the fused Triton kernel
    (CUDA tensors; float32 / float16 / bfloat16 inputs), 'reference' the torch composition. Automatic: Triton for
    CUDA tensors when triton is installed and the map is of a size where the kernel measured faster than cuDNN
    (:func:`triton_is_faster`), else the reference, its convolution as one cuBLAS GEMM on the map's rows in 16-bit
    training steps (:func:`gemm_on_rows_pays`); float64 inputs take the reference. The Triton path's backward
    pass runs Triton kernels for the convolution's input, weight and bias gradients (NCHW throughout) and torch
    ops for the skip path's.

    ``groups``: as ``F.conv2d``'s, output channel block g taking input channel block g. ``activation`` (None,
    'gelu', 'silu'; not with a skip path): applied to the convolution in the kernel's epilogue when no gradient is
    needed, as a torch op after it otherwise (the kernels' backward pass does not differentiate it).

    ``branch_scale`` (B,) or None: per-sample factors of the convolution (module doc; stochastic depth), applied in
    the kernel's epilogue, and to dy in the backward pass's per-channel pass. A :class:`~sparx_mm.models.layers.
    SkipPath` unpacks into (skip, skip_scale, skip_shift, branch_scale).

    Shapes: x (B, Cin, H, W), weight (Cout, Cin / groups, 1, 1), bias / skip_scale / skip_shift (Cout,) or None,
    skip (B, Cout, H, W) or None, branch_scale (B,) or None -> (B, Cout, H, W), in the dtype of the module doc's
    rule; gradients come back in the inputs' dtypes.
    """
    _check_inputs(x, weight, bias, skip, skip_scale, skip_shift, groups, activation, branch_scale)
    dtype, out_dtype = _dtypes(x, skip, skip_scale, skip_shift)
    if _runs_reference(x, impl):
        return _reference(x, weight, bias, skip, skip_scale, skip_shift, groups, activation, branch_scale,
                          gemm_on_rows_pays(x, weight, bias, groups, impl))
    from .triton_pointwise_conv import pointwise_conv2d_triton
    if activation is not None and gpu_backends.gradient_needed(x, weight, bias):
        y = pointwise_conv2d_triton(x, weight, bias, None, None, None, None, dtype, out_dtype, groups)
        return activation_fn(activation)(y)
    return pointwise_conv2d_triton(x, weight, bias, skip, skip_scale, skip_shift, branch_scale, dtype, out_dtype,
                                   groups, activation)


def pointwise_conv2d_and_input(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                               impl: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(pointwise_conv2d(x, weight, bias), x)``, for an x that feeds the convolution and something else (SS2D's
    scan input, which its x_proj also reads).

    x then has two uses, and autograd would sum their gradients in a pass of its own (read two maps, write one).
    On the Triton path, in eager mode with gradients on, the second output is x's alias with the convolution as
    its autograd node: the convolution's backward pass gets the other use's gradient with its own and adds it in
    the epilogue of the kernel that computes dx (in float32, one rounding). Values and gradients are those of the
    two separate uses; the reference path (and a traced or no-gradient call) returns them as such. One group, no
    skip path or activation.

    Shapes: x (B, Cin, H, W), weight (Cout, Cin, 1, 1), bias (Cout,) or None -> y (B, Cout, H, W) in the
    convolution dtype (module doc), and x's values (B, Cin, H, W) in x's dtype.
    """
    _check_inputs(x, weight, bias, None, None, None, 1)
    dtype, out_dtype = _dtypes(x, None, None, None)
    if _runs_reference(x, impl):
        return _reference(x, weight, bias, None, None, None), x
    from .triton_pointwise_conv import pointwise_conv2d_and_input_triton
    return pointwise_conv2d_and_input_triton(x, weight, bias, dtype, out_dtype)
