"""One Triton operator, called two ways: as a torch.library custom op under torch.compile, directly in eager mode.

A custom op lets torch.compile capture the blocks around a Triton kernel without a graph break, but every eager
call pays for the dispatcher, the schema and the op's autograd wrapper. Measured on the lent H100 machine's
host CPU (tiny tensors, so the GPU waits on the host; ``.device-kit``-style micro-benchmark): the 1x1-conv
kernel's launch alone took 44 us a call, through its custom op 118 us, and 280 us with gradients on through
the op's registered autograd formula; ``F.conv2d`` took 38-43 us. SparX-T makes ~150 such calls a forward
pass, so in eager mode the host, not the GPU, set the pace of fp16 inference and training.

:class:`TritonOp` registers the custom op (for torch.compile) and, in eager mode, runs the implementation
directly, through a ``torch.autograd.Function`` with the same ``setup_context`` / ``backward`` when a gradient
is needed.
"""
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ['TritonOp', 'traced_call']

#: Tensor types of eager calls; anything else (fake, functional, proxy tensors) is being traced.
_EAGER_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def traced_call(args) -> bool:
    """Whether a call with ``args`` is being traced (torch.compile, its AOT autograd tracing of backward formulas
    with fake tensors, a dispatch mode such as torch.library.opcheck's) rather than run: then only the custom op
    will do."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return True
    return any(type(a) not in _EAGER_TENSOR_TYPES for a in args if isinstance(a, torch.Tensor))


def _autograd_function(name: str, fn: Callable, setup_context: Callable, backward: Callable):
    """A torch.autograd.Function running ``fn`` with the custom op's autograd formula. Of a tuple of outputs
    the first is differentiable and the rest (saved statistics, scan states) are not: their gradients reach
    ``backward`` as None, not as materialised zeros.

    ``forward`` takes ``ctx`` and calls ``setup_context`` itself: a Function with a separate ``setup_context``
    binds its arguments to ``inspect.signature(forward)`` on every call (torch 2.11; 35 us a call under cProfile),
    host time in a training step whose pace the host sets (docs/benchmarks.md, "Host time")."""

    def forward(ctx, *args):
        output = fn(*args)
        if isinstance(output, tuple):
            ctx.mark_non_differentiable(*output[1:])
            ctx.set_materialize_grads(False)
        setup_context(ctx, args, output)
        return output

    return type(name.replace('::', '_'), (torch.autograd.Function, ),
                dict(forward=staticmethod(forward), backward=staticmethod(backward)))


class TritonOp:
    """``fn`` as the custom op ``name`` (``fake``: its shape-only version; ``setup_context`` / ``backward``: its
    autograd formula, or None for ops without one, such as backward kernels), callable as itself.

    ``fn`` is annotated as ``torch.library.custom_op`` requires and does not mutate its inputs. A call runs the
    custom op while anything traces it (torch.compile, AOT autograd's fake tensors, a dispatch mode), else ``fn``
    itself: through a ``torch.autograd.Function`` with the same formula when grad mode is on and a tensor
    argument requires a gradient, directly otherwise.
    ``self.op`` is the registered custom op (for ``torch.library.opcheck``).
    """

    def __init__(self, name: str, fn: Callable, fake: Callable, setup_context: Optional[Callable] = None,
                 backward: Optional[Callable] = None):
        self.fn = fn
        self.op = torch.library.custom_op(name, mutates_args=())(fn)
        self.op.register_fake(fake)
        self.function = None
        if backward is not None:
            self.op.register_autograd(backward, setup_context=setup_context)
            self.function = _autograd_function(name, fn, setup_context, backward)

    def __call__(self, *args):
        if traced_call(args):
            return self.op(*args)
        if self.function is not None and torch.is_grad_enabled() and \
                any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return self.function.apply(*args)
        return self.fn(*args)
