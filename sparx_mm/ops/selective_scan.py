"""Selective scan (the S6 recurrence of Mamba) with a pluggable backend.

The maths follows VMamba's "oflex" selective scan: inputs may be any floating
dtype, the recurrence is always evaluated in (at least) float32 and the output
is float32 (float64 when any input is float64).

For channel ``d`` (``0 <= d < KD``) belonging to group ``k = d // (KD // K)``::

    delta[b, d, t] <- softplus(delta[b, d, t] + delta_bias[d])  # both optional
    h[b, d, n, t] = exp(delta[b, d, t] * A[d, n]) * h[b, d, n, t - 1]
                    + delta[b, d, t] * B[b, k, n, t] * u[b, d, t]
                    (with h[b, d, n, -1] = 0)
    y[b, d, t] = sum_n C[b, k, n, t] * h[b, d, n, t] + D[d] * u[b, d, t]

:func:`selective_scan_reference` is a pure-PyTorch implementation (CPU or GPU,
differentiable by autograd). :func:`selective_scan` is the single entry point
used by the models: it validates the inputs once and hands them to a backend
chosen from a small registry, so that faster kernels (Triton, mamba-ssm's CUDA
extension, ...) can register themselves without the models knowing about them.
"""
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'SCAN_BACKEND_ENV',
    'available_scan_backends',
    'check_scan_inputs',
    'register_scan_backend',
    'selective_scan',
    'selective_scan_reference',
    'unregister_scan_backend',
]

#: Environment variable that forces a backend by name (read at every call).
SCAN_BACKEND_ENV = 'SPARX_SCAN_BACKEND'

#: Priority of the built-in reference backend; anything registered with the
#: default priority (0) or higher is tried before it.
REFERENCE_PRIORITY = -1000


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------
def _shape(t: Tensor) -> str:
    return '(' + ', '.join(str(s) for s in t.shape) + ')'


def check_scan_inputs(u: Tensor,
                      delta: Tensor,
                      A: Tensor,
                      B: Tensor,
                      C: Tensor,
                      D: Optional[Tensor] = None,
                      delta_bias: Optional[Tensor] = None) -> None:
    """Validate the arguments of a selective scan.

    Shared by every backend so that all of them reject bad inputs with the
    same messages. Accepted layout::

        u, delta:      (batch, KD, L)
        A:             (KD, N)
        B, C:          (batch, K, N, L), K >= 1 dividing KD
        D, delta_bias: (KD,) or None

    All tensors must have a floating-point dtype and live on one device.

    Raises:
        TypeError: an argument is not a tensor or not floating point.
        ValueError: a shape does not match the layout above.
    """
    named = {'u': u, 'delta': delta, 'A': A, 'B': B, 'C': C}
    optional = {'D': D, 'delta_bias': delta_bias}
    for name, t in list(named.items()) + list(optional.items()):
        if t is None and name in optional:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f'selective_scan: {name} must be a torch.Tensor'
                            f'{" or None" if name in optional else ""}, '
                            f'got {type(t).__name__}')
        if not t.is_floating_point():
            raise TypeError(
                f'selective_scan: {name} must have a floating-point dtype '
                f'(float16, bfloat16, float32 or float64), got {t.dtype}')

    if u.dim() != 3:
        raise ValueError('selective_scan: u must be 3-D (batch, KD, L), '
                         f'got shape {_shape(u)}')
    if delta.shape != u.shape:
        raise ValueError('selective_scan: delta must have the shape of u '
                         f'(batch, KD, L) = {_shape(u)}, got {_shape(delta)}')
    batch, kd, length = u.shape

    if A.dim() != 2 or A.shape[0] != kd:
        raise ValueError(f'selective_scan: A must be 2-D (KD, N) with KD={kd}'
                         f' (the channels of u), got shape {_shape(A)}')
    d_state = A.shape[1]
    if d_state < 1:
        raise ValueError('selective_scan: A must have a state size N >= 1, '
                         f'got shape {_shape(A)}')

    for name, t in (('B', B), ('C', C)):
        if t.dim() != 4:
            raise ValueError(
                f'selective_scan: {name} must be 4-D (batch, K, N, L), '
                f'got shape {_shape(t)}')
        if t.shape[0] != batch:
            raise ValueError(
                f'selective_scan: {name} batch size {t.shape[0]} does not '
                f'match the batch size of u ({batch})')
        if t.shape[2] != d_state:
            raise ValueError(
                f'selective_scan: {name} state size {t.shape[2]} (dim 2) does '
                f'not match the state size N={d_state} of A')
        if t.shape[3] != length:
            raise ValueError(
                f'selective_scan: {name} sequence length {t.shape[3]} (dim 3) '
                f'does not match the length L={length} of u')
    if B.shape != C.shape:
        raise ValueError('selective_scan: B and C must have the same shape '
                         f'(batch, K, N, L), got {_shape(B)} and {_shape(C)}')
    groups = B.shape[1]
    if groups < 1 or kd % groups != 0:
        raise ValueError(
            f'selective_scan: the group count K={groups} of B and C must be '
            f'>= 1 and divide the channel count KD={kd} of u')

    for name, t in optional.items():
        if t is not None and tuple(t.shape) != (kd, ):
            raise ValueError(f'selective_scan: {name} must have shape '
                             f'(KD,) = ({kd},) or be None, got {_shape(t)}')

    devices = {name: t.device for name, t in
               list(named.items()) + list(optional.items()) if t is not None}
    if len(set(devices.values())) > 1:
        listing = ', '.join(f'{n}: {d}' for n, d in devices.items())
        raise ValueError('selective_scan: all tensors must be on the same '
                         f'device, got {listing}')


