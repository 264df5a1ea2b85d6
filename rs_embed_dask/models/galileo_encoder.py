"""The Galileo encoder (NASA Harvest): a ViT over per-band-group tokens of several modalities, with masking.

Galileo tokenises every *band group* of every modality on its own: space-time
groups (Sentinel-1, four Sentinel-2 groups by resolution and wavelength, the
Sentinel-2 RGB group, NDVI) with one FlexiViT patch embedding each, per
frame; space-only groups (SRTM, Dynamic World, WorldCereal) with a patch
embedding; time-only groups (ERA5, TerraClimate, VIIRS) and static groups
(LandScan, location, static land cover) with a linear layer.  Each token gets
four quarter-width codes added, concatenated: its group's channel embedding,
its frame's position (a fixed sin-cos table), its frame's month (a fixed
sin-cos table of 12 months) and its patch's 2-D position scaled by the
patch's ground size.  Masked tokens (the modalities a caller does not give)
are removed before the transformer blocks, so they neither attend nor are
attended to; the outputs of the visible tokens pass the final LayerNorm.

This module keeps the state-dict keys of the official ``Encoder``
(``single_file_galileo.py`` of ``nasaharvest/galileo``, vendored by rs-embed
0.3.1): ``blocks.<i>.{norm1,attn.q,attn.k,attn.v,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``pos_embed``, ``month_embed.weight``, ``{s_t,sp,t,st}_channel_embed``,
``space_time_embed.<group>.proj``, ``space_embed.<group>.proj``,
``time_embed.<group>``, ``static_embed.<group>`` and ``norm``, so the
published ``encoder.pt`` files load with ``strict=True``.  Only space-time
groups can be visible here (rs-embed feeds Sentinel-2 alone); the space,
time and static modalities are always masked, which removes their tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.layers import Mlp

__all__ = [
    "BASE_GSD",
    "S2_BANDS",
    "S2_GROUPS",
    "SPACE_BAND_GROUPS",
    "SPACE_TIME_BANDS",
    "SPACE_TIME_GROUPS",
    "STATIC_BAND_GROUPS",
    "TIME_BAND_GROUPS",
    "GalileoEncoder",
    "pinv_resize",
    "sincos_1d",
    "spatial_embed",
]

#: Metres per pixel at which the patch-position code is unscaled.
BASE_GSD = 10
S1_BANDS = ("VV", "VH")
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: The space-time input channels, in the order of the official ``SPACE_TIME_BANDS``.
SPACE_TIME_BANDS = (*S1_BANDS, *S2_BANDS, "NDVI")
_DW = (
    "water",
    "trees",
    "grass",
    "flooded_vegetation",
    "crops",
    "shrub_and_scrub",
    "built",
    "bare",
    "snow_and_ice",
)
_WC = ("temporarycrops", "maize", "wintercereals", "springcereals", "irrigation")
#: Band groups of each modality, in token (and state-dict) order: name -> channels.
SPACE_TIME_GROUPS: dict[str, tuple[str, ...]] = {
    "S1": S1_BANDS,
    "S2_RGB": ("B2", "B3", "B4"),
    "S2_Red_Edge": ("B5", "B6", "B7"),
    "S2_NIR_10m": ("B8",),
    "S2_NIR_20m": ("B8A",),
    "S2_SWIR": ("B11", "B12"),
    "NDVI": ("NDVI",),
}
SPACE_BAND_GROUPS: dict[str, tuple[str, ...]] = {
    "SRTM": ("elevation", "slope"),
    "DW": tuple(f"DW_{b}" for b in _DW),
    "WC": tuple(f"WC_{b}" for b in _WC),
}
TIME_BAND_GROUPS: dict[str, tuple[str, ...]] = {
    "ERA5": ("temperature_2m", "total_precipitation_sum"),
    "TC": ("def", "soil", "aet"),
    "VIIRS": ("avg_rad",),
}
STATIC_BAND_GROUPS: dict[str, tuple[str, ...]] = {
    "LS": ("b1",),
    "location": ("x", "y", "z"),
    "DW_static": tuple(f"DW_{b}_static" for b in _DW),
    "WC_static": tuple(f"WC_{b}_static" for b in _WC),
}
#: The space-time groups holding Sentinel-2 bands (the groups rs-embed leaves visible).
S2_GROUPS = tuple(g for g in SPACE_TIME_GROUPS if g.startswith("S2"))


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M, dim)`` sin-cos code of positions ``pos``, Galileo's frequencies ``1 / 10000 ** (i / dim / 2)``.

    The official helper divides by ``dim`` then by 2 (not by ``dim / 2``);
    the published position tables were made with it, so it is kept.
    """
    if dim % 2:
        raise ModelError(f"galileo: a sin-cos code needs an even width; got {dim}")
    omega = torch.arange(dim // 2, device=pos.device) / dim / 2.0
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1)[:, None].float() * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def spatial_embed(dim: int, side: int, gsd_ratio: float, device: Any = None) -> torch.Tensor:
    """``(side, side, dim)`` 2-D code of the patch grid: column, then row, times ``gsd_ratio`` (sin-cos each)."""
    idx = torch.arange(side, device=device)
    cols = idx[None, :].expand(side, side).float() * torch.ones(1, device=device) * gsd_ratio
    rows = idx[:, None].expand(side, side).float() * torch.ones(1, device=device) * gsd_ratio
    code = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)
    return code.reshape(side, side, dim)


