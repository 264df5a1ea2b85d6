"""The SatVision-TOA encoder: a Swin Transformer V2 with the module names of the published checkpoint.

SatVision-TOA (NASA CISTO, ``pytorch-caney``) is a SwinV2 pretrained with
SimMIM on 14-channel MODIS top-of-atmosphere chips.  The published encoder
keys (after the ``encoder.`` prefix of the SimMIM wrapper) are
``patch_embed.*``, ``mask_token``, ``layers.<i>.blocks.<j>.*`` (res-post-norm
blocks with ``norm1``/``norm2``, an extra ``norm3`` every ``norm_period``-th
block, cosine window attention with ``logit_scale``, ``q_bias``/``v_bias``
and the continuous position-bias MLP ``cpb_mlp``), ``layers.<i>.downsample.*``
(patch merging at the *end* of stages 0..2) and the final ``norm``.

timm's ``SwinTransformerV2`` is not used: it places the patch merging at the
start of the next stage (``layers.<i+1>.downsample``), merges the 2 x 2
neighbourhood in another channel order, and has no ``norm3``, so the
published keys would not load unchanged.

Forward paths, as rs-embed 0.3.1 runs them: :meth:`SatVisionSwinV2.stage_maps`
(the last stage's tokens, no final norm; rs-embed's grid) and
:meth:`SatVisionSwinV2.pooled` (final norm, then the mean over tokens;
rs-embed's ``forward_features``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_dask.models.layers import Mlp
from rs_embed_dask.models.satvision_arch import GIANT, SatVisionArch

__all__ = ["GIANT", "SatVisionArch", "SatVisionSwinV2", "arch_from_state"]


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws * ws, C)`` non-overlapping windows, row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _unwindows(win: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_windows`: ``(B * nW, ws * ws, C)`` -> ``(B, H, W, C)``."""
    c = win.shape[-1]
    b = win.shape[0] // ((h // ws) * (w // ws))
    x = win.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class _WindowAttention(nn.Module):
    """Scaled-cosine window attention with a log-spaced continuous position bias (SwinV2)."""

    relative_coords_table: torch.Tensor
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, ws: int, heads: int, pretrained_ws: int) -> None:
        super().__init__()
        self.ws = ws
        self.heads = heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True), nn.Linear(512, heads, bias=False)
        )
        rel = torch.arange(-(ws - 1), ws, dtype=torch.float32)
        table = (
            torch.stack(torch.meshgrid(rel, rel, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
        )
        table /= (pretrained_ws if pretrained_ws > 0 else ws) - 1
        table *= 8
        table = torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)
        self.register_buffer("relative_coords_table", table)
        pos = torch.arange(ws)
        coords = torch.stack(torch.meshgrid(pos, pos, indexing="ij")).flatten(1)
        delta = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        delta[:, :, 0] += ws - 1
        delta[:, :, 1] += ws - 1
        delta[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", delta.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(bw, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        cap = torch.log(torch.tensor(1.0 / 0.01, device=self.logit_scale.device))
        attn = attn * torch.clamp(self.logit_scale, max=cap).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
        rpb = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + 16 * torch.sigmoid(rpb).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class _Block(nn.Module):
    """A res-post-norm SwinV2 block (``x + norm1(attn(x))``, ``x + norm2(mlp(x))``, optional ``norm3``)."""

    def __init__(
        self,
        dim: int,
        res: int,
        heads: int,
        ws: int,
        shift: int,
        mlp_ratio: float,
        pretrained_ws: int,
        extra: bool,
    ) -> None:
        super().__init__()
        self.res = res
        if res <= ws:  # the whole map is one window: no shift
            ws, shift = res, 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, ws, heads, pretrained_ws)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim) if extra else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = None
        if shift > 0:
            img = torch.zeros((1, res, res, 1))
            cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
            label = 0
            for hs in cuts:
                for wsl in cuts:
                    img[:, hs, wsl, :] = label
                    label += 1
            win = _windows(img, ws).squeeze(-1)
            diff = win.unsqueeze(1) - win.unsqueeze(2)
            mask = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = w = self.res
        y = x.view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = _unwindows(self.attn(_windows(y, self.ws), self.attn_mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, n, c))
        x = x + self.norm2(self.mlp(x))
        return self.norm3(x)


