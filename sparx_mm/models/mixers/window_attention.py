"""Swin's (shifted-)window multi-head self-attention on (B, C, H, W) maps, for SparX-Swin."""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn



def _relative_position_index(wh: int, ww: int, window: int) -> torch.Tensor:
    """(wh*ww, wh*ww) indices into a ((2*window-1)**2)-row bias table for a wh x ww window (wh, ww <= window).

    Entry (i, j) is the row of the offset (dy, dx) = pos_i - pos_j: (dy + window-1) * (2*window-1) + dx +
    window-1, so a window smaller than ``window`` (a map smaller than the window) reads the same biases as
    the same offsets of a full window.
    """
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def _window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B * nW, wh * ww, C), windows in row-major order."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _window_merge(windows: torch.Tensor, b: int, hp: int, wp: int, wh: int, ww: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (B * nW, wh * ww, C) -> (B, Hp, Wp, C)."""
    c = windows.shape[-1]
    x = windows.view(b, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, optionally shifted (Swin).

    The map is padded at the bottom / right to a multiple of the window; padded positions are masked out
    as keys, so the output at real positions does not depend on the padding. With ``shift=True`` the
    windows are displaced by ``window_size // 2`` (a cyclic shift of the padded map, with the regions that
    wrap around masked from each other). Along an axis no longer than the window the window shrinks to
    the map and that axis is not shifted (Swin's rule, applied per axis), e.g. the 7x7 stage-4 map of a
    224 input has one unshifted window. Attention scores get a learned relative-position bias per head.

    Args:
        dim: channels C.
        num_heads: attention heads (dividing C).
        window_size: window side.
        shift: shifted windows (every other block of a Swin stage).
        qkv_bias: bias of the q/k/v projection.

    Shapes: (B, C, H, W) -> (B, C, H, W), any H, W >= 1.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(f'WindowAttention: num_heads must be a positive int dividing dim={dim}, '
                             f'got {num_heads!r}')
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'WindowAttention: window_size must be an int >= 1, got {window_size!r}')
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.attn_drop = nn.Dropout(attn_drop) if attn_drop > 0 else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        self._index_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    def layout(self, height: int, width: int) -> Tuple[int, int, int, int, int, int]:
        """(window h, window w, shift h, shift w, padded H, padded W) used for a height x width map."""
        ws = self.window_size
        wh, ww = min(ws, height), min(ws, width)
        sh = ws // 2 if self.shift and height > ws else 0
        sw = ws // 2 if self.shift and width > ws else 0
        return wh, ww, sh, sw, math.ceil(height / wh) * wh, math.ceil(width / ww) * ww

    def _bias(self, wh: int, ww: int, device) -> torch.Tensor:
        """(heads, N, N) relative-position bias of a wh x ww window."""
        index = self._index_cache.get((wh, ww))
        if index is None:
            index = self._index_cache[(wh, ww)] = _relative_position_index(wh, ww, self.window_size)
        bias = self.relative_position_bias_table[index.to(device).flatten()]
        return bias.view(wh * ww, wh * ww, -1).permute(2, 0, 1)

    def _allowed(self, height: int, width: int, device) -> Optional[torch.Tensor]:
        """(nW, N, N) bool: may query i of a window see key j (a real position of its region)? None when
        every key of every window may be seen (no padding, no shift)."""
        wh, ww, sh, sw, hp, wp = self.layout(height, width)
        if not (sh or sw or hp > height or wp > width):
            return None

        def regions(size, window, shift):
            # In the shifted frame the last window holds the end of the map ([size - window, size - shift))
            # and, wrapped around, its start ([size - shift, size)): label them apart.
            label = torch.zeros(size, dtype=torch.long, device=device)
            if shift:
                label[size - window:size - shift] = 1
                label[size - shift:] = 2
            return label
        label = regions(hp, wh, sh)[:, None] * 3 + regions(wp, ww, sw)[None, :]  # shifted frame
        valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
        valid[:height, :width] = True
        valid = torch.roll(valid, (-sh, -sw), (0, 1))  # real positions, moved to the shifted frame
        label = _window_partition(label[None, :, :, None], wh, ww)[..., 0]  # (nW, N)
        valid = _window_partition(valid[None, :, :, None], wh, ww)[..., 0]
        return (label[:, :, None] == label[:, None, :]) & valid[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        wh, ww, sh, sw, hp, wp = self.layout(height, width)
        x = x.permute(0, 2, 3, 1)
        if hp > height or wp > width:
            x = F.pad(x, (0, 0, 0, wp - width, 0, hp - height))
        if sh or sw:
            x = torch.roll(x, (-sh, -sw), (1, 2))
        windows = _window_partition(x, wh, ww)  # (B*nW, N, C)
        n, heads = wh * ww, self.num_heads
        q, k, v = self.qkv(windows).view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        attn = attn + self._bias(wh, ww, x.device).to(attn.dtype)
        allowed = self._allowed(height, width, x.device)
        if allowed is not None:
            # The lowest finite value, not -inf: a padded query whose window region holds no real key gets a
            # finite (discarded) output instead of NaN; elsewhere masked keys get exactly zero weight.
            attn = attn.view(b, -1, heads, n, n).masked_fill(~allowed[None, :, None], torch.finfo(attn.dtype).min)
            attn = attn.view(-1, heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        out = self.proj_drop(self.proj(out))
        x = _window_merge(out, b, hp, wp, wh, ww)
        if sh or sw:
            x = torch.roll(x, (sh, sw), (1, 2))
        return x[:, :height, :width].permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, shift={self.shift}'
