"""The THOR v1 encoder: a ViT over per-band patch tokens with channel groups and 2-D ALiBi attention.

THOR (FM4CS, Norwegian Computing Center) embeds every band on its own with a
16 x 16 convolution (one per band, ``ind_patch_embed.patch_embed.<band>``),
resized at run time to the requested patch size by FlexiViT's pseudo-inverse
rule, averages the tokens of the bands of one *channel group* (bands of one
product at one ground sample distance: S2 10 m, S2 20 m, S1 VV/VH, ...),
adds a group embedding (a sine-cosine code of the patch footprint
concatenated with the group's ``band_embed``) and concatenates the groups'
token sequences.  There is no positional table: every attention head adds a
distance penalty ``-slope * |p_i - p_j|`` between the token centres on the
ground (ALiBi in 2-D, ``encoder_slopes``), so one network serves any ground
cover and any mix of resolutions.

The module keeps the state-dict keys of the official ``ThorViTEncoder``
(``ind_patch_embed.patch_embed.*``, ``band_embed.group<i>``,
``encoder_slopes``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), so the published checkpoints load with ``strict=True``.  Its
output is what rs-embed reads: the tokens after the last block, without the
final LayerNorm (THOR's ``forward_intermediates(indices=[-1], norm=False)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.layers import Mlp
from rs_embed_dask.models.thor import VARIANTS, ThorArch  # plain data there: describing thor needs no torch

__all__ = [
    "CHANNELS",
    "GROUPS",
    "VARIANTS",
    "GroupLayout",
    "ThorArch",
    "ThorEncoder",
    "alibi_bias",
    "alibi_slopes",
    "group_layout",
    "pinv_resize_matrix",
]

#: THOR's channel groups, in the order of the official configuration (``group0`` ... ``group9``).
GROUPS: tuple[tuple[str, ...], ...] = (
    ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR"),
    ("S2:RE1", "S2:RE2", "S2:RE3", "S2:RE4", "S2:SWIR1", "S2:SWIR2"),
    ("S2:CoastAerosal", "S2:WaterVapor"),
    ("S1:IW-VH", "S1:IW-VV", "S1:EW-VH", "S1:EW-VV"),
    ("S1:IW-HV", "S1:IW-HH", "S1:EW-HV", "S1:EW-HH"),
    tuple(f"S3:Oa{i:02d}_reflectance" for i in range(1, 8)),
    tuple(f"S3:Oa{i:02d}_reflectance" for i in range(8, 15)),
    tuple(f"S3:Oa{i:02d}_reflectance" for i in range(15, 22)),
    tuple(f"S3:S{i}_reflectance_an" for i in range(1, 7)),
    ("S3:S7_BT_in", "S3:S8_BT_in", "S3:S9_BT_in"),
)
_GROUP_GSD = (10, 20, 60, 10, 10, 240, 240, 240, 480, 960)

#: Channel -> (ground sample distance in metres, name of its patch-embedding convolution).
CHANNELS: dict[str, tuple[int, str]] = {}
for _members, _gsd in zip(GROUPS, _GROUP_GSD, strict=True):
    for _ch in _members:
        # both Sentinel-1 modes share one convolution per polarisation
        CHANNELS[_ch] = (_gsd, f"S1:{_ch[-2:]}" if _ch.startswith("S1:") else _ch)

#: The kernel of every published patch-embedding convolution.
CHECKPOINT_PATCH = 16
#: FlexiViT reference patch size and the finest GSD: the patch-footprint code is
#: ``patch * gsd / (REF_PATCH * MIN_GSD)``.
REF_PATCH = 4
MIN_GSD = min(g for g, _ in CHANNELS.values())




def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's per-head slopes (the geometric sequence of Press et al., interleaved for non-powers of two)."""

    def pow2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return pow2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return pow2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``[sin, cos]`` of ``pos * 10000 ** (-2i / dim)`` (MAE's 1-D code), float64 like numpy computes it."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _footprint_code(dim: int, value: float, n: int, like: torch.Tensor) -> torch.Tensor:
    """``(n, dim)``: the sine-cosine code of one patch footprint (float32, as THOR computes it)."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=like.device)
    omega = 1.0 / 10000 ** (omega / (dim / 2.0))
    pos = torch.full((n,), float(value), dtype=like.dtype, device=like.device)
    out = torch.einsum("m,d->md", pos, omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).to(like.dtype)


@functools.lru_cache(maxsize=8)
def pinv_resize_matrix(old: int, new: int) -> torch.Tensor:
    """FlexiViT's ``(new*new, old*old)`` pseudo-inverse of the bicubic (antialiased) resize ``old -> new``.

    ``kernel_new = P @ kernel_old.flatten()`` gives the kernel whose response
    to a resized patch equals the old kernel's response to the original patch
    (in the least-squares sense).  Cached: do not modify the result.
    """
    rows = []
    for i in range(old * old):
        basis = torch.zeros(old * old)
        basis[i] = 1.0
        resized = F.interpolate(basis.reshape(1, 1, old, old), (new, new), mode="bicubic", antialias=True)
        rows.append(resized.reshape(-1))
    return torch.linalg.pinv(torch.stack(rows))


@dataclass(frozen=True)
class GroupLayout:
    """The token layout of one input: groups in order, each a ``num_patch x num_patch`` block of tokens.

    Attributes
    ----------
    groups : tuple of str
        ``group<i>`` names of the groups present, in token order.
    members : tuple of tuple of str
        The input's channels of each group, in the group's order.
    gsd : tuple of int
        Ground sample distance of each group (metres).
    num_patch : tuple of int
        Patches per side of each group.
    patch_size : int
        Patch size in pixels of every group.
    """

    groups: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    gsd: tuple[int, ...]
    num_patch: tuple[int, ...]
    patch_size: int

    @property
    def n_tokens(self) -> int:
        """Total tokens (the sum of ``num_patch ** 2``)."""
        return sum(p * p for p in self.num_patch)


def group_layout(channels: Sequence[str], ground_cover: int, patch_size: int) -> GroupLayout:
    """The groups the channels fall in and their token grids for a square ``ground_cover`` (metres).

    Raises
    ------
    ModelError
        For an unknown channel, or a ground cover that ``patch_size`` pixels
        of some group's GSD do not divide.
    """
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ModelError(f"thor has no channel {unknown}; known channels: {sorted(CHANNELS)}")
    groups, members, gsds, sizes = [], [], [], []
    for i, group in enumerate(GROUPS):
        present = tuple(c for c in group if c in channels)
        if not present:
            continue
        gsd = CHANNELS[present[0]][0]
        if ground_cover % (patch_size * gsd):
            raise ModelError(
                f"thor: a ground cover of {ground_cover} m is not a whole number of {patch_size}-pixel "
                f"patches at {gsd} m (group{i}); use a fetch scale and input side whose product is a "
                f"multiple of {patch_size * gsd} m"
            )
        groups.append(f"group{i}")
        members.append(present)
        gsds.append(gsd)
        sizes.append(ground_cover // (patch_size * gsd))
    return GroupLayout(tuple(groups), tuple(members), tuple(gsds), tuple(sizes), patch_size)


def alibi_bias(layout: GroupLayout, slopes: torch.Tensor) -> torch.Tensor:
    """``(1, heads, N, N)``: ``-slope * distance`` between the token centres, in units of the coarsest patch."""
    dt, dev = slopes.dtype, slopes.device
    points = []
    for gsd, n in zip(layout.gsd, layout.num_patch, strict=True):
        line = torch.arange(0, n, dtype=dt, device=dev)
        line = (line * layout.patch_size + layout.patch_size / 2) * gsd
        points.append(torch.cartesian_prod(line, line))  # (row, col) in token order
    pts = torch.cat(points, dim=0) / max(layout.patch_size * g for g in layout.gsd)
    dist = torch.cdist(pts, pts).unsqueeze(0)
    return (dist * slopes.reshape(-1, 1, 1) * -1).unsqueeze(0)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """timm's pre-norm ViT block (same keys) whose attention takes an additive bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class _PatchEmbeds(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        names = dict.fromkeys(name for _, name in CHANNELS.values())
        self.patch_embed = nn.ModuleDict(
            {n: nn.Conv2d(1, embed_dim, CHECKPOINT_PATCH, stride=CHECKPOINT_PATCH) for n in names}
        )


class ThorEncoder(nn.Module):
    """THOR v1's encoder (keys of the official ``ThorViTEncoder`` with ALiBi and the patch-size code).

    Parameters
    ----------
    arch : ThorArch
        Widths (:data:`VARIANTS`).
    """

    def __init__(self, arch: ThorArch) -> None:
        super().__init__()
        if arch.embed_dim % arch.num_heads:
            raise ModelError(
                f"thor embed_dim {arch.embed_dim} must be divisible by num_heads {arch.num_heads}"
            )
        if not 0 < arch.band_embed_dim < arch.embed_dim or (arch.embed_dim - arch.band_embed_dim) % 2:
            raise ModelError(
                f"thor band_embed_dim must be in (0, embed_dim) with an even remainder; got "
                f"{arch.band_embed_dim} for embed_dim {arch.embed_dim}"
            )
        self.arch = arch
        self.code_dim = arch.embed_dim - arch.band_embed_dim
        self.ind_patch_embed = _PatchEmbeds(arch.embed_dim)
        codes = _sincos_1d(arch.band_embed_dim, np.arange(len(GROUPS), dtype=np.float64))
        self.band_embed = nn.ParameterDict(
            {
                f"group{i}": nn.Parameter(torch.from_numpy(codes[i]).float(), requires_grad=False)
                for i in range(len(GROUPS))
            }
        )
        self.register_buffer("encoder_slopes", torch.tensor(alibi_slopes(arch.num_heads)))
        self.blocks = nn.ModuleList([_Block(arch.embed_dim, arch.num_heads) for _ in range(arch.depth)])
        # held by the checkpoint; rs-embed reads the tokens before it
        self.norm = nn.LayerNorm(arch.embed_dim, eps=1e-6)
        self._kernels: dict[tuple[str, int, str, Any], torch.Tensor] = {}

    def conv(self, conv_name: str) -> nn.Conv2d:
        """The patch-embedding convolution ``conv_name`` (e.g. ``"S2:Red"``, ``"S1:VV"``)."""
        return cast(nn.Conv2d, self.ind_patch_embed.patch_embed[conv_name])

    def kernel(self, conv_name: str, patch_size: int) -> torch.Tensor:
        """The patch-embedding kernel of ``conv_name`` resized to ``patch_size`` (cached; float32 math)."""
        w = self.conv(conv_name).weight
        if patch_size == w.shape[-1]:
            return w
        key = (conv_name, patch_size, str(w.device), w.dtype)
        if key not in self._kernels:
            old = int(w.shape[-1])
            pinv = pinv_resize_matrix(old, patch_size).to(w.device)
            with torch.autocast(w.device.type, enabled=False):
                flat = w.detach().float().reshape(-1, old * old) @ pinv.T
            self._kernels[key] = flat.reshape(w.shape[0], w.shape[1], patch_size, patch_size).to(w.dtype)
        return self._kernels[key]

    def forward(
        self, x: torch.Tensor, channels: Sequence[str], ground_cover: int, patch_size: int
    ) -> tuple[torch.Tensor, GroupLayout]:
        """Tokens ``(B, N, D)`` of the last block (no final LayerNorm) and their layout.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, S, S)`` normalised bands, one per entry of ``channels``,
            covering ``ground_cover`` metres a side.
        channels : sequence of str
            THOR channel names of the bands (:data:`CHANNELS`).
        ground_cover : int
            Side of the input on the ground, in metres.
        patch_size : int
            Patch size in pixels at every group's own GSD.
        """
        layout = group_layout(channels, ground_cover, patch_size)
        tokens: dict[str, torch.Tensor] = {}
        for i, ch in enumerate(channels):
            gsd, conv_name = CHANNELS[ch]
            side = int(ground_cover / gsd)
            band = F.interpolate(x[:, [i]], (side, side), mode="bilinear")
            conv = self.conv(conv_name)
            t = F.conv2d(band, self.kernel(conv_name, patch_size), conv.bias, stride=patch_size)
            tokens[ch] = t.flatten(2).transpose(1, 2)
        parts = []
        for name, members, gsd, n in zip(
            layout.groups, layout.members, layout.gsd, layout.num_patch, strict=True
        ):
            g = torch.stack([tokens[c] for c in members], -1).mean(-1)
            footprint = patch_size * gsd / (REF_PATCH * MIN_GSD)
            code = _footprint_code(self.code_dim, footprint, n * n, g)
            group_code = cast(torch.Tensor, self.band_embed[name]).to(g.dtype).expand(n * n, -1)
            parts.append(g + torch.cat([code, group_code], dim=-1))
        h = torch.cat(parts, dim=1)
        slopes = cast(torch.Tensor, self.encoder_slopes)
        bias = alibi_bias(layout, slopes.float()).to(h.dtype).expand(h.shape[0], -1, -1, -1)
        for blk in self.blocks:
            h = blk(h, bias)
        return h, layout
