"""GroupNorm with one group (``nn.GroupNorm(1, C)``, SparX's norm before its 1x1 convolutions) as one operator.

For x (B, C, *spatial), each sample is normalised over all of its C * prod(spatial) elements, then scaled and
shifted per channel::

    y[b, c, ...] = (x[b, c, ...] - mean_b) / sqrt(var_b + eps) * weight[c] + bias[c]

with the (biased) mean and variance of sample b, in float32 whatever x's dtype. :func:`group_norm_one_group`
runs it through the Triton kernels (``triton_group_norm.py``: per-row moments merged per sample, then one
normalising pass that writes the output dtype directly) or through :func:`group_norm_one_group_reference`
(``F.group_norm`` in float32), chosen as the other fused layer kernels are (``gpu_backends.layer_kernel_impl``).
Importing this module does not import triton.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import gpu_backends

__all__ = ['OneGroupNorm', 'group_norm_one_group', 'group_norm_one_group_reference',
           'group_norm_one_group_with_skip', 'group_norm_one_group_with_recipe']


def group_norm_one_group_reference(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                                   out_dtype: torch.dtype) -> Tensor:
    """The definition: ``F.group_norm`` with one group on float32 copies, cast to ``out_dtype``.

    x (B, C, *spatial), weight / bias (C,) or None -> (B, C, *spatial) ``out_dtype``. Autograd runs through
    torch; gradients come back in the inputs' dtypes.
    """
    with torch.autocast(x.device.type, enabled=False):  # float32 whatever autocast's lists say about group_norm
        y = F.group_norm(x.float(), 1, None if weight is None else weight.float(),
                         None if bias is None else bias.float(), eps)
    return y.to(out_dtype)


def _check(x, weight, bias):
    if not isinstance(x, Tensor):
        raise TypeError(f'group_norm_one_group: x must be a tensor, got {type(x).__name__}')
    if x.dim() < 2:
        raise ValueError(f'group_norm_one_group: x must be (B, C, *spatial) with at least 2 dimensions, got shape '
                         f'{tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'group_norm_one_group: x must be a floating-point tensor (float32, float16, bfloat16 or '
                        f'float64), got {x.dtype}')
    channels = x.shape[1]
    for name, t in (('weight', weight), ('bias', bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f'group_norm_one_group: {name} must be (C,) = ({channels},) for x of shape '
                             f'{tuple(x.shape)}, or None; got shape {tuple(t.shape)}')


def _dispatch(x, weight, bias, impl, op: str) -> Tuple[bool, torch.dtype]:
    """Checks the inputs; (whether the reference runs, the output dtype) of :func:`group_norm_one_group`'s rules.
    An empty x takes the reference: nothing to launch."""
    _check(x, weight, bias)
    device_type = x.device.type
    out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    return gpu_backends.layer_kernel_impl(x, impl, op) == 'reference' or x.numel() == 0, out_dtype


def group_norm_one_group(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                         eps: float = 1e-5, impl: Optional[str] = None) -> Tensor:
    """GroupNorm with one group (module doc): x (B, C, *spatial) -> (B, C, *spatial).

    Args:
        x: (B, C, *spatial), any floating dtype; (B, C, H, W) in SparX, (B, C) and (B, C, L) work too.
        weight, bias: (C,) per-channel scale and shift, or None (1 and 0).
        eps: added to the variance.
        impl: 'triton' (CUDA tensors; the Triton kernels), 'reference' (plain torch), or None: the
            ``SPARX_LAYER_KERNELS`` environment variable, else Triton for CUDA tensors when triton is installed
            and the reference elsewhere. float64 inputs always take the reference when the choice is automatic;
            forcing 'triton' on them is a TypeError.

    Returns:
        The normalised tensor, computed in float32 (float64 x too) and returned in the autocast dtype
        (``torch.get_autocast_dtype(x.device.type)``) when autocast is enabled for x's device type, else in
        x's dtype. Under autocast this is what ``nn.GroupNorm`` (float32 output) followed by an autocast
        convolution (which casts its input to the autocast dtype), SparX's every use, computes: the same
        values, without writing and re-reading a float32 copy.
    """
    reference, out_dtype = _dispatch(x, weight, bias, impl, 'group_norm_one_group')
    if reference:
        return group_norm_one_group_reference(x, weight, bias, eps, out_dtype)
    from .triton_group_norm import group_norm_one_group_triton
    return group_norm_one_group_triton(x, weight, bias, eps, out_dtype)


def group_norm_one_group_with_skip(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                                   eps: float = 1e-5, impl: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(group_norm_one_group(x, ...), x)``, for a pre-norm residual block whose skip path is x itself.

    x then has two uses, and autograd would sum their gradients in a pass of its own (read two maps, write one).
    On the Triton path, in eager mode with gradients on, the second output is x's alias with the norm as its
    autograd node: the norm's backward pass gets the skip path's gradient with its own and adds it into dx in
    its dx kernel (one more read there, in float32, one rounding). Values and gradients are those of the two
    separate uses; the reference path (and a traced or no-gradient call) returns them as such.

    Args and dtypes as :func:`group_norm_one_group`. Returns (y, skip): y (B, C, *spatial) as that function's,
    skip x's values (B, C, *spatial), x's dtype.
    """
    reference, out_dtype = _dispatch(x, weight, bias, impl, 'group_norm_one_group_with_skip')
    if reference:
        return group_norm_one_group_reference(x, weight, bias, eps, out_dtype), x
    from .triton_group_norm import group_norm_one_group_with_skip_triton
    return group_norm_one_group_with_skip_triton(x, weight, bias, eps, out_dtype)


