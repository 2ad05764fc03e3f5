"""What a ganglion layer uses to fuse its input with the earlier layers' features: the DMCA, and the
alternatives of the paper's ablations (Tables 6 and 8), all with the DMCA's interface.

Every aggregator takes ``x`` (B, C, H, W), the block's normalised input, and ``shortcut`` (B, m*C, H, W),
the concatenation the ganglion plan asks for, and returns (B, out_channels, H, W), the input of the token
mixer's core (2C for SS2D, C for window attention).

* ``'dmca'``: :class:`~sparx_mm.models.sparx.DMCA` (the official model).
* ``'concat'``: no DMCA: concatenate x with the (normalised) shortcut and fuse them with a ConvFFN.
* ``'no_cgca'``: DMCA without its channel attention (CGCA): the projected query and the values are
  concatenated and fused (no keys, no spatial reduction).
* ``'no_skip'``: DMCA whose fusion sees only the attention output (no x, no values).

(The DMCA without spatial reduction is not an aggregator of its own: set every ``sr_ratios`` entry to 1.)
"""
import torch
from mmcv.cnn import build_norm_layer
from torch import nn

from ...ops import OneGroupNorm, concat_shuffled
from ..sparx.dmca import ATTN_GROUPS, DMCA, channel_attention, pad_channels_by_pooling

AGGREGATORS = ('dmca', 'concat', 'no_cgca', 'no_skip')


def _bn(norm_cfg, channels):
    return build_norm_layer(norm_cfg, channels)[1]


def _grouped_fuse(channels: int, out_channels: int, groups: int) -> nn.Sequential:
    """Depthwise 3x3 (bias) -> GELU -> 1x1 conv (bias) in ``groups`` groups to the largest multiple of
    ``groups`` <= out_channels (the rest is padded by channel pooling, as in the DMCA)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        nn.GELU(),
        nn.Conv2d(channels, out_channels // groups * groups, 1, groups=groups),
    )


class ConcatAggregator(nn.Module):
    """'Concat' ablation: [x, GN(shortcut)] -> ConvFFN (1x1 conv, + its depthwise 3x3, GELU, 1x1 conv).

    The hidden width of the ConvFFN is ``out_channels``.
    """

    def __init__(self, dim: int, shortcut_channels: int, out_channels: int):
        super().__init__()
        self.dim, self.shortcut_channels, self.out_channels = dim, shortcut_channels, out_channels
        in_channels = dim + shortcut_channels
        self.shortcut_norm = OneGroupNorm(shortcut_channels)
        self.fc1 = nn.Conv2d(in_channels, out_channels, 1)
        self.dwconv = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        y = self.fc1(torch.cat([x, self.shortcut_norm(shortcut)], dim=1))
        return self.fc2(self.act(y + self.dwconv(y)))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, shortcut_channels={self.shortcut_channels}, out_channels={self.out_channels}'


class NoCGCAAggregator(nn.Module):
    """'w/o CGCA' ablation: the DMCA without channel attention.

    shortcut -> GN -> depthwise 3x3 -> BN -> GELU -> 1x1 conv to C -> GELU -> v (1x1 conv + BN);
    q = 1x1 conv + BN of x; [q, v] shuffled in two groups -> depthwise 3x3 -> GELU -> grouped 1x1 (2 groups)
    -> out_channels (padded by channel pooling when odd).
    """

    def __init__(self, dim: int, shortcut_channels: int, out_channels: int, norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.dim, self.shortcut_channels, self.out_channels = dim, shortcut_channels, out_channels
        self.shortcut_norm = OneGroupNorm(shortcut_channels)
        self.shortcut_proj = nn.Sequential(
            nn.Conv2d(shortcut_channels, shortcut_channels, 3, padding=1, groups=shortcut_channels, bias=False),
            _bn(norm_cfg, shortcut_channels),
            nn.GELU(),
            nn.Conv2d(shortcut_channels, dim, 1),
            nn.GELU(),
        )
        self.q = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), _bn(norm_cfg, dim))
        self.v = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), _bn(norm_cfg, dim))
        self.fuse = _grouped_fuse(2 * dim, out_channels, 2)
        self.channel_padding = out_channels - out_channels // 2 * 2

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        v = self.v(self.shortcut_proj(self.shortcut_norm(shortcut)))
        y = concat_shuffled([self.q(x), v], 2)
        return pad_channels_by_pooling(self.fuse(y), self.channel_padding)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, shortcut_channels={self.shortcut_channels}, out_channels={self.out_channels}'


class NoSkipDMCA(DMCA):
    """'w/o Skip' ablation: the DMCA whose fusion sees only the attention output (x and the values are not
    concatenated): attn -> depthwise 3x3 -> GELU -> 1x1 conv to out_channels."""

    def __init__(self, dim: int, shortcut_channels: int, out_channels: int, sr_ratio: int = 1,
                 scale_mode: str = 'fixed', norm_cfg: dict = dict(type='BN')):
        super().__init__(dim, shortcut_channels, out_channels, sr_ratio, scale_mode, norm_cfg)
        self.fuse = _grouped_fuse(dim, out_channels, 1)
        self.channel_padding = 0

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if shortcut.shape[1] != self.shortcut_channels:
            raise ValueError(f'NoSkipDMCA expected a shortcut of {self.shortcut_channels} channels, '
                             f'got {tuple(shortcut.shape)}')
        keys, values = self.shortcut_proj(self.shortcut_norm(shortcut)).chunk(2, dim=1)
        scale = self.scale if self.scale_mode == 'learnable' else None
        attn = channel_attention(self.q(x), self.k(keys), self.v(values), ATTN_GROUPS, scale)
        return self.fuse(attn)


def build_aggregator(name: str, dim: int, shortcut_channels: int, out_channels: int, sr_ratio: int = 1,
                     scale_mode: str = 'fixed', norm_cfg: dict = dict(type='BN')) -> nn.Module:
    """The ganglion-layer aggregator ``name`` (one of AGGREGATORS); see the module docstring."""
    if name == 'dmca':
        return DMCA(dim, shortcut_channels, out_channels, sr_ratio, scale_mode, norm_cfg)
    if name == 'no_skip':
        return NoSkipDMCA(dim, shortcut_channels, out_channels, sr_ratio, scale_mode, norm_cfg)
    if name == 'concat':
        return ConcatAggregator(dim, shortcut_channels, out_channels)
    if name == 'no_cgca':
        return NoCGCAAggregator(dim, shortcut_channels, out_channels, norm_cfg)
    raise ValueError(f'unknown ganglion aggregator {name!r}; accepted: {list(AGGREGATORS)}')
