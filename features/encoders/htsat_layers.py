"""The Swin transformer of HTS-AT (Chen et al., 2022).

Module and parameter names follow LAION-CLAP's ``HTSAT_Swin_Transformer`` so its state dicts load unchanged,
including the buffers it saves (``relative_position_index`` and the shifted windows' ``attn_mask``, which are
recomputed here and must match). Attention runs through ``F.scaled_dot_product_attention`` with the relative
position bias (and shift mask) as an additive mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SHIFT_MASK = -100.0  # Swin's additive mask between tokens of different regions in a shifted window


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop whole residual branches per sample, rescaling the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


def window_partition(x: Tensor, size: int) -> Tensor:
    """(B, H, W, C) -> (B * H/size * W/size, size * size, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size * size, c)


def window_merge(windows: Tensor, size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, size * size, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def relative_position_index(size: int) -> Tensor:
    """(size², size²) index into the (2·size-1)² bias table for every pair of positions in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (size - 1)  # (2, N, N), both axes from 0
    return rel[0] * (2 * size - 1) + rel[1]


def shift_mask(h: int, w: int, size: int, shift: int) -> Tensor:
    """(nW, size², size²) additive mask keeping attention within the regions a cyclic shift brought together."""
    region = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    for i, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
        region[:, rows, cols] = i
    ids = window_partition(region, size)[..., 0]  # (nW, size²)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learnt relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B * nW, N, C); mask (nW, N, N) additive or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:  # (nW, 1, N, N): the same mask for a window's position in every clip
            n_win = mask.shape[0]
            q, k, v = (t.reshape(bw // n_win, n_win, self.num_heads, n, -1) for t in (q, k, v))
            bias = bias + mask[:, None]  # (nW, heads, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = x.reshape(bw, self.num_heads, n, -1)
        return self.proj(x.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP on a (B, H*W, C) token grid of fixed ``resolution``."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window_size: int, shift: bool,
                 mlp_ratio: float, dropout: float, drop_path_rate: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window_size, self.shift = window_size, window_size // 2 if shift else 0
        if min(resolution) <= window_size:  # one window covers the grid: nothing to shift
            self.window_size, self.shift = min(resolution), 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.dropout, self.drop_path_rate = dropout, drop_path_rate
        self.register_buffer("attn_mask", shift_mask(*resolution, self.window_size, self.shift)
                             if self.shift else None)

    def forward(self, x: Tensor) -> Tensor:
        (h, w), s = self.resolution, self.shift
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, self.window_size), self.attn_mask)
        y = window_merge(y, self.window_size, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = F.dropout(y.reshape(b, h * w, c), self.dropout, self.training)
        x = x + drop_path(y, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), normalised and projected to 2C: (B, H*W, C) -> (B, H*W/4, 2C)."""

    def __init__(self, resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        (h, w), b, c = self.resolution, x.shape[0], x.shape[2]
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks, every second one shifted, then (except in the last stage) patch merging."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, dropout: float, drop_path_rates: list[float], downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                      dropout=dropout, drop_path_rate=drop_path_rates[i]) for i in range(depth))
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


__all__ = ["PatchMerging", "SwinBlock", "SwinStage", "WindowAttention"]
