"""Host-side helpers of the Triton kernels: launch sizes in plain integers, and a launch with less host work.

In eager mode the host issues SparX's kernels one by one, and at batch 128 it was measured to set the pace
(docs/benchmarks.md, "Host time"): on a lent H200 machine a SparX-T fp16 forward pass took 55 ms of host time
for ~42 ms of GPU kernels, a training step 160-190 ms for ~140. Two costs of the Triton runtime were large:

* ``triton.cdiv`` and ``triton.next_power_of_2`` are ``constexpr_function`` objects in Triton 3.6: a call
  from the host unwraps its arguments as the compiler would (~5 us; ~1000 calls a SparX-T forward pass).
  :func:`cdiv` and :func:`next_power_of_2` are the same integer arithmetic.
* ``kernel[grid](...)`` binds and specialises every argument and builds the compilation key on every call
  (26 us a launch on that host against 9 us for the compiled kernel's launcher itself). :func:`launch` does
  the same launch from a cache keyed by what Triton specialises on.
"""
import inspect
from typing import Sequence

import torch
import triton
from triton.runtime.jit import JITFunction

from .gpu_backends import choice_from_environment

__all__ = ['cdiv', 'next_power_of_2', 'power_of_two_factor', 'launch']

FAST_LAUNCH_ENV = 'SPARX_FAST_LAUNCH'


def _enabled_by_environment() -> bool:
    return choice_from_environment(FAST_LAUNCH_ENV, ('1', '0'), "1 (launch Triton kernels from the cache of compiled "
                                   "kernels, the default) and 0 (Triton's own launch)") == '1'


#: False: every :func:`launch` is Triton's own (``SPARX_FAST_LAUNCH=0`` at import, or set at run time), to
#: compare or debug.
ENABLED = _enabled_by_environment()

_INT32 = (-2**31, 2**31 - 1)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers (``triton.cdiv`` without its constexpr-function call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n for n >= 1, 0 for n = 0 (as ``triton.next_power_of_2``)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def power_of_two_factor(n: int, limit: int = 8) -> int:
    """The largest power of two up to ``limit`` that divides ``n``. Triton specialises an integer argument on
    divisibility by 16 only; a kernel that takes ``n // factor`` and multiplies it back by the constexpr factor
    lets the compiler see the rest (vector loads of rows ``n`` elements apart, e.g. 14 x 14 maps' 196)."""
    factor = 1
    while factor < limit and n % (2 * factor) == 0:
        factor *= 2
    return factor


class _Plan:
    """A kernel's parameters: names, which are constexpr, defaults; and its compiled kernels by key."""

    def __init__(self, kernel: JITFunction):
        params = list(inspect.signature(kernel.fn).parameters.values())
        self.names = [p.name for p in params]
        self.name_set = frozenset(self.names)
        constexpr = set(kernel.constexprs)
        self.constexpr = [i in constexpr for i in range(len(params))]
        self.defaults = [p.default for p in params]
        self.compiled = {}
        #: The compiled kernel did not expose the launcher called here (another Triton version): keep Triton's.
        self.unsupported = False


def _plan(kernel: JITFunction) -> _Plan:
    # An attribute of the kernel, not a dict entry: a JITFunction hashes its source's cache key.
    plan = getattr(kernel, '_sparx_launch_plan', None)
    if plan is None:
        plan = kernel._sparx_launch_plan = _Plan(kernel)
    return plan


def _specialisation(value, constexpr: bool):
    """What Triton's compilation key holds of one argument: a constexpr's value; a tensor's dtype and whether its
    address is a multiple of 16; an integer's type (i32 / i64), whether it is 1 and whether it is a multiple of
    16; else the type (None, float, bool)."""
    if constexpr:
        return value
    if isinstance(value, torch.Tensor):
        return value.dtype, not value.data_ptr() & 15
    if type(value) is int:
        return value == 1, not value & 15, _INT32[0] <= value <= _INT32[1], value < 2**63
    return type(value)


#: Triton's runtime settings (``triton.knobs``, Triton 3.4 and later); None: older versions keep their own launch.
_RUNTIME = getattr(getattr(triton, 'knobs', None), 'runtime', None)


def _hook_active(hook) -> bool:
    """A launch hook that would run: set (Triton 3.6), or a non-empty ``HookChain`` (Triton 3.8 and later)."""
    return hook is not None and bool(getattr(hook, 'calls', True))


def _hooks_set() -> bool:
    return _RUNTIME is None or _hook_active(_RUNTIME.launch_enter_hook) or _hook_active(_RUNTIME.launch_exit_hook)


def launch(kernel, grid: Sequence[int], *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, with the compiled kernel taken from a cache instead of Triton's
    per-call binding.

    The cache key holds everything Triton's own key depends on (each argument's :func:`_specialisation`, the
    launch options such as ``num_warps``, the current device), so a hit launches the kernel Triton would have
    chosen. Triton's own launch runs instead for a first call with a key (which compiles or loads the kernel
    and returns it for the cache), under Triton's CPU interpreter, while launch hooks are set (profilers),
    with Triton before 3.4 (no ``triton.knobs``), and when :data:`ENABLED` is False.
    """
    plan = _plan(kernel) if ENABLED and isinstance(kernel, JITFunction) else None
    if plan is None or plan.unsupported or _hooks_set():
        kernel[grid](*args, **kwargs)
        return
    values = list(args)
    for i in range(len(args), len(plan.names)):
        values.append(kwargs.get(plan.names[i], plan.defaults[i]))
    device = torch.cuda.current_device()
    key = (device, tuple(_specialisation(v, c) for v, c in zip(values, plan.constexpr)),
           tuple((k, v) for k, v in kwargs.items() if k not in plan.name_set))
    entry = plan.compiled.get(key)
    if entry is None:
        compiled = kernel[grid](*args, **kwargs)
        if hasattr(compiled, 'result'):  # a future of an asynchronous compilation
            compiled = compiled.result()
        try:
            plan.compiled[key] = (compiled.run, compiled.function, compiled.packed_metadata)
        except AttributeError:
            plan.unsupported = True
        return
    run, function, metadata = entry
    grid = tuple(grid) + (1, 1)
    run(grid[0], grid[1], grid[2], torch._C._cuda_getCurrentRawStream(device), function, metadata, None, None, None,
        *values)
