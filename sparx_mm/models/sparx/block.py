"""The SparX block skeleton, shared by every token mixer."""
from typing import Optional

import torch
from torch import nn

from ...ops import OneGroupNorm
from ..layers import ConvFFN, DepthwiseConvAct, DropPath, LayerScale


class SparXBlock(nn.Module):
    """Pre-norm block: x += DPE(x); x = LS1(x) + mixer(A(GN(x), shortcut)); x = LS2(x) + FFN(GN2(x)).

    ``A`` is the ganglion layer's aggregator (the DMCA, or None in a normal layer) that fuses GN(x) with the
    concatenated shortcut into the channels the mixer expects. LayerScale, where enabled, scales the skip
    path, as the official models do. The mixer is stored as ``op`` (the official checkpoints' name).

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
        mixer_in = self.norm(x)
        if self.dmca is not None:
            mixer_in = self.dmca(mixer_in, shortcut)
        x = self.layerscale_1(x) + self.drop_path(self.op(mixer_in))
        return self.layerscale_2(x) + self.drop_path(self.mlp(self.norm2(x)))
