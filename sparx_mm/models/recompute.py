"""Keep a recipe instead of a map: recompute cheap tensors in the backward pass instead of saving them.

A 1x1 convolution keeps its input for its weight gradient. In a SparX block two such inputs are one cheap
pass away from a tensor that autograd keeps anyway: SS2D's normalised scan output from the scan output (which
the GroupNorm keeps for its own backward pass), ConvFFN's activated hidden map ``act(h + dwconv(h))`` from
``h`` (which the fused depthwise operator keeps). Inside :func:`recompute_saved`, wherever an operator asks
autograd to save that tensor, autograd keeps the recipe instead, and the backward pass runs it when the
operator's backward asks for the tensor: one normalising or depthwise pass in place of holding the map from
the forward pass to the backward pass (SparX-T fp16 at batch 128: ~2 GB less; docs/benchmarks.md).

Unlike ``torch.utils.checkpoint`` nothing else is rerun: the consumer's forward pass runs once. Recipes must
be deterministic (the kernels of the layers that use this are: no atomics, no randomness); the recomputed
tensor replays the autocast state of the forward pass, and its shape and dtype are checked.

Saved-tensor hooks that were active before (a user's offloading or counting hooks) still see every other
tensor: ours hand those on to them. Under torch.compile and without gradients this does nothing (the
compiler plans its own recomputation).
"""
import threading
from contextlib import contextmanager
from typing import Callable, NamedTuple, Optional

import torch
from torch.autograd.graph import saved_tensors_hooks

__all__ = ['recompute_saved']


class _Recipe(NamedTuple):
    fn: Callable[..., torch.Tensor]
    args: tuple
    device_type: str
    autocast: Optional[torch.dtype]  # the forward pass's autocast dtype, None when autocast was off
    shape: torch.Size
    dtype: torch.dtype


class _Entry(NamedTuple):
    tensor: torch.Tensor
    data_ptr: int
    recipe: _Recipe


class _Passed(NamedTuple):
    """A tensor saved as usual (detached: a hook that kept the tensor itself would tie the graph in a cycle),
    or what the hooks active before ours made of it (``outer``: their unpack hook)."""
    value: object
    outer: Optional[Callable]


_local = threading.local()


def _entries() -> list:
    if not hasattr(_local, 'entries'):
        _local.entries = []
    return _local.entries


def _is_entry(t: torch.Tensor, entry: _Entry) -> bool:
    # Identity of the Python object is not guaranteed for tensors that C++ operators save; equal data pointer,
    # shape, strides, dtype and device mean the same values. (Cheapest test first: this runs for every tensor
    # saved inside the context.)
    ref = entry.tensor
    return (t.data_ptr() == entry.data_ptr and t.shape == ref.shape and t.dtype == ref.dtype
            and t.stride() == ref.stride() and t.device == ref.device)


def _outer_hooks():
    top = getattr(torch._C._autograd, '_top_saved_tensors_default_hooks', None)
    return top(False) if top is not None else None


def _make_hooks(outer):
    outer_pack, outer_unpack = outer if outer is not None else (None, None)

    def pack(t: torch.Tensor):
        for entry in reversed(_entries()):
            if _is_entry(t, entry):
                return entry.recipe
        if outer_pack is not None:
            return _Passed(outer_pack(t), outer_unpack)
        return _Passed(t.detach(), None)

    def unpack(packed):
        if isinstance(packed, _Passed):
            return packed.outer(packed.value) if packed.outer is not None else packed.value
        recipe = packed
        with torch.no_grad(), torch.autocast(recipe.device_type, dtype=recipe.autocast,
                                             enabled=recipe.autocast is not None):
            out = recipe.fn(*recipe.args)
        if out.shape != recipe.shape or out.dtype != recipe.dtype:
            raise RuntimeError(f'recompute_saved: the recipe gave {tuple(out.shape)} {out.dtype}, the forward pass '
                               f'saved {tuple(recipe.shape)} {recipe.dtype}; a recipe must recompute the same tensor')
        return out

    return pack, unpack


@contextmanager
def recompute_saved(tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *args, enabled: bool = True):
    """While the block runs, autograd keeps ``(fn, args)`` instead of ``tensor`` wherever an operator saves
    ``tensor`` for its backward pass, and calls ``fn(*args)`` (without gradients, under the forward pass's
    autocast state) when that backward pass needs it. ``fn(*args)`` must give ``tensor``'s values again:
    deterministic, from inputs that stay unchanged (tensors autograd keeps anyway, so that nothing more is
    held). Contexts nest. Does nothing when ``enabled`` is False, gradients are off, ``tensor`` needs no
    gradient, or torch.compile is tracing.

    Example (``norm`` keeps ``x`` itself, ``proj`` would keep ``norm(x)``)::

        y = norm(x)
        with recompute_saved(y, norm, x):
            out = proj(y)
    """
    if not (enabled and torch.is_grad_enabled() and tensor.requires_grad) or torch.compiler.is_compiling():
        yield
        return
    device_type = tensor.device.type
    autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    entries = _entries()
    entries.append(_Entry(tensor, tensor.data_ptr(), _Recipe(fn, args, device_type, autocast, tensor.shape,
                                                             tensor.dtype)))
    hooks = saved_tensors_hooks(*_make_hooks(_outer_hooks())) if len(entries) == 1 else None
    try:
        if hooks is None:
            yield
        else:
            with hooks:
                yield
    finally:
        entries.pop()
