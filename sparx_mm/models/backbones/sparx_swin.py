"""SparX-Swin: SparX-Mamba's layout with Swin's shifted-window attention as the token mixer (paper Table 9)."""
from typing import Dict, Optional

from mmengine.registry import MODELS
from torch import nn

from ..mixers.aggregators import build_aggregator
from ..mixers.window_attention import WindowAttention
from ..sparx.block import SparXBlock
from .sparx_mamba import PER_STAGE_DEFAULTS, SparXMamba

#: Channels per attention head aimed at when an arch dict gives no ``num_heads`` (Swin's 32).
HEAD_DIM = 32


def default_num_heads(dim: int, head_dim: int = HEAD_DIM) -> int:
    """The divisor of ``dim`` closest to dim / head_dim (ties: more heads)."""
    target = dim / head_dim
    return min((h for h in range(1, dim + 1) if dim % h == 0), key=lambda h: (abs(h - target), -h))


class SparXSwinBlock(SparXBlock):
    """x += DPE(x); x = LS1(x) + W-MSA(GN(x)); x = LS2(x) + ConvFFN(GN2(x)).

    The SparX-Mamba block with the SS2D replaced by (shifted-)window multi-head self-attention. In a
    ganglion layer (``shortcut_channels > 0``) the DMCA runs first: it fuses GN(x) with the shortcut into C
    channels, which the attention then mixes.

    Shapes: x (B, C, H, W), shortcut None or (B, shortcut_channels, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, num_heads: int, shortcut_channels: int = 0, window_size: int = 7,
                 shift: bool = False, drop_path: float = 0.0, mlp_ratio: float = 3, qkv_bias: bool = True,
                 layer_scale_init: Optional[float] = None, sr_ratio: int = 1, dmca_scale: str = 'fixed',
                 norm_cfg: dict = dict(type='BN'), dpe: bool = True, aggregator: str = 'dmca'):
        aggregator = build_aggregator(aggregator, dim, shortcut_channels, dim, sr_ratio, dmca_scale,
                                      norm_cfg) if shortcut_channels else None
        mixer = WindowAttention(dim, num_heads, window_size, shift, qkv_bias)
        super().__init__(dim, mixer, aggregator, drop_path, mlp_ratio, layer_scale_init, dpe)


@MODELS.register_module()
class SparXSwin(SparXMamba):
    """SparX-Swin backbone (Lou et al., AAAI 2025, Table 9): SparX-Mamba's stem, stages, ganglion plan,
    DMCA and downsampling, with Swin's shifted-window attention + ConvFFN blocks instead of SS2D blocks.

    Same arguments, outputs and options as :class:`SparXMamba` (out_indices, out_norm, dmca_scale,
    drop_path_rate, frozen_stages, norm_eval, with_cp, norm_cfg, init_cfg=Pretrained for this class's own
    checkpoints); only the arch settings differ:

    Args:
        arch: 't', 'b' or a dict with 'depths' and 'dims' and optionally 'stem', 'ganglion_strides',
            'ganglion_starts', 'ganglion_windows', 'ganglion_rules', 'cross_stage', 'sr_ratios',
            'layer_scale_init' (as SparXMamba), 'num_heads' (per stage; None = the divisor of the width
            closest to width / 32), 'window_size' (7), 'mlp_ratio' (3), 'qkv_bias' (True), 'dpe' (True)
            and 'aggregator' ('dmca'). Windows alternate unshifted / shifted within each stage.

    Input (B, in_channels, H, W), any H, W >= 1; each map is ceil(H / 2**(i + 2)) x ceil(W / 2**(i + 2)).
    The attention pads to window multiples internally and masks the padding.
    docs/variants.md states how the paper's open details were settled (heads, FFN, B's ganglion plan).
    """
    per_stage_defaults = dict(PER_STAGE_DEFAULTS, num_heads=lambda i, n: None)
    # mlp_ratio 3: the FFN width that gives the paper's sizes (ratio 4 would make SparX-Swin-T 29.1 M, not 26 M).
    scalar_defaults = dict(stem='v1', window_size=7, mlp_ratio=3, qkv_bias=True, dpe=True, aggregator='dmca')
    arch_zoo: Dict[str, dict] = {
        # SparX-Mamba-T's layout and ganglion plan; stage 4 widened 512 -> 576 (paper). 26.1 M, 4.6 G.
        't': dict(depths=[2, 2, 7, 2], dims=[96, 192, 320, 576], stem='v1', num_heads=[3, 6, 10, 18],
                  mlp_ratio=3, ganglion_strides=[1, 1, 2, 1], ganglion_starts=[None, 1, 0, 0],
                  ganglion_windows=[None, None, 3, None]),
        # The paper's depths and widths; stem and stage-3 plan of SparX-Mamba-B (S = 3, M = 3), every stage-4
        # layer a ganglion layer (as in SparX-Mamba-T / S). 86.8 M, 16.1 G.
        'b': dict(depths=[2, 2, 27, 3], dims=[120, 240, 396, 616], stem='v2', num_heads=[4, 8, 12, 22],
                  mlp_ratio=3, ganglion_strides=[1, 1, 3, 1], ganglion_starts=[None, 1, 0, 0],
                  ganglion_windows=[None, None, 3, None]),
    }

    @classmethod
    def check_arch(cls, settings: dict):
        heads = settings['num_heads']
        settings['num_heads'] = [default_num_heads(d) if h is None else h for d, h in zip(settings['dims'], heads)]
        for dim, h in zip(settings['dims'], settings['num_heads']):
            if isinstance(h, bool) or not isinstance(h, int) or h < 1 or dim % h:
                raise ValueError(f"{cls.__name__}: arch 'num_heads' must hold, per stage, a positive int "
                                 f"dividing the width; got {settings['num_heads']!r} for dims {settings['dims']!r}")
        ws = settings['window_size']
        if isinstance(ws, bool) or not isinstance(ws, int) or ws < 1:
            raise ValueError(f"{cls.__name__}: arch 'window_size' must be an int >= 1, got {ws!r}")

    def build_block(self, stage: int, layer: int, shortcut_channels: int, drop_path: float,
                    norm_cfg: dict) -> nn.Module:
        a = self.arch_settings
        # Blocks alternate W-MSA / SW-MSA within a stage (odd layers shifted), as in Swin.
        return SparXSwinBlock(
            self.dims[stage], a['num_heads'][stage], shortcut_channels, window_size=a['window_size'],
            shift=layer % 2 == 1, drop_path=drop_path, mlp_ratio=a['mlp_ratio'], qkv_bias=a['qkv_bias'],
            layer_scale_init=a['layer_scale_init'][stage], sr_ratio=a['sr_ratios'][stage],
            dmca_scale=self.dmca_scale, norm_cfg=norm_cfg, dpe=a['dpe'], aggregator=a['aggregator'])