class _PatchMerging(nn.Module):
    """2 x 2 neighbours concatenated (top-left, bottom-left, top-right, bottom-right), reduced, normalised."""

    def __init__(self, res: int, dim: int) -> None:
        super().__init__()
        self.res = res
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        y = x.view(b, self.res, self.res, c)
        y = torch.cat([y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(y.reshape(b, -1, 4 * c)))


class _Stage(nn.Module):
    def __init__(self, arch: SatVisionArch, i: int) -> None:
        super().__init__()
        dim = arch.embed_dim * 2**i
        res = arch.img_size // arch.patch_size // 2**i
        depth = arch.depths[i]

        def extra(j: int) -> bool:
            k = j + 1
            return bool(arch.norm_period and k % arch.norm_period == 0) or (arch.norm_stage and k == depth)

        self.blocks = nn.ModuleList(
            _Block(dim, res, arch.num_heads[i], arch.window_size, 0 if j % 2 == 0 else arch.window_size // 2,
                   arch.mlp_ratio, arch.pretrained_window_sizes[i], extra(j))
            for j in range(depth)
        )  # fmt: skip
        self.downsample = _PatchMerging(res, dim) if i < len(arch.depths) - 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class _PatchEmbed(nn.Module):
    def __init__(self, arch: SatVisionArch) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            arch.in_chans, arch.embed_dim, kernel_size=arch.patch_size, stride=arch.patch_size
        )
        self.norm = nn.LayerNorm(arch.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SatVisionSwinV2(nn.Module):
    """The SatVision-TOA SwinV2 encoder, keys as published (``mask_token`` kept so they load strictly).

    Parameters
    ----------
    arch : SatVisionArch
        The architecture (:data:`GIANT` for the published checkpoint).
    """

    def __init__(self, arch: SatVisionArch = GIANT) -> None:
        super().__init__()
        if len(arch.num_heads) != len(arch.depths) or len(arch.pretrained_window_sizes) != len(arch.depths):
            raise ValueError("depths, num_heads and pretrained_window_sizes need one entry per stage")
        self.arch = arch
        self.patch_embed = _PatchEmbed(arch)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim))  # SimMIM's; unused at inference
        self.layers = nn.ModuleList(_Stage(arch, i) for i in range(len(arch.depths)))
        self.norm = nn.LayerNorm(arch.num_features)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` model input -> last-stage tokens ``(B, N, D)``, row-major, before the final norm."""
        if tuple(x.shape[-2:]) != (self.arch.img_size, self.arch.img_size):
            raise ValueError(
                f"SatVision expects {self.arch.img_size} x {self.arch.img_size} inputs; got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def stage_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage as a map ``(B, D, g, g)`` (rs-embed's grid: ``extra_features()[-1]``)."""
        t = self.tokens(x)
        b, n, d = t.shape
        g = round(n**0.5)
        return t.transpose(1, 2).reshape(b, d, g, g)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm then the mean over tokens ``(B, D)`` (rs-embed's ``forward_features``)."""
        return self.norm(self.tokens(x)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)


def arch_from_state(state: Mapping[str, Any], *, defaults: SatVisionArch = GIANT) -> SatVisionArch:
    """The architecture a SatVision state dict was saved from (dims, depths, heads, windows, extra norms).

    The image size cannot be read from the keys; ``defaults.img_size`` (128)
    is kept, as are ``mlp_ratio`` and ``pretrained_window_sizes``.  The
    ``norm_period`` is the smallest period that reproduces the checkpoint's
    ``norm3`` keys (the published giant: 6).
    """
    w = state.get("patch_embed.proj.weight")
    if w is None or getattr(w, "ndim", 0) != 4:
        raise ValueError("not a SatVision SwinV2 state dict: no 4-D 'patch_embed.proj.weight'")
    embed_dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
    depths: list[int] = []
    heads: list[int] = []
    extra: list[list[int]] = []
    i = 0
    while f"layers.{i}.blocks.0.attn.logit_scale" in state:
        j = 0
        norms: list[int] = []
        while f"layers.{i}.blocks.{j}.attn.logit_scale" in state:
            if f"layers.{i}.blocks.{j}.norm3.weight" in state:
                norms.append(j + 1)
            j += 1
        depths.append(j)
        heads.append(int(state[f"layers.{i}.blocks.0.attn.logit_scale"].shape[0]))
        extra.append(norms)
        i += 1
    if not depths:
        raise ValueError("not a SatVision SwinV2 state dict: no 'layers.<i>.blocks.<j>' keys")
    window = defaults.window_size
    idx = state.get("layers.0.blocks.0.attn.relative_position_index")
    if idx is not None:
        window = round(math.sqrt(int(idx.shape[0])))
    stage = all(d in n for d, n in zip(depths, extra, strict=True) if d)
    period = 0
    for p in range(1, max(depths) + 1):
        want = [
            sorted({k for k in range(1, d + 1) if k % p == 0} | ({d} if stage else set())) for d in depths
        ]
        if want == [sorted(n) for n in extra]:
            period = p
            break
    if period == 0 and any(extra) and not stage:
        raise ValueError(f"the checkpoint's extra norms {extra} follow no period")
    return SatVisionArch(
        embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads), in_chans=in_chans,
        img_size=defaults.img_size, patch_size=patch, window_size=window, norm_period=period,
        norm_stage=stage and period == 0, mlp_ratio=defaults.mlp_ratio,
        pretrained_window_sizes=tuple(defaults.pretrained_window_sizes[: len(depths)])
        + (0,) * max(0, len(depths) - len(defaults.pretrained_window_sizes)),
    )  # fmt: skip


def buffers_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's persistent buffers (position tables and shift masks, derived from the architecture)."""
    names = {n for n, _ in module.named_buffers()}
    return {k: v for k, v in module.state_dict().items() if k in names}


def split_keys(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """``keys`` split into encoder keys and pretraining-only keys (SimMIM ``decoder.*``)."""
    enc = [k for k in keys if not k.startswith("decoder.")]
    return enc, [k for k in keys if k.startswith("decoder.")]