def group_norm_one_group_with_recipe(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                                     eps: float = 1e-5, impl: Optional[str] = None
                                     ) -> Tuple[Tensor, Callable[..., Tensor], tuple]:
    """``(y, fn, args)``: y = ``group_norm_one_group(x, ...)`` and a recipe that computes y again, ``fn(*args)``,
    for :func:`sparx_mm.models.recompute.recompute_saved` (a backward pass that recomputes y instead of keeping
    it). On the Triton path the recipe is the normalising pass alone on the per-sample mean and rstd this call
    computed (kept: 8 bytes a sample), one read of x where the whole norm takes two; on the reference path it is
    the whole norm. Either way ``fn(*args)`` gives y bit for bit, in the dtype chosen here (autocast's then).

    Args and dtypes as :func:`group_norm_one_group`.
    """
    reference, out_dtype = _dispatch(x, weight, bias, impl, 'group_norm_one_group_with_recipe')
    if reference:
        args = (x, weight, bias, eps, out_dtype)
        return group_norm_one_group_reference(*args), group_norm_one_group_reference, args
    from .triton_group_norm import group_norm_one_group_triton_with_recipe
    return group_norm_one_group_triton_with_recipe(x, weight, bias, eps, out_dtype)


class OneGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm(1, num_channels)`` computed by :func:`group_norm_one_group`.

    Same parameters (``weight``, ``bias`` (C,) when ``affine``) and state-dict keys as ``nn.GroupNorm``, so
    checkpoints of either load into the other. Input (B, C, *spatial); the output dtype follows
    :func:`group_norm_one_group`'s rule (the autocast dtype under autocast, else the input's).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, num_channels, eps, affine)

    def forward(self, x: Tensor) -> Tensor:
        return group_norm_one_group(x, self.weight, self.bias, self.eps)

    def forward_with_recipe(self, x: Tensor) -> Tuple[Tensor, Callable[..., Tensor], tuple]:
        """(normalised x, fn, args) with ``fn(*args)`` the normalised x again:
        :func:`group_norm_one_group_with_recipe`."""
        return group_norm_one_group_with_recipe(x, self.weight, self.bias, self.eps)

    def forward_with_skip(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(normalised x, x as a skip path): :func:`group_norm_one_group_with_skip`."""
        return group_norm_one_group_with_skip(x, self.weight, self.bias, self.eps)
