"""SS2D's scan core as one operator: scan routes of a 2-D map, per-route dt projection, selective scan, merge.

For a map ``x`` (B, D, H, W) and K routes (4: row-major, column-major and both reversed; 2: row-major
forwards and backwards; 1: row-major forwards), with ``proj`` (B, K, R + 2N, H*W) the per-route
projections ``x_proj_k(x)`` at row-major positions (rows: R dt ranks, then N for B, then N for C)::

    for each route k, reading positions in the route's order (route_sequence):
        u_k      = x along route k                                          (B, D, L)
        dt_k     = dt_weight[k] @ proj[:, k, :R] along route k + dt_bias[k]  (B, D, L)
        y_k      = selective_scan(u_k, dt_k, A[k], B = proj[:, k, R:R+N], C = proj[:, k, R+N:], D[k])
    y = sum_k y_k, each put back at its row-major positions                 (B, D, H, W), float32

This equals VMamba's cross-scan -> x_proj / dt_proj on the four sequences -> scan -> cross-merge (a
per-position projection commutes with reordering positions). :func:`cross_selective_scan_reference`
computes it with plain tensor ops and :func:`selective_scan` (any registered scan backend); the Triton
kernels (``triton_cross_scan.py``) read the routes from ``x`` and one transposed copy of it and never
materialise the K route copies, the (B, K*D, L) dt tensor or the K outputs in scan order.
"""
from typing import Optional

import torch
from torch import Tensor

from . import gpu_backends
from .cross_scan import cross_merge, cross_scan
from .selective_scan import requested_choice, selective_scan

__all__ = ['ROUTE_COUNTS', 'cross_selective_scan', 'cross_selective_scan_reference', 'route_sequence',
           'route_to_positions']

#: Accepted route counts: 4 = SS2D's cross scan; 2 = row-major forwards + backwards (ViM's Bi-SSM);
#: 1 = row-major forwards only (Mamba's single causal direction).
ROUTE_COUNTS = (1, 2, 4)

#: Environment variable choosing the implementation: 'fused' (the Triton kernel) or 'unfused' (the
#: composition, with the selective-scan backend that ``SPARX_SCAN_BACKEND`` or the registry picks).
IMPL_ENV = 'SPARX_CROSS_SCAN'
IMPLS = ('fused', 'unfused')


def _route_kind(route: int, routes: int):
    """(transposed, reversed) of route ``route`` of a ``routes``-route scan."""
    return routes == 4 and route % 2 == 1, routes > 1 and route >= routes // 2


def route_sequence(x: Tensor, route: int, routes: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H*W): the map read in the order of route ``route`` of a ``routes``-route scan."""
    transposed, reversed_ = _route_kind(route, routes)
    seq = (x.transpose(2, 3) if transposed else x).flatten(2)
    return seq.flip(-1) if reversed_ else seq


def route_to_positions(seq: Tensor, route: int, routes: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`route_sequence`: (B, C, H*W) in route order -> (B, C, H, W)."""
    transposed, reversed_ = _route_kind(route, routes)
    if reversed_:
        seq = seq.flip(-1)
    if transposed:
        return seq.reshape(*seq.shape[:2], width, height).transpose(2, 3)
    return seq.reshape(*seq.shape[:2], height, width)


def _check(x, proj, dt_weight, A, D, dt_bias, routes):
    if routes not in ROUTE_COUNTS:
        raise ValueError(f'cross_selective_scan: routes must be one of {ROUTE_COUNTS}, got {routes!r}')
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError('cross_selective_scan: x must be a 4-D tensor (B, D, H, W), got '
                         f'{getattr(x, "shape", type(x).__name__)}')
    b, d, h, w = x.shape
    if dt_weight.dim() != 3 or dt_weight.shape[:2] != (routes, d):
        raise ValueError(f'cross_selective_scan: dt_weight must be (K, D, R) = ({routes}, {d}, R), got '
                         f'{tuple(dt_weight.shape)}')
    rank = dt_weight.shape[2]
    if A.dim() != 2 or A.shape[0] != routes * d:
        raise ValueError(f'cross_selective_scan: A must be (K*D, N) = ({routes * d}, N), got {tuple(A.shape)}')
    n = A.shape[1]
    if tuple(proj.shape) != (b, routes, rank + 2 * n, h * w):
        raise ValueError(f'cross_selective_scan: proj must be (B, K, R + 2N, H*W) = '
                         f'({b}, {routes}, {rank + 2 * n}, {h * w}), got {tuple(proj.shape)}')
    for name, t in (('D', D), ('dt_bias', dt_bias)):
        if t is not None and tuple(t.shape) != (routes * d, ):
            raise ValueError(f'cross_selective_scan: {name} must be (K*D,) = ({routes * d},), got '
                             f'{tuple(t.shape)}')


