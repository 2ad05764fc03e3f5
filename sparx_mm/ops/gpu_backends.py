"""Registration of the GPU scan backends (imported lazily: nothing here needs triton or a GPU to import).

* 'mamba_ssm' (priority 20): mamba-ssm's CUDA kernel, when the package and its compiled extension are
  installed. It is given float32 inputs so that its state and output are float32, as SparX's scan needs.
* 'triton' (priority 10): this package's Triton kernels (``triton_scan.py``), for any CUDA tensor.

``SPARX_SCAN_BACKEND=reference|triton|mamba_ssm`` (or ``backend=``) forces one for debugging.
"""
import functools
import importlib.util
import os

import torch

from .selective_scan import register_scan_backend, requested_choice


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# Looked up once at import (without importing the packages): torch.compile cannot trace importlib, so a
# lookup inside the models' forward would split their graphs.
TRITON_INSTALLED = _has_module('triton')
MAMBA_SSM_INSTALLED = _has_module('mamba_ssm')


@functools.lru_cache(maxsize=None)
def _mamba_scan_fn():
    """mamba-ssm's selective_scan_fn if it imports with its CUDA extension, else None."""
    if not MAMBA_SSM_INSTALLED:
        return None
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        import selective_scan_cuda  # noqa: F401  (the compiled kernel; absent in CPU-only installs)
    except Exception:  # a broken optional install must not break the package
        return None
    return selective_scan_fn


def choice_from_environment(env: str, choices, accepted: str) -> str:
    """The value of the environment variable ``env``, stripped (unset or empty: ``choices[0]``, the default); a
    value not among ``choices`` is a ValueError that names the variable and what is accepted (``accepted``)."""
    value = os.environ.get(env, '').strip() or choices[0]
    if value not in choices:
        raise ValueError(f'environment variable {env}={value!r}: accepted are {accepted}')
    return value


def triton_usable(x) -> bool:
    """Whether this package's Triton kernels can run on tensors like ``x`` (CUDA, triton installed)."""
    return x.is_cuda and TRITON_INSTALLED


#: Input dtypes of the fused Triton kernels (scan core, layer kernels; float32 arithmetic inside): float64
#: takes the references.
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Environment variable choosing the implementation of the fused layer kernels (one-group GroupNorm, depthwise
#: conv + activation): 'triton' or 'reference' (plain torch ops); unset = Triton for CUDA tensors of
#: TRITON_DTYPES when triton is installed, else the reference.
LAYER_KERNELS_ENV = 'SPARX_LAYER_KERNELS'
LAYER_KERNEL_IMPLS = ('triton', 'reference')


def layer_kernel_impl(x, impl=None, op: str = 'layer kernels', triton_preferred: bool = True) -> str:
    """'triton' or 'reference' for the layer kernel ``op`` on ``x``: ``impl`` if given, else
    ``SPARX_LAYER_KERNELS``, else automatic (see LAYER_KERNELS_ENV; ``triton_preferred=False``: the operator's
    kernel measured slower than the torch composition for these inputs, and the automatic choice is the
    reference).

    Forcing 'triton' where it cannot run (CPU tensors, no triton, a dtype outside TRITON_DTYPES) is an error
    that says so and where the choice came from.
    """
    impl, source = requested_choice(impl, LAYER_KERNELS_ENV, 'impl')
    if impl is None:
        return 'triton' if triton_preferred and triton_usable(x) and x.dtype in TRITON_DTYPES else 'reference'
    if impl not in LAYER_KERNEL_IMPLS:
        raise ValueError(f'{op}: unknown layer-kernel implementation {impl!r} (from the {source}); '
                         f'choose one of {LAYER_KERNEL_IMPLS}')
    if impl == 'triton' and not (triton_usable(x) or interpreting()):
        raise RuntimeError(f"{op}: 'triton' (from the {source}) needs CUDA tensors and triton installed, "
                           f"got a {x.device.type} tensor{'' if TRITON_INSTALLED else ' and no triton'}; "
                           "use 'reference' or leave it unset")
    if impl == 'triton' and x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: 'triton' (from the {source}) computes in float32 and takes float32, float16 or "
                        f"bfloat16 inputs, got {x.dtype}; use 'reference' (the automatic choice does)")
    return impl


def gradient_needed(*tensors) -> bool:
    """Whether autograd will differentiate through ``tensors`` (None entries allowed): grad mode is on and one of
    them requires a gradient. The dispatchers pick kernels without a backward pass (inference tilings, fused
    epilogues, the BatchNorm fold) only when it is not."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``): the wrappers then accept CPU tensors."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def check_triton_launchable(x, op: str, dtypes=TRITON_DTYPES) -> None:
    """The Triton wrappers' own guard (their dispatchers pick the references before it matters): CUDA tensors,
    or CPU ones under the interpreter, of ``dtypes`` (None: any)."""
    if not x.is_cuda and not interpreting():
        raise RuntimeError(f'{op} needs CUDA tensors, got a {x.device.type} tensor; on CPU use the reference '
                           'implementation (the automatic choice does)')
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f'{op} computes in float32 and takes float32, float16 or bfloat16 inputs, got {x.dtype}; '
                        'use the reference implementation (the automatic choice does for float64)')


def _triton_scan(u, delta, A, B, C, D, delta_bias, delta_softplus):
    from .triton_scan import selective_scan_triton
    return selective_scan_triton(u, delta, A, B, C, D, delta_bias, delta_softplus)


def _mamba_scan(u, delta, A, B, C, D, delta_bias, delta_softplus):
    f32 = [t.float() for t in (u, delta, B, C)]
    return _mamba_scan_fn()(f32[0], f32[1], A.float(), f32[2], f32[3], None if D is None else D.float(),
                            delta_bias=None if delta_bias is None else delta_bias.float(),
                            delta_softplus=delta_softplus)


register_scan_backend('triton', _triton_scan, is_available=triton_usable,
                      priority=10)
register_scan_backend('mamba_ssm', _mamba_scan, priority=20,
                      is_available=lambda u: u.is_cuda and MAMBA_SSM_INSTALLED and _mamba_scan_fn() is not None)
