"""SS2D: the four-route 2D selective-scan token mixer of VMamba, as configured by SparX."""
import math
from typing import Optional

import torch
from torch import nn

from ...ops import ROUTE_COUNTS, OneGroupNorm, cross_selective_scan, pointwise_conv2d_and_input
from ..layers import DepthwiseConvAct, PointwiseConv, SkipPath
from ..recompute import recompute_saved

SCAN_ROUTES = 4


class SS2D(nn.Module):
    """SS2D token mixer without gating branch (SparX's variant).

    ``in_proj`` (1x1 conv to d_inner, or Identity when the caller already feeds d_inner channels, as a
    ganglion layer's DMCA does) -> depthwise conv -> SiLU -> selective scan over four routes (row-major,
    column-major and both reversed) -> GroupNorm -> 1x1 conv back to ``dim``.

    Args:
        dim: channels of the input and output (C).
        d_inner: channels of the scanned sequence (D), 2C in SparX.
        d_state: SSM state size N (1 in SparX).
        dt_rank: rank R of the dt projection; 'auto' is ceil(dim / 16) (of the stage width, as the
            official models compute it).
        d_conv: depthwise conv kernel size.
        project_input: False when the input already has d_inner channels (then in_proj is Identity).
        routes: scan routes K (each with its own projections and SSM parameters): 4 (default) is the
            four-route cross scan; 2 scans the row-major sequence forwards and backwards (the Bi-SSM of
            ViM); 1 scans it forwards only (vanilla Mamba's single causal direction).

    ``norm_recompute``: while training, out_proj does not keep the normalised scan output for its backward pass:
    it is recomputed from the scan output, which the GroupNorm keeps anyway, and the per-sample statistics of the
    forward pass (:func:`~sparx_mm.models.recompute.recompute_saved`, :meth:`OneGroupNorm.forward_with_recipe`;
    outputs and gradients unchanged).

    Shapes: (B, C, H, W) -> (B, C, H, W); with project_input=False the input is (B, D, H, W).
    """
    #: forward takes a skip path (SparXBlock folds its residual into out_proj).
    takes_skip = True

    def __init__(self, dim: int, d_inner: int, d_state: int = 1, dt_rank='auto', d_conv: int = 5,
                 project_input: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, routes: int = SCAN_ROUTES):
        super().__init__()
        if routes not in ROUTE_COUNTS:
            raise ValueError(f'SS2D: routes must be one of {ROUTE_COUNTS}, got {routes!r}')
        self.routes = routes
        self.dim = dim
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        k, r, n = routes, self.dt_rank, d_state

        self.in_proj = PointwiseConv(dim, d_inner) if project_input else nn.Identity()
        self.conv2d = DepthwiseConvAct(d_inner, d_conv, activation='silu')  # SiLU(dwconv(x)) in one kernel
        # Per-route projections stored stacked, as grouped 1x1 conv weights (the official layout).
        self.x_proj_weight = nn.Parameter(torch.empty(k * (r + 2 * n), d_inner, 1))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = OneGroupNorm(d_inner)
        self.out_proj = PointwiseConv(d_inner, dim)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.norm_recompute = False
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba's initialisation of the SSM parameters (the official 'v0' scheme)."""
        dt_min, dt_max, dt_floor = self._dt_range
        # x_proj: the default init of the per-route nn.Linear(d_inner, R + 2N) layers.
        bound = 1 / math.sqrt(self.d_inner)
        self.x_proj_weight.uniform_(-bound, bound)
        std = self.dt_rank ** -0.5
        self.dt_projs_weight.uniform_(-std, std)
        # dt bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max].
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32))
                          .expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, H, W) float32: scan the K routes and sum them back (before out_norm)."""
        b, d, h, w = x.shape
        k, r, n = self.routes, self.dt_rank, self.d_state
        # The per-route x_proj (grouped 1x1 convs on the route sequences in the official code, F.conv1d: TF32 on
        # GPUs by default, as here) is one 1x1 conv on the map itself: a per-position projection commutes with
        # reordering the positions. The layer operator reads and writes the NCHW maps directly, where
        # torch.matmul(W, x.flatten(2)) copied x transposed and the product back (docs/benchmarks.md).
        # x feeds x_proj and the scan: the projection's backward adds the scan's gradient of x into its dx.
        proj, x = pointwise_conv2d_and_input(x, self.x_proj_weight.view(k * (r + 2 * n), d, 1, 1))
        return cross_selective_scan(
            x, proj.view(b, k, r + 2 * n, h * w), self.dt_projs_weight, -torch.exp(self.A_logs.float()),
            D=self.Ds.float(), dt_bias=self.dt_projs_bias.reshape(-1).float(), routes=k)

    def forward(self, x: torch.Tensor, skip: Optional[SkipPath] = None) -> torch.Tensor:
        """``skip``: a block's skip path, added inside out_proj's kernel (see :class:`SkipPath`)."""
        y = self.forward_core(self.conv2d(self.in_proj(x)))
        if not (self.norm_recompute and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return self.out_proj(self.out_norm(y), skip)
        # The recipe renormalises y with the statistics of this pass: one read of y, not the whole norm's two.
        normed, renormalise, args = self.out_norm.forward_with_recipe(y)
        with recompute_saved(normed, renormalise, *args):
            return self.out_proj(normed, skip)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, '
                f'routes={self.routes}')
