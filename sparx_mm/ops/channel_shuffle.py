"""A channel concatenation followed by a channel shuffle, as one operator (the DMCA's interleave of its x, attention
and value channels before its grouped fusion conv).

For tensors (B, C_i, H, W) and ``groups`` dividing N = sum C_i::

    concat_shuffled(tensors, groups) = shuffle_groups(torch.cat(tensors, 1), groups)

where :func:`shuffle_groups` puts concatenated channel g at g % groups * (N / groups) + g // groups, so each group of
the next grouped conv sees the blocks in rotation. Written as two torch ops it is a copy for the concatenation, a
copy for the shuffle and a third for the shuffle's gradient. :func:`concat_shuffled` is one pass forward and one
backward (each input's gradient gathered contiguous): on CUDA Triton kernels (``triton_channel_shuffle.py``: whole
planes moved with vector accesses, one launch an input), elsewhere (and under torch.compile) one ``torch.cat`` of
strided channel slices and its gradient's slice copies (torch's strided copies: a 32-byte sector a few elements).
"""
import itertools
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import gpu_backends

__all__ = ['concat_shuffled', 'concat_shuffled_reference', 'shuffle_groups']


def shuffle_groups(x: Tensor, groups: int) -> Tensor:
    """(B, N, H, W) -> (B, N, H, W) with new channel j*(N/groups) + c = old channel groups*c + j (j < groups), so
    each of ``groups`` groups of a following grouped conv sees the blocks of a concatenation in rotation (the
    DMCA's x, attention and value channels: ``groups=3``). The definition."""
    b, channels, h, w = x.shape
    return x.reshape(b, channels // groups, groups, h, w).transpose(1, 2).reshape(b, channels, h, w)


def concat_shuffled_reference(tensors: Sequence[Tensor], groups: int) -> Tensor:
    """The definition: ``shuffle_groups(torch.cat(tensors, 1), groups)``."""
    return shuffle_groups(torch.cat(list(tensors), 1), groups)


def channel_starts(channels: Sequence[int]) -> List[int]:
    """Where each of tensors of ``channels`` channels starts in their concatenation."""
    return [0, *itertools.accumulate(channels)][:-1]


def _shuffle_runs(channels: Sequence[int], groups: int) -> List[Tuple[int, slice, int]]:
    """``shuffle_groups(torch.cat(tensors, 1), groups)`` for tensors of ``channels`` channels, as runs in output
    order: (tensor, its channels first, first + groups, ... as a slice, their count)."""
    runs, starts = [], channel_starts(channels)
    for j in range(groups):  # output group j: concatenated channels j, j + groups, j + 2 groups, ...
        for source, (start, count) in enumerate(zip(starts, channels)):
            # Output group j's channels before this tensor's, and up to its end: len(range(j, bound, groups)).
            first, last = len(range(j, start, groups)), len(range(j, start + count, groups))
            if last > first:
                offset = groups * first + j - start
                runs.append((source, slice(offset, offset + groups * (last - first - 1) + 1, groups), last - first))
    return runs


class _ConcatShuffled(torch.autograd.Function):
    """torch ops: forward one torch.cat of strided channel slices (each plane still contiguous); backward each
    input's gradient gathered from the output's, contiguous."""

    @staticmethod
    def forward(ctx, groups, *tensors):
        ctx.runs = _shuffle_runs([t.shape[1] for t in tensors], groups)
        ctx.inputs = [(t.shape, t.dtype) for t in tensors]
        return torch.cat([tensors[s][:, channels] for s, channels, _ in ctx.runs], 1)

    @staticmethod
    def backward(ctx, grad):
        grads = [grad.new_empty(shape, dtype=dtype) if needed else None
                 for (shape, dtype), needed in zip(ctx.inputs, ctx.needs_input_grad[1:])]
        offset = 0
        for s, channels, count in ctx.runs:
            if grads[s] is not None:
                grads[s][:, channels] = grad[:, offset:offset + count]
            offset += count
        return (None, *grads)


def _check(tensors, groups):
    if type(groups) is not int or groups < 1:
        raise ValueError(f'concat_shuffled: groups must be a positive int, got {groups!r}')
    if not tensors or not all(isinstance(t, Tensor) and t.dim() == 4 for t in tensors):
        raise ValueError('concat_shuffled: tensors must be a non-empty sequence of 4-D (B, C_i, H, W) tensors, got '
                         f'{[tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in tensors]}')
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape[0] != first.shape[0] or t.shape[2:] != first.shape[2:] or t.device != first.device:
            raise ValueError('concat_shuffled: every tensor must have the same batch, height, width and device, got '
                             f'{[(tuple(t.shape), str(t.device)) for t in tensors]}')
    total = sum(t.shape[1] for t in tensors)
    if total % groups:
        raise ValueError(f'concat_shuffled: the {total} concatenated channels do not split into {groups} groups')


def concat_shuffled(tensors: Sequence[Tensor], groups: int, impl: Optional[str] = None) -> Tensor:
    """``shuffle_groups(torch.cat(tensors, dim=1), groups)`` in one pass over memory, forward and backward (module
    doc): the same values, dtype (torch.cat's promotion) and gradients (each input's contiguous, in its dtype).

    ``impl``: 'triton' (CUDA tensors), 'reference' (the torch ops), or None: ``SPARX_LAYER_KERNELS``, else Triton
    for CUDA tensors when triton is installed (the torch ops under torch.compile).

    Shapes: tensors (B, C_i, H, W), sum of C_i a multiple of ``groups`` -> (B, sum C_i, H, W).
    """
    tensors = list(tensors)
    _check(tensors, groups)
    dtypes = {t.dtype for t in tensors}
    floating = all(dtype in gpu_backends.TRITON_DTYPES for dtype in dtypes)
    chosen = gpu_backends.layer_kernel_impl(tensors[0], impl, 'concat_shuffled', floating)
    if chosen == 'triton' and not torch.compiler.is_compiling() and tensors[0].numel():
        from .triton_channel_shuffle import concat_shuffled_triton
        return concat_shuffled_triton(tensors, groups)
    return _ConcatShuffled.apply(groups, *tensors)