# ---------------------------------------------------------------------------
# Reference implementation
# ---------------------------------------------------------------------------
def _linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """Inclusive scan of ``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = 0``).

    Hillis-Steele doubling over the last axis: after the step with stride
    ``s``, ``b[t]`` holds the recurrence started ``2s`` positions back and
    ``a[t]`` the product of the matching ``2s`` coefficients. That is
    ``ceil(log2(L))`` vectorised steps instead of ``L`` Python iterations.
    Only products of the ``a_t`` appear (no division, no exp of a cumulative
    sum), so nothing overflows as long as ``|a_t| <= 1``.

    Args:
        a, b: (..., L) tensors of one shape.

    Returns:
        (..., L) tensor of the ``h_t``.
    """
    length = a.shape[-1]
    stride = 1
    while stride < length:
        # torch.cat instead of in-place slice writes: every step must keep its
        # inputs intact for autograd.
        carried = torch.addcmul(b[..., stride:], a[..., stride:],
                                b[..., :-stride])
        b = torch.cat((b[..., :stride], carried), dim=-1)
        if 2 * stride < length:  # the last step never reads ``a`` again
            a = torch.cat(
                (a[..., :stride], a[..., stride:] * a[..., :-stride]), dim=-1)
        stride *= 2
    return b


def _compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    # float64 is kept for gradcheck and for accuracy studies; every lower
    # precision is promoted to float32 ("oflex": float output).
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _selective_scan_reference(u: Tensor,
                              delta: Tensor,
                              A: Tensor,
                              B: Tensor,
                              C: Tensor,
                              D: Optional[Tensor] = None,
                              delta_bias: Optional[Tensor] = None,
                              delta_softplus: bool = True) -> Tensor:
    """:func:`selective_scan_reference` without the input checks."""
    dtype = _compute_dtype(u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    batch, kd, length = u.shape
    groups, d_state = B.shape[1], A.shape[1]
    per_group = kd // groups

    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)

    # (batch, KD, N, L)
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None])
    # B is shared by the channels of a group: broadcast it over a (K, G) split
    # of KD instead of materialising a repeat_interleave copy.
    drive = ((delta * u).view(batch, groups, per_group, 1, length) *
             B[:, :, None]).reshape(batch, kd, d_state, length)

    h = _linear_scan(decay, drive)
    y = (h.view(batch, groups, per_group, d_state, length) *
         C[:, :, None]).sum(dim=3).reshape(batch, kd, length)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y


def selective_scan_reference(u: Tensor,
                             delta: Tensor,
                             A: Tensor,
                             B: Tensor,
                             C: Tensor,
                             D: Optional[Tensor] = None,
                             delta_bias: Optional[Tensor] = None,
                             delta_softplus: bool = True) -> Tensor:
    """Pure-PyTorch selective scan, differentiable by autograd.

    Args:
        u: (batch, KD, L) input sequence.
        delta: (batch, KD, L) step sizes (before bias / softplus).
        A: (KD, N) state matrix (diagonal per channel; negative for decay).
        B: (batch, K, N, L) input projection, shared by the KD // K channels
            of each of the K groups.
        C: (batch, K, N, L) output projection, grouped like ``B``.
        D: (KD,) skip connection weight, or None.
        delta_bias: (KD,) added to ``delta`` before the softplus, or None.
        delta_softplus: apply softplus to ``delta``.

    Returns:
        (batch, KD, L) tensor, float32 for float16 / bfloat16 / float32
        inputs and float64 when any input is float64.
    """
    check_scan_inputs(u, delta, A, B, C, D, delta_bias)
    return _selective_scan_reference(u, delta, A, B, C, D, delta_bias,
                                     delta_softplus)


# ---------------------------------------------------------------------------
# Backend registry and dispatch
# ---------------------------------------------------------------------------
ScanFn = Callable[..., Tensor]
AvailableFn = Callable[[Tensor], bool]


@dataclass(frozen=True)
class _ScanBackend:
    name: str
    fn: ScanFn
    is_available: AvailableFn
    priority: int
    order: int  # registration order, breaks priority ties


_BACKENDS: Dict[str, _ScanBackend] = {}
_registration_counter = 0


