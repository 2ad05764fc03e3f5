"""DMCA: the Dynamic Multi-layer Channel Aggregator run by ganglion layers."""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch import nn

from ...ops import OneGroupNorm, concat_shuffled, gpu_backends
from ..layers import DepthwiseConvAct, FoldingSequential, PointwiseConv

#: The learnable attention scale of the official Mask R-CNN checkpoints starts at (800*1333/16/64) ** -0.5,
#: i.e. 1/sqrt(h'w') for a 800x1333 image at stride 16 reduced 64-fold (the sizes the scale was tuned for).
LEARNABLE_SCALE_INIT = ((800 * 1333) / 16 / 64) ** -0.5
ATTN_GROUPS = 4
SCALE_MODES = ('fixed', 'learnable')


def _bn(norm_cfg, channels):
    return build_norm_layer(norm_cfg, channels)[1]


def _spatial_reduction(dim: int, sr_ratio: int, norm_cfg) -> nn.Module:
    """Depthwise strided conv + BN + GELU shrinking H, W by ``sr_ratio``; Identity when sr_ratio == 1."""
    if sr_ratio == 1:
        return nn.Identity()
    kernel_size = sr_ratio + 1
    if kernel_size % 2:  # the layer operator (odd kernels only): on GPUs the Triton kernels, not cuDNN's
        conv = DepthwiseConvAct(dim, kernel_size, bias=False, stride=sr_ratio)
    else:
        conv = nn.Conv2d(dim, dim, kernel_size, stride=sr_ratio, padding=kernel_size // 2, groups=dim, bias=False)
    return FoldingSequential(conv, _bn(norm_cfg, dim), nn.GELU())


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int,
                      scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Attention across channels, with the spatial axis as the dot-product dimension.

    Args:
        q, k: (B, C, h, w), possibly spatially reduced.
        v: (B, C, H, W).
        groups: channels are split into this many consecutive blocks, each attending within itself.
        scale: softmax scale; None means 1/sqrt(h*w), a tensor is a learnable scalar.

    Returns:
        (B, C, H, W): for each group, softmax(q kᵀ * scale) (a C/g x C/g matrix) applied to v.
    """
    b, c, height, width = v.shape
    qh, qw = q.shape[-2:]
    q = q.reshape(b * groups, c // groups, qh * qw)
    k = k.reshape(b * groups, c // groups, qh * qw)
    v = v.reshape(b * groups, c // groups, height * width)
    if gpu_backends.gradient_needed(q, k, v, scale):
        # Training: the explicit products, as the official detection and segmentation code trains (a learnable
        # scale needs them: SDPA takes its scale as a Python float). SDPA has no fused kernel for these shapes
        # (3-D, key and value widths h'w' != HW), and its math fallback computes float16 / bfloat16 in float32:
        # float32 GEMMs and casts of v and of the output both ways, 2.5 ms of a SparX-S fp16 training step on an
        # H100. Under autocast these products run in half precision, the softmax in float32.
        scores = q @ k.transpose(-1, -2) * (scale if scale is not None else (qh * qw) ** -0.5)
        attn = torch.softmax(scores, dim=-1) @ v
    else:
        attn = F.scaled_dot_product_attention(q, k, v, scale=None if scale is None else float(scale))
    return attn.reshape(b, c, height, width)


def adaptive_bins(length: int, bins: int) -> List[Tuple[int, int]]:
    """[start, end) of each of ``bins`` adaptive-pooling bins over ``length`` items (PyTorch's boundaries:
    floor(i * length / bins) to ceil((i + 1) * length / bins); bins overlap where ``bins`` does not divide
    ``length``)."""
    return [(i * length // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


class _PadWithBinMeans(torch.autograd.Function):
    """x (B, C, H, W) -> (B, C + bins, H, W), each extra channel the mean of one adaptive bin of x's channels.

    What ``torch.cat([x, adaptive_avg_pool3d(x.unsqueeze(1), (bins, H, W)).squeeze(1)], 1)`` computes, as one
    copy and one reduction forward and one pass backward: the adaptive pool's own backward kernel took 10 ms of a
    SparX-S fp16 training step on an H100 (its two-bin paddings; 2.3 ms its forward), a plain reduction over
    equal bins some microseconds."""

    @staticmethod
    def forward(ctx, x, bins):
        channels = x.shape[1]
        ctx.bounds = adaptive_bins(channels, bins)
        out = x.new_empty(x.shape[0], channels + bins, *x.shape[2:])
        out[:, :channels] = x
        if channels % bins == 0:  # equal, disjoint bins: one reduction
            out[:, channels:] = x.unflatten(1, (bins, channels // bins)).mean(dim=2)
        else:
            for i, (start, end) in enumerate(ctx.bounds):
                out[:, channels + i] = x[:, start:end].mean(dim=1)
        return out

    @staticmethod
    def backward(ctx, grad):
        # The mean's gradient is the bin's output gradient divided by the bin's width, added to the copy's.
        bins = len(ctx.bounds)
        channels = grad.shape[1] - bins
        if channels % bins == 0:
            width = channels // bins
            grad_x = grad[:, :channels].unflatten(1, (bins, width)) + grad[:, channels:].unsqueeze(2) / width
            return grad_x.flatten(1, 2), None
        grad_x = grad[:, :channels].clone(memory_format=torch.contiguous_format)
        for i, (start, end) in enumerate(ctx.bounds):
            grad_x[:, start:end] += grad[:, channels + i:channels + i + 1] / (end - start)
        return grad_x, None


def pad_channels_by_pooling(x: torch.Tensor, extra: int) -> torch.Tensor:
    """Append ``extra`` channels, each the mean of one adaptive-pooling bin over the channel axis.

    (B, C, H, W) -> (B, C + extra, H, W). One extra channel is the mean over all channels, two are the
    means of the two halves (PyTorch's adaptive-pool bin boundaries, :func:`adaptive_bins`), as the official
    code's ``adaptive_avg_pool3d`` over the channel axis computes them.
    """
    if extra == 0:
        return x
    if extra < 0:
        raise ValueError(f'pad_channels_by_pooling: extra must be >= 0 (the channels to append), got {extra}')
    return _PadWithBinMeans.apply(x, extra)


class DMCA(nn.Module):
    """Dynamic Multi-layer Channel Aggregator.

    Fuses a ganglion layer's own (normalised) input ``x`` with the concatenation of earlier layers'
    features ``shortcut``: the shortcut yields keys and values, ``x`` the queries; channel attention (in 4
    groups, over the spatially reduced map) selects what to take from the earlier layers; ``x``, the
    attention output and the values are shuffled, fused by a depthwise + grouped 1x1 conv, and padded to
    ``out_channels``.

    Args:
        dim: C, the channels of ``x``.
        shortcut_channels: channels of the concatenated shortcut (a multiple of C).
        out_channels: channels of the output (2C in SparX-Mamba, feeding the SS2D core).
        sr_ratio: spatial reduction of queries and keys (1 = none; then the projected query replaces x).
        scale_mode: 'fixed' (softmax scale 1/sqrt(h'w'), classification and segmentation checkpoints) or
            'learnable' (a learnable scalar, the official Mask R-CNN checkpoints).
        norm_cfg: config of the BatchNorm layers (e.g. dict(type='SyncBN')).

    Shapes: x (B, C, H, W), shortcut (B, shortcut_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, dim: int, shortcut_channels: int, out_channels: int, sr_ratio: int = 1,
                 scale_mode: str = 'fixed', norm_cfg: dict = dict(type='BN')):
        super().__init__()
        if dim % ATTN_GROUPS:
            raise ValueError(f'DMCA: dim must be a multiple of {ATTN_GROUPS} (channel-attention groups), '
                             f'got {dim}')
        if scale_mode not in SCALE_MODES:
            raise ValueError(f'DMCA: scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}')
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f'DMCA: sr_ratio must be an int >= 1, got {sr_ratio!r}')
        self.dim = dim
        self.shortcut_channels = shortcut_channels
        self.out_channels = out_channels
        self.scale_mode = scale_mode

        self.shortcut_norm = OneGroupNorm(shortcut_channels)
        # The stride-1 depthwise and the 1x1 convolutions are the layer operators (on GPUs Triton kernels in NCHW
        # order where they measured faster: no generic depthwise kernel, no layout conversions around cuDNN);
        # nn.Conv2d's with the same parameters, so the official checkpoints load unchanged.
        # FoldingSequential: in inference each BatchNorm folds into the convolution before it, and the GELUs run
        # in the layer kernels (fewer passes over the maps); the same modules and keys as nn.Sequential.
        self.shortcut_proj = FoldingSequential(
            DepthwiseConvAct(shortcut_channels, 3, bias=False),
            _bn(norm_cfg, shortcut_channels),
            nn.GELU(),
            PointwiseConv(shortcut_channels, 2 * dim),
            nn.GELU(),
        )
        self.q = FoldingSequential(_spatial_reduction(dim, sr_ratio, norm_cfg), PointwiseConv(dim, dim, bias=False),
                                   _bn(norm_cfg, dim))
        self.k = FoldingSequential(_spatial_reduction(dim, sr_ratio, norm_cfg), PointwiseConv(dim, dim, bias=False),
                                   _bn(norm_cfg, dim))
        self.v = FoldingSequential(PointwiseConv(dim, dim, bias=False), _bn(norm_cfg, dim))
        if scale_mode == 'learnable':
            self.scale = nn.Parameter(torch.full((1,), LEARNABLE_SCALE_INIT))
        fused = out_channels // 3 * 3
        self.fuse = nn.Sequential(
            DepthwiseConvAct(3 * dim, 3, activation='gelu'),  # GELU(dwconv(y)) in one kernel
            nn.Identity(),  # where the GELU was: keeps the official checkpoints' key fuse.2
            PointwiseConv(3 * dim, fused, groups=3),
        )
        self.channel_padding = out_channels - fused

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if shortcut.shape[1] != self.shortcut_channels:
            raise ValueError(f'DMCA expected a shortcut of {self.shortcut_channels} channels, '
                             f'got {tuple(shortcut.shape)}')
        keys, values = self.shortcut_proj(self.shortcut_norm(shortcut)).chunk(2, dim=1)
        q = self.q(x)
        k = self.k(keys)
        v = self.v(values)
        attn = channel_attention(q, k, v, ATTN_GROUPS, self.scale if self.scale_mode == 'learnable' else None)
        if q.shape[-2:] == x.shape[-2:]:
            # Quirk of the official models (and their checkpoints): without spatial reduction the
            # projected query stands in for x.
            x = q
        y = concat_shuffled([x, attn, v], 3)
        return pad_channels_by_pooling(self.fuse(y), self.channel_padding)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, shortcut_channels={self.shortcut_channels}, '
                f'out_channels={self.out_channels}, scale_mode={self.scale_mode!r}')
