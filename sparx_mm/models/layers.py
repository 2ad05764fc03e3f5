"""Small layers shared by the SparX backbones."""
import contextlib
from typing import Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import (add_skip_path, convert_memory_format, depthwise_conv2d_act, fold_batch_norm, pointwise_conv2d,
                   scale_samples, scaled_skip_path)
from .recompute import recompute_saved

#: Activation modules that the fused depthwise-conv kernel applies itself, by the kernel's name for them.
FUSED_ACTIVATIONS = {nn.GELU: 'gelu', nn.SiLU: 'silu'}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, at every position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class LayerScale(nn.Module):
    """Per-channel affine map ``x * weight + bias`` on (B, C, H, W).

    The weight is stored as (C, 1, 1, 1), the shape of the official grouped-conv weight, so checkpoints
    load unchanged. Under autocast the map runs in the autocast dtype, as the official depthwise 1x1
    ``F.conv2d`` does (:func:`sparx_mm.ops.skip_path_dtype`).
    """

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_skip_path(x, self.weight.view(-1), self.bias)


class SkipPath(NamedTuple):
    """A residual block's skip path ``x * scale + shift`` (``scale`` / ``shift``: LayerScale's (C,) parameters, or
    None for a plain ``x``), handed to the branch whose last 1x1 convolution adds it (:class:`PointwiseConv`), with
    stochastic depth's per-sample factors of the branch (``branch_scale`` (B,): 0 or 1 / keep probability; None
    without stochastic depth): the block's ``LS(x) + drop_path(branch)``. Unpacks into :func:`~sparx_mm.ops.
    pointwise_conv2d`'s (skip, skip_scale, skip_shift, branch_scale)."""
    x: torch.Tensor
    scale: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None
    branch_scale: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, x: torch.Tensor, layer_scale: nn.Module, branch_scale: Optional[torch.Tensor] = None) -> 'SkipPath':
        """The skip path ``layer_scale(x)``, for a :class:`LayerScale` or an ``nn.Identity``."""
        if isinstance(layer_scale, LayerScale):
            return cls(x, layer_scale.weight.view(-1), layer_scale.bias, branch_scale)
        if isinstance(layer_scale, nn.Identity):
            return cls(x, branch_scale=branch_scale)
        raise TypeError(f'SkipPath.of: expected a LayerScale or nn.Identity, got {type(layer_scale).__name__}')

    def add_to(self, y: torch.Tensor) -> torch.Tensor:
        """``x * scale + shift + y * branch_scale[b]`` with plain torch ops (for branches that cannot fold it into a
        conv)."""
        return add_skip_path(scale_samples(y, self.branch_scale), self.x, self.scale, self.shift)


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution that can add a block's skip path to its output in the same pass
    (:func:`sparx_mm.ops.pointwise_conv2d`: one Triton kernel on GPUs, bias and skip path in its epilogue).

    An ``nn.Conv2d(in_channels, out_channels, 1, groups=groups)`` with the same parameters, so official
    checkpoints load unchanged; without ``skip`` its output is the convolution's.

    Shapes: x (B, Cin, H, W), skip.x (B, Cout, H, W) -> (B, Cout, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, groups: int = 1):
        super().__init__(in_channels, out_channels, 1, bias=bias, groups=groups)

    def forward(self, x: torch.Tensor, skip: Optional[SkipPath] = None) -> torch.Tensor:
        if skip is None:
            return pointwise_conv2d(x, self.weight, self.bias, groups=self.groups)
        return pointwise_conv2d(x, self.weight, self.bias, *skip, groups=self.groups)