def month_table(dim: int) -> torch.Tensor:
    """``(12, dim)``: sin of each month's angle in the first half, cos in the second (months 0..11)."""
    angles = torch.arange(0, 13) / (12 / (2 * torch.pi))
    half = angles[:, None].expand(13, dim // 2)
    return torch.cat([torch.sin(half)[:-1], torch.cos(half)[:-1]], dim=-1)


@functools.lru_cache(maxsize=16)
def pinv_resize(old: int, new: int) -> torch.Tensor:
    """FlexiViT's ``(new * new, old * old)`` pseudo-inverse of the antialiased bicubic resize ``old -> new``.

    A stored ``old x old`` kernel ``k`` becomes ``(P @ k.flatten()).reshape(new, new)``
    (Galileo's ``FlexiPatchEmbed.resize_patch_embed``).  Cached: do not modify the result.
    """
    rows = []
    for i in range(old * old):
        basis = torch.zeros(old * old)
        basis[i] = 1.0
        rows.append(
            F.interpolate(basis.reshape(1, 1, old, old), (new, new), mode="bicubic", antialias=True).reshape(
                -1
            )
        )
    return torch.linalg.pinv(torch.stack(rows))


class _PatchEmbed(nn.Module):
    """A FlexiViT patch embedding (``proj``): a ``max_patch`` convolution resized to any patch size."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor, patch_size: int) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, D, H // p, W // p)``."""
        weight = self.proj.weight
        if patch_size != self.patch:
            pinv = pinv_resize(self.patch, patch_size).to(device=weight.device, dtype=weight.dtype)
            o, i = weight.shape[:2]
            weight = (weight.reshape(o, i, -1) @ pinv.T).reshape(o, i, patch_size, patch_size)
        return F.conv2d(x, weight, bias=self.proj.bias, stride=patch_size)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"galileo: embedding size {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GalileoEncoder(nn.Module):
    """Galileo's encoder with the official module names (see the module docstring).

    Parameters
    ----------
    max_patch_size : int, default 8
        Kernel of the stored patch embeddings.
    embedding_size : int, default 128
        Token width (a multiple of 8: four quarter-width codes, each a sin-cos pair).
    depth, num_heads : int
        Transformer blocks and attention heads.
    mlp_ratio : float, default 2
        MLP hidden width over ``embedding_size``.
    max_sequence_length : int, default 24
        Rows of the frame-position table (the most frames).
    freeze_projections, drop_path : optional
        Training options of the official configuration; accepted and ignored.
    """

    def __init__(
        self,
        max_patch_size: int = 8,
        embedding_size: int = 128,
        depth: int = 2,
        mlp_ratio: float = 2,
        num_heads: int = 8,
        max_sequence_length: int = 24,
        freeze_projections: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if embedding_size % 8:
            raise ModelError(f"galileo: embedding_size must be a multiple of 8; got {embedding_size}")
        d, q = embedding_size, embedding_size // 4
        self.embedding_size = d
        self.max_patch_size = max_patch_size
        self.max_sequence_length = max_sequence_length
        self.blocks = nn.ModuleList([_Block(d, num_heads, mlp_ratio) for _ in range(depth)])
        self.pos_embed = nn.Parameter(sincos_1d(q, torch.arange(max_sequence_length)), requires_grad=False)
        self.month_embed = nn.Embedding.from_pretrained(month_table(q), freeze=True)
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(SPACE_TIME_GROUPS), q))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_BAND_GROUPS), q))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_BAND_GROUPS), q))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_BAND_GROUPS), q))
        self.space_time_embed = nn.ModuleDict(
            {g: _PatchEmbed(len(b), d, max_patch_size) for g, b in SPACE_TIME_GROUPS.items()}
        )
        self.space_embed = nn.ModuleDict(
            {g: _PatchEmbed(len(b), d, max_patch_size) for g, b in SPACE_BAND_GROUPS.items()}
        )
        self.time_embed = nn.ModuleDict({g: nn.Linear(len(b), d) for g, b in TIME_BAND_GROUPS.items()})
        self.static_embed = nn.ModuleDict({g: nn.Linear(len(b), d) for g, b in STATIC_BAND_GROUPS.items()})
        self.norm = nn.LayerNorm(d)

    def forward(
        self,
        space_time: torch.Tensor,
        months: torch.Tensor,
        *,
        patch_size: int,
        visible: Sequence[str] = S2_GROUPS,
        input_resolution_m: float = BASE_GSD,
        add_layernorm_on_exit: bool = True,
    ) -> torch.Tensor:
        """Tokens of the visible space-time groups.

        Parameters
        ----------
        space_time : torch.Tensor
            ``(B, T, 13, H, W)`` in :data:`SPACE_TIME_BANDS` order (``H == W``,
            multiples of ``patch_size``); channels of hidden groups are not read.
        months : torch.Tensor
            ``(B, T)`` month of each frame, 0 (January) to 11.
        patch_size : int
            Pixels per patch side.
        visible : sequence of str
            The space-time groups given (every other group, and every space,
            time and static group, is masked).
        input_resolution_m : float, default 10
            Metres per pixel (scales the patch-position code).
        add_layernorm_on_exit : bool, default True
            Apply the final LayerNorm.

        Returns
        -------
        torch.Tensor
            ``(B, h, w, T, G, D)``: ``h = H // patch_size``, ``G = len(visible)``
            in :data:`SPACE_TIME_GROUPS` order.
        """
        b, t, c, hh, ww = space_time.shape
        names = [g for g in SPACE_TIME_GROUPS if g in set(visible)]
        if c != len(SPACE_TIME_BANDS) or hh != ww or not names or len(names) != len(set(visible)):
            raise ModelError(
                f"galileo: expected (B, T, {len(SPACE_TIME_BANDS)}, S, S) space-time inputs and visible groups "
                f"among {list(SPACE_TIME_GROUPS)}; got shape {tuple(space_time.shape)} and {list(visible)}"
            )
        if t > self.max_sequence_length:
            raise ModelError(f"galileo: at most {self.max_sequence_length} frames; got {t}")
        flat = space_time.reshape(b * t, c, hh, ww)
        toks = []
        for g in names:
            idx = [SPACE_TIME_BANDS.index(band) for band in SPACE_TIME_GROUPS[g]]
            y = self.space_time_embed[g](flat[:, idx], patch_size)  # B*T, D, h, w
            toks.append(y.reshape(b, t, *y.shape[1:]).permute(0, 3, 4, 1, 2))  # B, h, w, T, D
        x = torch.stack(toks, dim=-2)  # B, h, w, T, G, D
        h, w = int(x.shape[1]), int(x.shape[2])
        x = x + self._encodings(names, months, t, h, patch_size * input_resolution_m / BASE_GSD).to(x.dtype)
        seq = x.reshape(b, h * w * t * len(names), self.embedding_size)
        for blk in self.blocks:
            seq = blk(seq)
        if add_layernorm_on_exit:
            seq = self.norm(seq)
        return seq.reshape(b, h, w, t, len(names), self.embedding_size)

    def _encodings(
        self, names: Sequence[str], months: torch.Tensor, t: int, side: int, gsd_ratio: float
    ) -> torch.Tensor:
        """``(B, h, w, T, G, D)``: channel, frame position, month and patch position codes, concatenated."""
        q = self.embedding_size // 4
        b = int(months.shape[0])
        dev = self.pos_embed.device
        g_idx = [list(SPACE_TIME_GROUPS).index(g) for g in names]
        shape = (b, side, side, t, len(names), q)
        channel = self.s_t_channel_embed[g_idx][None, None, None, None].expand(shape)
        position = self.pos_embed[:t][None, None, None, :, None].expand(shape)
        month = self.month_embed(months.long().to(dev))[:, None, None, :, None].expand(shape)
        space = spatial_embed(q, side, gsd_ratio, dev)[None, :, :, None, None].expand(shape)
        return torch.cat([channel, position, month, space], dim=-1)
