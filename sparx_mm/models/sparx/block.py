"""The SparX block skeleton, shared by every token mixer."""
from typing import Optional

import torch
from torch import nn

from ...ops import OneGroupNorm, gpu_backends
from ..layers import ConvFFN, DepthwiseConvAct, DropPath, LayerScale, SkipPath


class SparXBlock(nn.Module):
    """Pre-norm block: x += DPE(x); x = LS1(x) + mixer(A(GN(x), shortcut)); x = LS2(x) + FFN(GN2(x)).

    ``A`` is the ganglion layer's aggregator (the DMCA, or None in a normal layer) that fuses GN(x) with the
    concatenated shortcut into the channels the mixer expects. LayerScale, where enabled, scales the skip
    path, as the official models do. The mixer is stored as ``op`` (the official checkpoints' name).

    Where the layer kernels run Triton (GPUs), each residual ``LS(x) + drop_path(branch(...))`` is added inside
    the branch's last 1x1 convolution (:class:`~sparx_mm.models.layers.SkipPath`; mixers and FFNs that take one say
    so with ``takes_skip``), stochastic depth's per-sample factors applied there too: the same sum, without passes
    of its own; and the norm before the branch takes x's skip-path gradient into its own backward pass, so that
    autograd does not sum x's two gradients in another.

    Args:
        dim: channels C.
        mixer: token mixer, taking the aggregator's output (or GN(x)) and returning C channels.
        aggregator: None for normal layers.
        drop_path, mlp_ratio, layer_scale_init (None = no LayerScale), dpe (depthwise positional conv).

    Shapes: x (B, C, H, W), shortcut None or (B, n*C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, mixer: nn.Module, aggregator: Optional[nn.Module] = None,
                 drop_path: float = 0.0, mlp_ratio: float = 4, layer_scale_init: Optional[float] = None,
                 dpe: bool = True):
        super().__init__()
        self.pos_embed = DepthwiseConvAct(dim, 3, residual=True) if dpe else None  # x + dwconv(x)
        self.norm = OneGroupNorm(dim)
        self.dmca = aggregator
        self.op = mixer
        self.norm2 = OneGroupNorm(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if layer_scale_init is None:
            self.layerscale_1 = self.layerscale_2 = nn.Identity()
        else:
            self.layerscale_1 = LayerScale(dim, layer_scale_init)
            self.layerscale_2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        fused = gpu_backends.layer_kernel_impl(x, op='SparXBlock') == 'triton'
        mixer_in, x = self._norm_and_skip(self.norm, x, fused and self._takes_skip(self.op))
        if self.dmca is not None:
            mixer_in = self.dmca(mixer_in, shortcut)
        x = self._residual(x, self.layerscale_1, self.op, mixer_in, fused)
        ffn_in, x = self._norm_and_skip(self.norm2, x, fused and self._takes_skip(self.mlp))
        return self._residual(x, self.layerscale_2, self.mlp, ffn_in, fused)

    @staticmethod
    def _takes_skip(branch: nn.Module) -> bool:
        return getattr(branch, 'takes_skip', False)

    @staticmethod
    def _norm_and_skip(norm: OneGroupNorm, x: torch.Tensor, fused: bool):
        """(norm(x), x): where the residual is fused, x's two gradients (the branch's, through the norm, and the
        skip path's) are summed inside the norm's backward kernel (``OneGroupNorm.forward_with_skip``)."""
        return norm.forward_with_skip(x) if fused else (norm(x), x)

    def _residual(self, x: torch.Tensor, layer_scale: nn.Module, branch: nn.Module, branch_in: torch.Tensor,
                  fused: bool) -> torch.Tensor:
        """``layer_scale(x) + drop_path(branch(branch_in))``, folded into the branch where it can be (class doc).

        On the reference path (CPU) the sum is written out: it is the official composition, operator for
        operator (and what the FLOP counter and the parity tests trace)."""
        if fused and self._takes_skip(branch):
            drop_path_active = isinstance(self.drop_path, DropPath) and self.drop_path.active
            branch_scale = self.drop_path.sample_scale(x.shape[0], x.device) if drop_path_active else None
            return branch(branch_in, SkipPath.of(x, layer_scale, branch_scale))
        return layer_scale(x) + self.drop_path(branch(branch_in))