def register_scan_backend(name: str,
                          fn: ScanFn,
                          is_available: Optional[AvailableFn] = None,
                          priority: int = 0,
                          force: bool = False) -> None:
    """Register a selective-scan implementation.

    Args:
        name: key used by ``backend=`` and ``SPARX_SCAN_BACKEND``.
        fn: callable with the signature of :func:`selective_scan_reference`
            (``u, delta, A, B, C, D, delta_bias, delta_softplus``). It receives
            inputs already checked by :func:`check_scan_inputs`.
        is_available: ``is_available(u) -> bool`` says whether ``fn`` can run
            on tensors like ``u`` (device, dtype, installed libraries...).
            None means always available.
        priority: automatic selection tries higher priorities first; the
            reference backend has priority ``REFERENCE_PRIORITY`` (-1000).
        force: replace an existing backend of the same name instead of
            raising.

    Raises:
        ValueError: ``name`` is already registered and ``force`` is False.
        TypeError: ``fn`` or ``is_available`` is not callable.
    """
    global _registration_counter
    if not isinstance(name, str) or not name:
        raise TypeError(f'scan backend name must be a non-empty str, '
                        f'got {name!r}')
    if not callable(fn):
        raise TypeError(f'scan backend {name!r}: fn must be callable')
    if is_available is None:
        is_available = _always_available
    elif not callable(is_available):
        raise TypeError(f'scan backend {name!r}: is_available must be '
                        'callable or None')
    if name in _BACKENDS and not force:
        raise ValueError(f'scan backend {name!r} is already registered; '
                         'pass force=True to replace it')
    _registration_counter += 1
    _BACKENDS[name] = _ScanBackend(name, fn, is_available, int(priority),
                                   _registration_counter)


def unregister_scan_backend(name: str) -> None:
    """Remove a registered backend (mainly for tests); unknown names are
    ignored."""
    _BACKENDS.pop(name, None)


def _by_priority() -> List[_ScanBackend]:
    return sorted(_BACKENDS.values(), key=lambda b: (-b.priority, b.order))


def available_scan_backends(u: Optional[Tensor] = None) -> List[str]:
    """Names of the registered backends, highest priority first.

    Args:
        u: if given, keep only the backends whose ``is_available(u)`` is true.
    """
    return [b.name for b in _by_priority()
            if u is None or b.is_available(u)]


def requested_choice(value: Optional[str], env: str, argument: str) -> Tuple[Optional[str], str]:
    """The implementation a caller asked for: ``value`` if given, else the environment variable ``env`` (None
    when unset or empty), with where it came from, for error messages ('impl argument', 'environment
    variable SPARX_...')."""
    if value is not None:
        return value, f'{argument} argument'
    return os.environ.get(env, '').strip() or None, f'environment variable {env}'


def _resolve_backend(u: Tensor, backend: Optional[str]) -> _ScanBackend:
    backend, source = requested_choice(backend, SCAN_BACKEND_ENV, 'backend')
    if backend is None:
        for candidate in _by_priority():
            if candidate.is_available(u):
                return candidate
        raise RuntimeError('selective_scan: no registered scan backend is '
                           f'available for {u.device.type} tensors of dtype '
                           f'{u.dtype}; registered: {sorted(_BACKENDS)}')
    if backend not in _BACKENDS:
        raise ValueError(f'selective_scan: unknown scan backend {backend!r} '
                         f'(from the {source}); registered backends: '
                         f'{", ".join(b.name for b in _by_priority())}')
    chosen = _BACKENDS[backend]
    if not chosen.is_available(u):
        raise RuntimeError(
            f'selective_scan: scan backend {backend!r} (forced by the '
            f'{source}) is not available for {u.device.type} tensors of '
            f'dtype {u.dtype}; available here: {available_scan_backends(u)}')
    return chosen


def selective_scan(u: Tensor,
                   delta: Tensor,
                   A: Tensor,
                   B: Tensor,
                   C: Tensor,
                   D: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = True,
                   backend: Optional[str] = None) -> Tensor:
    """Selective scan through the best available backend.

    Same arguments, shapes and result as :func:`selective_scan_reference`.
    The backend is, in order: ``backend`` if given, else the value of the
    ``SPARX_SCAN_BACKEND`` environment variable (read at each call) if set,
    else the highest-priority registered backend whose ``is_available(u)``
    is true ('reference' always is).

    Raises:
        ValueError: invalid inputs, or an unknown backend name.
        RuntimeError: the forced backend cannot run these tensors.
    """
    check_scan_inputs(u, delta, A, B, C, D, delta_bias)
    chosen = _resolve_backend(u, backend)
    return chosen.fn(u, delta, A, B, C, D, delta_bias, delta_softplus)


def _always_available(u: Tensor) -> bool:
    return True


register_scan_backend('reference', _selective_scan_reference,
                      priority=REFERENCE_PRIORITY)
