"""The AgriFM encoder: a Video Swin Transformer whose temporal down-sampling follows the spatial one.

AgriFM (Li et al. 2025, ``flyakon/AgriFM``) embeds a ``(T, C, H, W)`` series
with a 3-D convolution over ``(4, 2, 2)`` (time, row, column) patches, then
runs four Swin stages of shifted 3-D window attention (windows of
``(8, 7, 7)`` tokens, shrunk to the feature map where it is smaller, with a
learnt relative position bias per head).  Between stages a patch merging
layer halves rows and columns as in Swin and, AgriFM's change, also halves
time by averaging pairs of frames (``mean_frame_down``; an odd frame count
is first padded with a zero frame).  The output is the last stage's map
after a LayerNorm, its time steps stacked into channels (``feature_fusion
="cat"``): ``(B, D * T', H / 16, W / 16)`` with ``D = 8 * embed_dim``.

The module keeps the state-dict keys of the official
``PretrainingSwinTransformer3DEncoder`` (``patch_emd.proj``,
``backbone.layers.<i>.blocks.<j>.{norm1,attn.relative_position_bias_table,
attn.relative_position_index,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``backbone.layers.<i>.downsample.{reduction,norm}``, ``backbone.norm``), so
the Sentinel-2 encoder of ``AgriFM.pth`` loads with ``strict=True``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_dask.models.agrifm import AgriFMArch
from rs_embed_dask.models.layers import Mlp

__all__ = ["AgriFMEncoder", "output_frames", "window_and_shift"]

Triple = tuple[int, int, int]
_MASK_VALUE = -100.0  # what the official shifted-window mask adds between regions


def window_and_shift(
    size: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[Triple, Triple]:
    """The window and shift used on a ``(D, H, W)`` map: an axis no longer than its window is one window, unshifted."""
    ws = [int(w) for w in window]
    ss = [int(s) for s in shift]
    for i, n in enumerate(size):
        if int(n) <= ws[i]:
            ws[i] = int(n)
            ss[i] = 0
    return (ws[0], ws[1], ws[2]), (ss[0], ss[1], ss[2])


def output_frames(n_frames: int, arch: AgriFMArch) -> int:
    """Time steps left after the patch embedding and the three temporal merges (``T'``)."""
    d = -(-int(n_frames) // arch.patch_size[0])
    for step, _, _ in arch.downsample_steps[: len(arch.depths) - 1]:
        d = -(-d // max(1, step))  # averaged groups (zero-padded) or every step-th frame: ceil either way
    return d


def _partition(x: torch.Tensor, ws: Triple) -> torch.Tensor:
    """``(B, D, H, W, C)`` -> ``(B * windows, Wd * Wh * Ww, C)`` (windows in d, h, w order)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws[0] * ws[1] * ws[2], c)


def _merge(windows: torch.Tensor, ws: Triple, b: int, d: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    x = windows.view(b, d // ws[0], h // ws[1], w // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def _shift_mask(dhw: Triple, ws: Triple, ss: Triple, device: torch.device) -> torch.Tensor:
    """``(windows, N, N)`` additive mask keeping attention inside the regions a cyclic shift brought together."""
    label = torch.zeros((1, *dhw, 1), device=device)
    n = 0
    for ds in (slice(-ws[0]), slice(-ws[0], -ss[0]), slice(-ss[0], None)):
        for hs in (slice(-ws[1]), slice(-ws[1], -ss[1]), slice(-ss[1], None)):
            for wsl in (slice(-ws[2]), slice(-ws[2], -ss[2]), slice(-ss[2], None)):
                label[:, ds, hs, wsl, :] = n
                n += 1
    lw = _partition(label, ws).squeeze(-1)
    diff = lw.unsqueeze(1) - lw.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, _MASK_VALUE)


class PatchEmbed(nn.Module):
    """``(B, T, C, H, W)`` -> ``(B, D, T/pt, H/ph, W/pw)`` by a strided 3-D convolution (zero-padded at the ends)."""

    def __init__(self, patch: Triple, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 1, 3, 4)
        d, h, w = x.shape[-3:]
        pt, ph, pw = self.patch
        x = F.pad(x, (0, (-w) % pw, 0, (-h) % ph, 0, (-d) % pt))
        return self.proj(x)


@functools.lru_cache(maxsize=8)
def _relative_index(window: Triple) -> torch.Tensor:
    """``(N, N)`` index of each token pair's offset in the bias table (offsets in d, h, w, row-major)."""
    wd, wh, ww = window
    grid = torch.stack(
        torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
    ).flatten(1)
    rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0)
    rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1])
    return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside 3-D windows, with a learnt relative position bias per head."""

    def __init__(self, dim: int, window: Triple, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        wd, wh, ww = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), heads)
        )
        self.register_buffer("relative_position_index", _relative_index(window).clone())
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # a window smaller than the configured one uses the leading N x N block of the index, as the original
        index: torch.Tensor = self.relative_position_index  # type: ignore[assignment]
        idx = index[:n, :n].reshape(-1)
        bias = self.relative_position_bias_table[idx].reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention and MLP, each with a residual connection, on ``(B, D, H, W, C)``."""

    def __init__(self, dim: int, heads: int, window: Triple, shift: Triple, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        ws, ss = window_and_shift((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        # padding after the norm: the padded tokens are zeros
        x = F.pad(x, (0, 0, 0, (-w) % ws[2], 0, (-h) % ws[1], 0, (-d) % ws[0]))
        _, dp, hp, wp, _ = x.shape
        shifted = any(s > 0 for s in ss)
        if shifted:
            x = torch.roll(x, shifts=(-ss[0], -ss[1], -ss[2]), dims=(1, 2, 3))
        out = self.attn(_partition(x, ws), mask if shifted else None)
        x = _merge(out.view(-1, ws[0] * ws[1] * ws[2], out.shape[-1]), ws, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=ss, dims=(1, 2, 3))
        return x[:, :d, :h, :w, :]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self._attend(x, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Halve rows and columns (2 x 2 neighbours concatenated, normed, projected to twice the width) and time.

    With ``mean_frame_down`` the time steps of each ``step`` are averaged (an
    incomplete last group padded with zero frames), else every ``step``-th is kept.
    """

    def __init__(self, dim: int, step: Triple, mean_frame_down: bool) -> None:
        super().__init__()
        self.step = step
        self.mean_frame_down = mean_frame_down
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        sd, sh, sw = self.step
        averaged = sd >= 2 and self.mean_frame_down
        if averaged and d % sd:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, sd - d % sd))
        oh, ow = (0 if sh == 1 else 1), (0 if sw == 1 else 1)
        offsets = ((0, 0), (oh, 0), (0, ow), (oh, ow))
        parts = []
        for r, c in offsets:
            p = x[:, ::sd, r::sh, c::sw, :]
            if averaged:
                for i in range(1, sd):
                    p = p + x[:, i::sd, r::sh, c::sw, :]
                p = p / sd
            parts.append(p)
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows, then an optional :class:`PatchMerging`."""

    def __init__(self, dim: int, depth: int, heads: int, arch: AgriFMArch, step: Triple, merge: bool) -> None:
        super().__init__()
        self.window: Triple = tuple(arch.window_size)  # type: ignore[assignment]
        self.shift: Triple = tuple(w // 2 for w in arch.window_size)  # type: ignore[assignment]
        self.blocks = nn.ModuleList(
            [
                SwinBlock(dim, heads, self.window, (0, 0, 0) if i % 2 == 0 else self.shift, arch.mlp_ratio)
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim, step, arch.mean_frame_down) if merge else None
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}

    def _mask(self, d: int, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        ws, ss = window_and_shift((d, h, w), self.window, self.shift)
        if not any(s > 0 for s in ss):
            return None
        dims = tuple(math.ceil(n / k) * k for n, k in zip((d, h, w), ws, strict=True))
        key = (dims, ws, ss, str(device))
        if key not in self._masks:
            self._masks[key] = _shift_mask(dims, ws, ss, device)  # type: ignore[arg-type]
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B, C', D', H', W')``."""
        _, _, d, h, w = x.shape
        mask = self._mask(d, h, w, x.device)
        x = x.permute(0, 2, 3, 4, 1)
        for blk in self.blocks:
            x = blk(x, mask)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


class SwinBackbone(nn.Module):
    """The four stages and the final LayerNorm (``backbone.*`` keys)."""

    def __init__(self, arch: AgriFMArch) -> None:
        super().__init__()
        n = len(arch.depths)
        self.layers = nn.ModuleList(
            [
                SwinStage(
                    arch.embed_dim * 2**i,
                    arch.depths[i],
                    arch.num_heads[i],
                    arch,
                    arch.downsample_steps[i],
                    merge=i < n - 1,
                )
                for i in range(n)
            ]
        )
        self.norm = nn.LayerNorm(arch.embed_dim * 2 ** (n - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> normed last-stage map ``(B, C', D', H', W')``."""
        for layer in self.layers:
            x = layer(x.contiguous())
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class AgriFMEncoder(nn.Module):
    """AgriFM's Sentinel-2 encoder (``patch_emd`` + ``backbone``).

    Parameters
    ----------
    arch : AgriFMArch
        Widths, depths, heads and windows (the published model: the defaults).
    """

    def __init__(self, arch: AgriFMArch) -> None:
        super().__init__()
        self.arch = arch
        self.patch_emd = PatchEmbed(arch.patch_size, arch.in_chans, arch.embed_dim)
        self.backbone = SwinBackbone(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` normalised frames -> ``(B, D * T', H', W')`` (time steps stacked per channel)."""
        if x.ndim == 4:
            x = x.unsqueeze(1)
        feats = self.backbone(self.patch_emd(x))
        b, c, d, h, w = feats.shape
        return feats.reshape(b, c * d, h, w)