class DepthwiseConvAct(nn.Conv2d):
    """``act(dwconv_kxk(x) + (x if residual))`` as one operator (:func:`sparx_mm.ops.depthwise_conv2d_act`: one
    Triton kernel on GPUs, which neither reads nor writes the intermediate maps and saves only ``x`` for the
    backward pass).

    An ``nn.Conv2d`` (depthwise, padding k // 2, stride 1 unless given) with the same parameters, so official
    checkpoints load unchanged. ``activation``: None, 'gelu' (exact) or 'silu'. ``stride`` > 1 (without
    residual): the DMCA's spatial reductions.

    Shapes: (B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, residual: bool = False,
                 activation: Optional[str] = None, stride: int = 1):
        if stride > 1 and residual:
            raise ValueError(f'DepthwiseConvAct: residual=True needs stride 1, got stride {stride}')
        super().__init__(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=channels,
                         bias=bias)
        self.residual = residual
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d_act(x, self.weight, self.bias, self.residual, self.activation, stride=self.stride[0])

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, residual={self.residual}, activation={self.activation}'


class ConvFFN(nn.Module):
    """1x1 conv -> (+ depthwise 3x3 of itself) -> act -> 1x1 conv; (B, C, H, W) -> (B, C, H, W).

    With GELU or SiLU the middle three steps are one fused operator (:class:`DepthwiseConvAct`); other
    activations run as their own module after it. ``forward(x, skip)`` adds a block's skip path (a
    :class:`SkipPath`) to the output inside the second 1x1 conv's kernel (:class:`PointwiseConv`).

    ``recompute_hidden``: while training, the second conv does not keep the activated hidden map (4C channels,
    the largest map a SparX block would keep) for its weight gradient: the backward pass recomputes it from the
    first conv's output h, which the depthwise operator keeps anyway (one depthwise pass;
    :func:`~sparx_mm.models.recompute.recompute_saved`; outputs and gradients unchanged). Not with active
    dropout (its mask is not replayed): the map is kept then.
    """
    #: forward takes a skip path (SparXBlock folds its residual into the last conv).
    takes_skip = True

    def __init__(self, dim: int, hidden_dim: int, act_layer=nn.GELU, drop: float = 0.0,
                 recompute_hidden: bool = False):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden_dim)
        fused_act = FUSED_ACTIVATIONS.get(act_layer)
        self.dwconv = DepthwiseConvAct(hidden_dim, 3, residual=True, activation=fused_act)
        self.act = nn.Identity() if fused_act else act_layer()
        self.fc2 = PointwiseConv(hidden_dim, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.recompute_hidden = recompute_hidden

    def forward(self, x: torch.Tensor, skip: Optional[SkipPath] = None) -> torch.Tensor:
        h = self.fc1(x)
        hidden = self.drop(self._hidden(h))
        dropout_active = self.training and not isinstance(self.drop, nn.Identity)
        with recompute_saved(hidden, self._hidden, h, enabled=self.recompute_hidden and not dropout_active):
            if skip is not None and not dropout_active:
                return self.fc2(hidden, skip)
            out = self.drop(self.fc2(hidden))  # dropout acts on the branch only: the skip path is added after it
        return out if skip is None else skip.add_to(out)

    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        """act(h + dwconv(h)) without dropout: the hidden map's recipe (recompute_hidden)."""
        return self.act(self.dwconv(h))

    def extra_repr(self) -> str:
        return f'recompute_hidden={self.recompute_hidden}'


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` while training, scaling the
    kept ones by 1 / (1 - drop_prob).

    ``forward(x)`` applies it; :meth:`sample_scale` draws the per-sample factors alone, for a branch that applies
    them itself (:class:`SkipPath`: the 1x1 conv's kernel).
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    @property
    def active(self) -> bool:
        return self.drop_prob > 0.0 and self.training

    def _keep_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """(batch,) float32 draws, 1 (kept, with probability 1 - drop_prob) or 0: one float32 Bernoulli draw a
        sample whatever the model's dtype (the same draws for float16, float32 and float64 models)."""
        return torch.empty(batch, device=device).bernoulli_(1.0 - self.drop_prob)

    def sample_scale(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(batch,) ``dtype`` factors: 0 (dropped, with probability drop_prob) or 1 / (1 - drop_prob); ones when
        inactive."""
        if not self.active:
            return torch.ones(batch, device=device, dtype=dtype)
        return self._keep_mask(batch, device).to(dtype) / (1.0 - self.drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        # x * mask / keep in x's dtype: the product exact, one rounding (not a rounded 1 / keep times x)
        return scale_samples(x, self._keep_mask(x.shape[0], x.device)) / (1.0 - self.drop_prob)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def _fused_activation(module: nn.Module) -> Optional[str]:
    """The layer kernels' name for an activation module they can apply themselves (exact GELU, SiLU), else None."""
    name = FUSED_ACTIVATIONS.get(type(module))
    if name == 'gelu' and module.approximate != 'none':
        return None
    return name


def _normalises_with_running_stats(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm that normalises with its running statistics (eval mode): a per-channel
    affine map that a convolution before it can absorb."""
    return (isinstance(module, _BatchNorm) and not module.training and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


#: Whether :class:`FoldingSequential` folds in inference (:func:`unfolded` turns it off).
_FOLDING = True


@contextlib.contextmanager
def unfolded() -> Iterator[None]:
    """Within it, :class:`FoldingSequential` runs its children one by one in inference too: for what must see
    every module's own operators (the FLOP counter counts the BatchNorms, as the paper does) or compare."""
    global _FOLDING
    previous, _FOLDING = _FOLDING, False
    try:
        yield
    finally:
        _FOLDING = previous


class FoldingSequential(nn.Sequential):
    """An ``nn.Sequential`` (same children, same state-dict keys) that runs fewer passes over the map when no
    gradient is needed.

    Then a convolution followed by a BatchNorm in eval mode runs as one convolution, the BatchNorm folded into its
    weight and bias (:func:`sparx_mm.ops.fold_batch_norm`: one small kernel over the weights instead of a read and a
    write of the map), and an exact GELU or a SiLU after a :class:`DepthwiseConvAct` or :class:`PointwiseConv`
    (after its BatchNorm, if any) runs in that layer's kernel. Convolutions: :class:`DepthwiseConvAct` without
    residual or activation of its own, :class:`PointwiseConv` and plain ``nn.Conv2d`` (zero padding). Outputs
    equal the children's run one by one up to rounding (the folded weight is rounded once, in its dtype). In grad
    mode (training, or evaluation that keeps the graph), and within :func:`unfolded`, the children run one by
    one; in grad mode on a GPU, a sequence of nothing but plain convolutions, BatchNorms and GELUs (the stem and
    the downsampling layers: :func:`runs_channels_last`) runs on a channels-last copy of its input and returns
    NCHW-contiguous output (cuDNN's NHWC convolutions and BatchNorm kernels, where its NCHW BatchNorm backward took
    2.3 ms for SparX-T's first stem BatchNorm at batch 128 on an H100; docs/benchmarks.md), both conversions and
    their gradients' by :func:`sparx_mm.ops.convert_memory_format` (one tiled transpose on GPUs; the gradients
    come back in the layout each side works in). The DMCA's spatial reductions, whose convolution is a
    :class:`DepthwiseConvAct`, stay NCHW.

    Shapes: as the children's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            if runs_channels_last(self, x):
                y = super().forward(convert_memory_format(x, torch.channels_last))
                return convert_memory_format(y, torch.contiguous_format)
            return super().forward(x)
        if not _FOLDING:
            return super().forward(x)
        modules = list(self)
        i = 0
        while i < len(modules):
            x, i = self._run_fused(modules, i, x)
        return x

    @staticmethod
    def _run_fused(modules, i: int, x: torch.Tensor):
        """Runs modules[i] on x with what it absorbs of the modules after it; returns (output, next index)."""
        layer = modules[i]
        norm = modules[i + 1] if i + 1 < len(modules) else None
        weight, bias, used = getattr(layer, 'weight', None), getattr(layer, 'bias', None), 1
        if _folds_into(layer, norm):
            weight, bias = fold_batch_norm(weight, bias, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                           float(norm.eps))
            used = 2
        takes_activation = isinstance(layer, PointwiseConv) or (
            isinstance(layer, DepthwiseConvAct) and layer.activation is None)
        activation = _fused_activation(modules[i + used]) if takes_activation and i + used < len(modules) else None
        if isinstance(layer, PointwiseConv):
            x = pointwise_conv2d(x, weight, bias, groups=layer.groups, activation=activation)
        elif isinstance(layer, DepthwiseConvAct):
            x = depthwise_conv2d_act(x, weight, bias, layer.residual, activation or layer.activation,
                                     stride=layer.stride[0])
        elif used == 2:
            x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        else:
            x = layer(x)
        return x, i + used + (activation is not None)


#: Layer types (exact: subclasses such as the layer operators, SyncBatchNorm or mmcv's norms keep NCHW) that
#: :class:`FoldingSequential` runs channels-last in grad mode, and the devices it does so on.
CHANNELS_LAST_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.GELU, nn.Identity)
CHANNELS_LAST_DEVICES = ('cuda', )


def runs_channels_last(sequence: nn.Sequential, x: torch.Tensor) -> bool:
    """Whether :class:`FoldingSequential` runs ``sequence`` on a channels-last copy of ``x`` in grad mode: ``x`` a
    4-D map on one of CHANNELS_LAST_DEVICES and every child of an exact CHANNELS_LAST_TYPES type."""
    return x.dim() == 4 and x.device.type in CHANNELS_LAST_DEVICES and len(sequence) > 0 and \
        all(type(m) in CHANNELS_LAST_TYPES for m in sequence)


def _folds_into(layer: nn.Module, norm: Optional[nn.Module]) -> bool:
    """Whether the BatchNorm ``norm`` after ``layer`` folds into it: a convolution (zero padding; a
    :class:`DepthwiseConvAct` without residual or activation) before a BatchNorm in eval mode of its channels."""
    if norm is None or not _normalises_with_running_stats(norm) or not isinstance(layer, nn.Conv2d):
        return False
    if layer.out_channels != norm.num_features or layer.padding_mode != 'zeros':
        return False
    return not isinstance(layer, DepthwiseConvAct) or (not layer.residual and layer.activation is None)
