"""SparX-Mamba: VMamba-style SS2D blocks wired by SparX's ganglion connections."""
import copy
from typing import Dict, Optional, Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import ConvFFN, FoldingSequential, LayerNorm2d
from ..mixers.aggregators import AGGREGATORS, build_aggregator
from ..mixers.ss2d import SS2D
from ..sparx import GanglionStage, ganglion_plan
from ..sparx.block import SparXBlock

#: Stage-wise ganglion settings use the paper's names: stride S, window M (None = no limit), start (None =
#: a stage without ganglion layers). See ``sparx_mm.models.sparx.ganglion``. Per-stage defaults are functions
#: of (stage index, number of stages); for four stages they are the official values.
PER_STAGE_DEFAULTS = dict(
    ganglion_strides=lambda i, n: 1,
    ganglion_starts=lambda i, n: None,
    ganglion_windows=lambda i, n: None,
    ganglion_rules=lambda i, n: 'sparx',
    cross_stage=lambda i, n: False,
    sr_ratios=lambda i, n: 2 ** (n - 1 - i),
    layer_scale_init=lambda i, n: 1.0 if i >= n - 2 else None,
)
SCALAR_DEFAULTS = dict(stem='v1', d_state=1, ssm_ratio=2, d_conv=5, mlp_ratio=4, token_mixer='ss2d', dpe=True,
                       aggregator='dmca')
#: Token mixers of SparX-Mamba and their scan routes: SS2D's four-route cross scan (the official models),
#: ViM's Bi-SSM (row-major forward + backward) and vanilla Mamba's SSM (row-major forward only).
TOKEN_MIXERS = dict(ss2d=4, bissm=2, ssm=1)
REQUIRED_ARCH_KEYS = ('depths', 'dims')
STEMS = ('v1', 'v2')
OUT_NORMS = ('layernorm', None)


def _bn(norm_cfg, channels):
    return build_norm_layer(norm_cfg, channels)[1]