def cross_selective_scan_reference(x: Tensor, proj: Tensor, dt_weight: Tensor, A: Tensor,
                                   D: Optional[Tensor] = None, dt_bias: Optional[Tensor] = None,
                                   routes: int = 4, scan_backend: Optional[str] = None) -> Tensor:
    """The operator with plain tensor ops and ``selective_scan(backend=scan_backend)``; see the module doc.

    Shapes: x (B, D, H, W), proj (B, K, R + 2N, H*W), dt_weight (K, D, R), A (K*D, N), D and dt_bias
    (K*D,) -> (B, D, H, W) float32 (float64 for float64 inputs).
    """
    _check(x, proj, dt_weight, A, D, dt_bias, routes)
    b, d, h, w = x.shape
    rank, n = dt_weight.shape[2], A.shape[1]
    length = h * w
    if routes == 4:
        xs = cross_scan(x)
    else:
        xs = torch.stack([route_sequence(x, k, routes) for k in range(routes)], dim=1)
    proj_maps = proj.view(b, routes, rank + 2 * n, h, w)
    seqs = torch.stack([route_sequence(proj_maps[:, k], k, routes) for k in range(routes)], dim=1)
    dts, bs, cs = torch.split(seqs, [rank, n, n], dim=2)
    dts = torch.einsum('bkrl,kdr->bkdl', dts, dt_weight.to(dts.dtype))
    ys = selective_scan(xs.reshape(b, routes * d, length), dts.reshape(b, routes * d, length), A,
                        bs.contiguous(), cs.contiguous(), D=D, delta_bias=dt_bias, delta_softplus=True,
                        backend=scan_backend).view(b, routes, d, length)
    if routes == 4:
        return cross_merge(ys, height=h, width=w).view(b, d, h, w)
    return sum(route_to_positions(ys[:, k], k, routes, h, w) for k in range(routes))


def cross_selective_scan(x: Tensor, proj: Tensor, dt_weight: Tensor, A: Tensor, D: Optional[Tensor] = None,
                         dt_bias: Optional[Tensor] = None, routes: int = 4, impl: Optional[str] = None,
                         scan_backend: Optional[str] = None) -> Tensor:
    """SS2D's scan core (module doc) through the chosen implementation.

    ``impl`` (else ``SPARX_CROSS_SCAN``, else automatic): 'fused' runs the Triton kernels (CUDA); 'unfused'
    runs the reference composition with ``selective_scan(backend=scan_backend)`` (``scan_backend`` None: the
    ``SPARX_SCAN_BACKEND`` variable or the best registered backend). Automatic: 'fused' for CUDA tensors
    (not float64) with triton installed, for inference and training alike (on an H100 it was faster at every
    SparX-T stage size, forward and backward, and keeps no route copies: SparX-T fp16 trains at 450 instead of
    348 img/s in 13.5 instead of 18.1 GB on one machine; docs/benchmarks.md); elsewhere 'unfused'.

    Shapes: x (B, D, H, W), proj (B, K, R + 2N, H*W), dt_weight (K, D, R), A (K*D, N), D and dt_bias
    (K*D,) -> (B, D, H, W) float32.
    """
    impl, source = requested_choice(impl, IMPL_ENV, 'impl')
    if impl is None:
        fused = gpu_backends.triton_usable(x) and x.dtype in gpu_backends.TRITON_DTYPES
        impl = 'fused' if fused else 'unfused'
    if impl not in IMPLS:
        raise ValueError(f'cross_selective_scan: unknown implementation {impl!r} (from the {source}); '
                         f'choose one of {IMPLS}')
    if impl == 'fused':
        _check(x, proj, dt_weight, A, D, dt_bias, routes)
        needs_grad = gpu_backends.gradient_needed(x, proj, dt_weight, A, D, dt_bias)
        from .triton_cross_scan import cross_selective_scan_triton
        return cross_selective_scan_triton(x, proj, dt_weight, A, D, dt_bias, routes, needs_grad)
    return cross_selective_scan_reference(x, proj, dt_weight, A, D, dt_bias, routes, scan_backend=scan_backend)
