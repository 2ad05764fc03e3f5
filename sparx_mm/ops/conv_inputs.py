"""What the fused convolution operators (depthwise_conv2d_act, pointwise_conv2d) share: their error messages'
shape text, F.conv2d's device / dtype rule for their tensors, and the dtype their convolution runs in."""
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor


def shape_text(t) -> str:
    """A tensor's shape as a tuple, or the type of what was passed instead."""
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def autocast_on(x: Tensor) -> bool:
    """Whether autocast is enabled for x's device type and applies to x (autocast leaves float64 alone)."""
    return torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64


def conv_dtype(x: Tensor) -> torch.dtype:
    """The dtype a convolution of x runs in: the autocast dtype under autocast (:func:`autocast_on`), else x's."""
    return torch.get_autocast_dtype(x.device.type) if autocast_on(x) else x.dtype


def check_conv_tensors(op: str, x: Tensor, on_x_device: Iterable[Tuple[str, Optional[Tensor]]],
                       parameters: Iterable[Tuple[str, Optional[Tensor]]]) -> None:
    """F.conv2d's rule, which the references follow: every named tensor (None: absent) on x's device, and
    without autocast the convolution's ``parameters`` in x's dtype."""
    for name, t in on_x_device:
        if t is not None and t.device != x.device:
            raise ValueError(f'{op}: {name} is on {t.device} but x is on {x.device}')
    if autocast_on(x):
        return
    for name, t in parameters:
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f'{op}: {name} is {t.dtype} but x is {x.dtype}; without autocast they must match '
                            '(as for F.conv2d)')