class SparXMambaBlock(SparXBlock):
    """Pre-norm block: x += DPE(x); x = LS1(x) + SS2D(GN(x)); x = LS2(x) + FFN(GN2(x)).

    In a ganglion layer (``shortcut_channels > 0``) a DMCA fuses GN(x) with the shortcut into the d_inner
    channels that the SS2D core scans, in place of SS2D's input projection. LayerScale, where enabled,
    scales the skip path, as the official models do.

    Ablation options (defaults: the official block): ``dpe=False`` drops the positional conv; ``routes``
    (4, 2 or 1) picks the scan routes of the SSM (see :class:`SS2D`); ``aggregator`` replaces the DMCA by
    one of the paper's alternatives (see :mod:`sparx_mm.models.mixers.aggregators`).

    Shapes: x (B, C, H, W), shortcut None or (B, shortcut_channels, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, shortcut_channels: int = 0, drop_path: float = 0.0, d_state: int = 1,
                 ssm_ratio: float = 2, d_conv: int = 5, mlp_ratio: float = 4,
                 layer_scale_init: Optional[float] = None, sr_ratio: int = 1,
                 dmca_scale: str = 'fixed', norm_cfg: dict = dict(type='BN'), dpe: bool = True,
                 routes: int = 4, aggregator: str = 'dmca'):
        d_inner = int(dim * ssm_ratio)
        aggregator = build_aggregator(aggregator, dim, shortcut_channels, d_inner, sr_ratio, dmca_scale,
                                      norm_cfg) if shortcut_channels else None
        mixer = SS2D(dim, d_inner, d_state=d_state, d_conv=d_conv, project_input=aggregator is None,
                     routes=routes)
        super().__init__(dim, mixer, aggregator, drop_path, mlp_ratio, layer_scale_init, dpe)


@MODELS.register_module()
class SparXMamba(BaseModule):
    """SparX-Mamba backbone (Lou et al., "SparX: A Sparse Cross-Layer Connection Mechanism for
    Hierarchical Vision Mamba and Transformer Networks", AAAI 2025).

    One class for classification (mmpretrain), detection (mmdet) and segmentation (mmseg).

    Args:
        arch: 't', 's', 'b' or a dict with 'depths' and 'dims' (one entry per stage) and optionally any
            of these keys (defaults: the official values): 'stem' ('v1' two convs / 'v2' three),
            'ganglion_strides' (S per stage), 'ganglion_starts' (lowest ganglion-layer index, None = none),
            'ganglion_windows' (M, None = unlimited), 'ganglion_rules' ('sparx', or 'dense' for the paper's
            DGC ablation), 'cross_stage', 'sr_ratios' (DMCA spatial reduction), 'layer_scale_init' (None = no
            LayerScale), 'd_state', 'ssm_ratio', 'd_conv', 'mlp_ratio', and the ablation switches
            'token_mixer' ('ss2d', 'bissm' or 'ssm'), 'dpe' (bool) and 'aggregator' ('dmca', 'concat',
            'no_cgca' or 'no_skip'). docs/variants.md lists the paper's variants as configs.
        in_channels: input image channels.
        out_indices: stages whose outputs are returned, in order (0-based; negative counts from the end);
            None returns every stage (0, 1, 2, 3).
        out_norm: 'layernorm' normalises each returned map over channels (LayerNorm eps 1e-6, the official
            dense-prediction backbones' ``norm.i``); None returns raw stage outputs (classification, where
            the head normalises).
        dmca_scale: 'fixed' softmax scale 1/sqrt(h'w') (ImageNet and UperNet checkpoints) or 'learnable'
            (a scalar per ganglion layer, the Mask R-CNN checkpoints).
        drop_path_rate: stochastic-depth rate, rising linearly over all blocks.
        frozen_stages: -1 freezes nothing; 0 freezes the stem; i > 0 also freezes stages 0..i-1 (with
            their downsampling and output norms).
        norm_eval: keep BatchNorm layers in eval mode while training (frozen statistics).
        with_cp: gradient checkpointing of every block (saves memory, costs a second forward).
        ffn_recompute: while training, each ConvFFN's second conv does not keep the 4C-channel hidden map for the
            backward pass, which recomputes it with one depthwise pass (:class:`ConvFFN`'s ``recompute_hidden``).
        norm_recompute: while training, SS2D's output projection does not keep the normalised scan output (2C
            channels); the backward pass renormalises (:class:`SS2D`'s ``norm_recompute``). Both recomputations
            change no output or gradient (:mod:`sparx_mm.models.recompute`: nothing but the recomputed map is
            rerun). Defaults: ``norm_recompute`` on, ``ffn_recompute`` off. SparX-T fp16 training at batch 128 (H200,
            2026-12-06, docs/benchmarks.md): the defaults 11.47 GB, 99.0 ms a step (S and B 0.56-0.58x the
            official code's memory, within the goal of 0.6x); both on 10.16 GB, 101.2 ms; both off 12.13 GB, about
            1 ms faster than the defaults.
            No effect with ``with_cp`` (the whole block is recomputed then), nor under torch.compile (which plans
            its own).
        norm_cfg: config of the BatchNorm layers (stem, downsampling, DMCA), e.g. dict(type='SyncBN').
        init_cfg: e.g. dict(type='Pretrained', checkpoint=PATH): an official SparX checkpoint
            (classification, Mask R-CNN or UperNet) or one of this project's; keys are converted on load.

    Input (B, in_channels, H, W), any H, W >= 1 (stride-2 convs round up, so each map is
    ceil(H / 2**(i + 2)) x ceil(W / 2**(i + 2)); multiples of 32 give exact strides 4, 8, 16, 32).
    Output: tuple of (B, dims[i], H_i, W_i) for i in out_indices.
    """
    #: Settings every arch dict may give (defaults as functions of (stage index, number of stages)) and the
    #: scalar ones; subclasses with another token mixer (SparXSwin) override these two and ``build_block``.
    per_stage_defaults = PER_STAGE_DEFAULTS
    scalar_defaults = SCALAR_DEFAULTS
    arch_zoo: Dict[str, dict] = {
        't': dict(depths=[2, 2, 7, 2], dims=[96, 192, 320, 512], stem='v1',
                  ganglion_strides=[1, 1, 2, 1], ganglion_starts=[None, 1, 0, 0],
                  ganglion_windows=[None, None, 3, None]),
        's': dict(depths=[2, 2, 17, 2], dims=[96, 192, 328, 544], stem='v2',
                  ganglion_strides=[1, 1, 3, 1], ganglion_starts=[None, 1, 0, 0],
                  ganglion_windows=[None, None, 3, None]),
        'b': dict(depths=[2, 2, 21, 3], dims=[120, 240, 396, 636], stem='v2',
                  ganglion_strides=[1, 1, 3, 2], ganglion_starts=[None, 1, 0, 2],
                  ganglion_windows=[None, None, 3, None]),
    }

    def __init__(self, arch='t', in_channels: int = 3, out_indices: Optional[Sequence[int]] = None,
                 out_norm: Optional[str] = 'layernorm', dmca_scale: str = 'fixed',
                 drop_path_rate: float = 0.0, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, ffn_recompute: bool = False, norm_recompute: bool = True,
                 norm_cfg: dict = dict(type='BN'), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        self.arch_settings = self.resolve_arch(arch)
        a = self.arch_settings
        self.depths, self.dims = list(a['depths']), list(a['dims'])
        self.num_stages = len(self.depths)
        self.out_indices = self._check_out_indices(out_indices, self.num_stages)
        if out_norm not in OUT_NORMS:
            raise ValueError(f'{name}: out_norm must be one of {OUT_NORMS}, got {out_norm!r}')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'{name}: frozen_stages must be an int in [-1, {self.num_stages}] '
                             f'(-1 = none, 0 = stem, i = stem and stages 0..i-1), got {frozen_stages!r}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'{name}: drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        for flag, value in (('with_cp', with_cp), ('ffn_recompute', ffn_recompute), ('norm_recompute', norm_recompute),
                            ('norm_eval', norm_eval)):
            if not isinstance(value, bool):
                raise TypeError(f'{name}: {flag} must be True or False, got {value!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.dmca_scale = dmca_scale
        # require_last: ganglion layers end every stage that has any; a start past the stage is an error.
        self.plans = [ganglion_plan(depth, stride, window, start, cross, rule, require_last=True)
                      for depth, stride, window, start, cross, rule in zip(
                          self.depths, a['ganglion_strides'], a['ganglion_windows'], a['ganglion_starts'],
                          a['cross_stage'], a['ganglion_rules'])]

        self.patch_embed = self._make_stem(in_channels, self.dims[0], a['stem'], norm_cfg)
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            stage_rates = rates[sum(self.depths[:i]):sum(self.depths[:i + 1])]

            def make_block(j, shortcut_channels, i=i, stage_rates=stage_rates):
                return self.build_block(i, j, shortcut_channels, stage_rates[j], norm_cfg)

            downsample = None
            if i < self.num_stages - 1:
                downsample = FoldingSequential(
                    nn.Conv2d(dim, self.dims[i + 1], 3, stride=2, padding=1, bias=False),
                    _bn(norm_cfg, self.dims[i + 1]))
            self.layers.append(GanglionStage(dim, self.plans[i], make_block, downsample, with_cp))
        self.out_norms = nn.ModuleDict(
            {str(i): LayerNorm2d(self.dims[i], eps=1e-6) for i in self.out_indices}
            if out_norm == 'layernorm' else {})
        for module in self.modules():
            if isinstance(module, ConvFFN):
                module.recompute_hidden = ffn_recompute and not with_cp
            if isinstance(module, SS2D):
                module.norm_recompute = norm_recompute and not with_cp
        self.apply(self._official_init)
        self._freeze_stages()

    # ------------------------------------------------------------------ construction helpers
    def build_block(self, stage: int, layer: int, shortcut_channels: int, drop_path: float,
                    norm_cfg: dict) -> nn.Module:
        """Block ``layer`` of stage ``stage``; ``shortcut_channels`` > 0 makes it a ganglion layer."""
        a = self.arch_settings
        return SparXMambaBlock(
            self.dims[stage], shortcut_channels, drop_path=drop_path, d_state=a['d_state'],
            ssm_ratio=a['ssm_ratio'], d_conv=a['d_conv'], mlp_ratio=a['mlp_ratio'],
            layer_scale_init=a['layer_scale_init'][stage], sr_ratio=a['sr_ratios'][stage],
            dmca_scale=self.dmca_scale, norm_cfg=norm_cfg, dpe=a['dpe'], routes=TOKEN_MIXERS[a['token_mixer']],
            aggregator=a['aggregator'])

    @classmethod
    def check_arch(cls, settings: dict):
        """Validate the settings specific to this backbone's blocks (called by ``resolve_arch``)."""
        if settings['token_mixer'] not in TOKEN_MIXERS:
            raise ValueError(f"{cls.__name__}: unknown token mixer {settings['token_mixer']!r} (arch "
                             f"'token_mixer'); accepted: {list(TOKEN_MIXERS)}")

    @classmethod
    def resolve_arch(cls, arch) -> dict:
        """'t' / 's' / 'b' or a dict -> a complete, validated settings dict."""
        name = cls.__name__
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise KeyError(f'{name}: unknown arch {arch!r}; choose one of '
                               f'{sorted(cls.arch_zoo)} or pass a dict with {list(REQUIRED_ARCH_KEYS)}')
            arch = cls.arch_zoo[key]
        if not isinstance(arch, dict):
            raise TypeError(f'{name}: arch must be a str or a dict, got {type(arch).__name__}')
        accepted = list(REQUIRED_ARCH_KEYS) + list(cls.per_stage_defaults) + list(cls.scalar_defaults)
        unknown = set(arch) - set(accepted)
        missing = [k for k in REQUIRED_ARCH_KEYS if k not in arch]
        if unknown or missing:
            raise ValueError(f'{name}: malformed arch dict: missing {missing}, unknown {sorted(unknown)}; '
                             f'accepted keys: {accepted}')
        depths = arch['depths']
        num_stages = len(depths) if isinstance(depths, (list, tuple)) else 0
        if num_stages < 1:
            raise ValueError(f"{name}: arch 'depths' must be a non-empty list, got {depths!r}")
        settings = dict(cls.scalar_defaults)
        settings.update({key: [default(i, num_stages) for i in range(num_stages)]
                         for key, default in cls.per_stage_defaults.items()})
        settings.update(copy.deepcopy(arch))
        for key in ('depths', 'dims', *cls.per_stage_defaults):
            value = settings[key]
            if not isinstance(value, (list, tuple)) or len(value) != num_stages:
                raise ValueError(f'{name}: arch {key!r} must be a list with one entry per stage '
                                 f'({num_stages}, from depths), got {value!r}')
        for key in ('depths', 'dims', 'sr_ratios'):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in settings[key]):
                raise ValueError(f'{name}: arch {key!r} must hold positive ints, got {settings[key]!r}')
        bad_dims = [d for d in settings['dims'] if d % 4]
        if bad_dims:
            raise ValueError(f"{name}: arch 'dims' must be multiples of 4 (the DMCA attends in 4 "
                             f"channel groups), got {settings['dims']!r}")
        if settings['stem'] not in STEMS:
            raise ValueError(f"{name}: arch 'stem' must be one of {STEMS}, got {settings['stem']!r}")
        if not isinstance(settings['dpe'], bool):
            raise ValueError(f"{name}: arch 'dpe' must be a bool, got {settings['dpe']!r}")
        if settings['aggregator'] not in AGGREGATORS:
            raise ValueError(f"{name}: unknown aggregator {settings['aggregator']!r} (arch 'aggregator'); "
                             f'accepted: {list(AGGREGATORS)}')
        cls.check_arch(settings)
        return settings

    @classmethod
    def _check_out_indices(cls, out_indices, num_stages):
        if out_indices is None:
            out_indices = list(range(num_stages))
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, (list, tuple)) or not out_indices:
            raise TypeError(f'{cls.__name__}: out_indices must be an int or a non-empty sequence, '
                            f'got {out_indices!r}')
        resolved = []
        for index in out_indices:
            if not isinstance(index, int) or not -num_stages <= index < num_stages:
                raise ValueError(f'{cls.__name__}: out_indices entries must be ints in [{-num_stages}, '
                                 f'{num_stages - 1}] for a {num_stages}-stage model, got {index!r}')
            resolved.append(index % num_stages)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f'{cls.__name__}: out_indices has repeated stages: {out_indices!r}')
        return tuple(resolved)

    @staticmethod
    def _make_stem(in_channels, dim, stem, norm_cfg):
        """Bias-free 3x3 convs with BN (GELU between): strides 2, 2 ('v1') or 2, 1, 2 ('v2')."""
        hidden = dim // 2
        layers = [nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1, bias=False), _bn(norm_cfg, hidden),
                  nn.GELU()]
        if stem == 'v2':
            layers += [nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False), _bn(norm_cfg, hidden),
                       nn.GELU()]
        layers += [nn.Conv2d(hidden, dim, 3, stride=2, padding=1, bias=False), _bn(norm_cfg, dim)]
        return FoldingSequential(*layers)

    @staticmethod
    def _official_init(m: nn.Module):
        # The official models re-initialise every conv / linear / norm after construction; the SSM
        # parameters keep the init SS2D gave them.
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, _BatchNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ mmengine hooks
    def init_weights(self):
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            from ..checkpoint import load_backbone_checkpoint
            load_backbone_checkpoint(self, self.init_cfg['checkpoint'], logger=MMLogger.get_current_instance())
            self._is_init = True
        else:
            super().init_weights()

    def _freeze_stages(self):
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        for i in range(self.frozen_stages):
            frozen.append(self.layers[i])
            if str(i) in self.out_norms:
                frozen.append(self.out_norms[str(i)])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != self.patch_embed[0].in_channels:
            raise ValueError(f'{type(self).__name__} expects images of shape '
                             f'(B, {self.patch_embed[0].in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        x = self.patch_embed(x)
        outs = {}
        last = max(self.out_indices)
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if i in self.out_indices:
                outs[i] = self.out_norms[str(i)](x) if str(i) in self.out_norms else x
            if i == last:
                break  # later stages would be computed for nothing
            x = stage.downsample(x)
        return tuple(outs[i] for i in self.out_indices)
