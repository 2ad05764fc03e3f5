"""Four-route cross scan of a 2-D feature map (VMamba's SS2D layout).

A (B, D, H, W) map is read as four 1-D sequences of length L = H * W:

* route 0: row-major (``x.flatten(2)``),
* route 1: column-major (``x.transpose(2, 3).flatten(2)``),
* route 2: route 0 reversed,
* route 3: route 1 reversed.

:func:`cross_merge` maps four such sequences back to row-major positions and
sums them; it is the adjoint of :func:`cross_scan`, so autograd's gradient of
one is the other. Both are plain tensor ops (views, flips, adds).
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ['cross_scan', 'cross_merge']

NUM_ROUTES = 4


def cross_scan(x: Tensor) -> Tensor:
    """Unfold a feature map into four scan routes.

    Args:
        x: (B, D, H, W) feature map.

    Returns:
        (B, 4, D, H * W) tensor; ``out[:, r]`` is route ``r`` (see module
        docstring).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f'cross_scan: x must be a torch.Tensor, '
                        f'got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError('cross_scan: x must be 4-D (B, D, H, W), got shape '
                         f'{tuple(x.shape)}')
    forward = torch.stack((x.flatten(2), x.transpose(2, 3).flatten(2)), dim=1)
    return torch.cat((forward, forward.flip(-1)), dim=1)


def cross_merge(y: Tensor,
                height: Optional[int] = None,
                width: Optional[int] = None) -> Tensor:
    """Fold four scan routes back onto the row-major grid and sum them.

    Args:
        y: (B, 4, D, H, W), where each route's H * W values are its sequence
            in scan order (not spatial positions), or (B, 4, D, L) together
            with ``height`` and ``width`` (H * W = L).
        height, width: the map size H, W; required for 4-D ``y``, optional
            (but must agree) for 5-D ``y``.

    Returns:
        (B, D, H * W) tensor in row-major order.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f'cross_merge: y must be a torch.Tensor, '
                        f'got {type(y).__name__}')
    if y.dim() == 5:
        h, w = y.shape[3], y.shape[4]
        if (height is not None and height != h) or (width is not None
                                                     and width != w):
            raise ValueError(
                f'cross_merge: height={height}, width={width} disagree with '
                f'the (H, W) = ({h}, {w}) of y of shape {tuple(y.shape)}')
        y = y.flatten(3)
    elif y.dim() == 4:
        if height is None or width is None:
            raise ValueError(
                'cross_merge: y of shape (B, 4, D, L) needs both height and '
                'width keyword arguments (H * W = L), got '
                f'height={height}, width={width}')
        h, w = int(height), int(width)
        if h < 1 or w < 1 or h * w != y.shape[3]:
            raise ValueError(
                f'cross_merge: height * width = {h} * {w} must equal the '
                f'sequence length L = {y.shape[3]} of y and both must be '
                '>= 1')
    else:
        raise ValueError('cross_merge: y must be 5-D (B, 4, D, H, W) or 4-D '
                         f'(B, 4, D, L), got shape {tuple(y.shape)}')
    if y.shape[1] != NUM_ROUTES:
        raise ValueError(f'cross_merge: y must hold {NUM_ROUTES} routes in '
                         f'dim 1, got shape {tuple(y.shape)}')

    batch, _, channels, length = y.shape
    # Undo the reversals first so that routes 0/2 and 1/3 can be added before
    # the (more expensive) transpose of the column-major pair.
    pairs = y[:, :2] + y[:, 2:].flip(-1)
    column_major = pairs[:, 1].reshape(batch, channels, w, h)
    return pairs[:, 0] + column_major.transpose(2, 3).reshape(
        batch, channels, length)
