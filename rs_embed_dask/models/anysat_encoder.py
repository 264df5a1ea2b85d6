"""The AnySat encoder (Astruc et al., CVPR 2025) with the module names of the official release.

AnySat embeds each modality with its own projector, encodes the sub-patches
of every patch with a shared "spatial encoder" transformer (whose class token
becomes the patch token), adds a sine-cosine position of the patch scaled by
the patch size, runs a ViT over the patch tokens and ends with a
cross-attention block in which learnt queries (one per patch plus the tile's
class query) attend to the tokens with a 2-D relative-position term (iRPE,
Euclidean buckets, contextual on the keys).

The module tree and its state-dict keys are those of the official
``AnyModule`` built by the published ``hubconf.AnySat`` in release mode
(``cls_token``, ``projector_<modality>.*`` for all eleven modalities,
``spatial_encoder.*``, ``blocks.0..depth``), so ``models/AnySat.pth`` loads
with ``strict=True``.  Only the Sentinel-2 time-series path (``projector_s2``,
a Lightweight Temporal Attention Encoder over the frames of each pixel, with
day-of-year positions) runs here; the other projectors are held for their
weights.

Two details of the official code are kept because they change the numbers:

* the relative-position term of every attention uses the *first head's*
  query for all heads (the release's gather on a one-head index, without the
  optional CUDA op);
* the last (cross-attention) block has no residual connection around its
  attention.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rs_embed_dask.models.anysat_config import AnySatArch  # plain data there: describing needs no torch

__all__ = [
    "MODALITIES",
    "AnySatArch",
    "AnySatEncoder",
    "rpe_bucket_ids",
    "sincos_2d",
]

#: The modalities of the release (each has a projector in the checkpoint), in module order.
MODALITIES: tuple[str, ...] = (
    "aerial", "aerial-flair", "alos", "l7", "l8", "modis", "naip", "s1", "s1-asc", "s2", "spot",
)  # fmt: skip
#: Input channels of the time-series (LTAE) projectors; ``s2`` alone normalises its inputs (``in_norm``).
_LTAE_CHANNELS = {"s2": 10, "s1-asc": 2, "s1": 3, "alos": 3, "l7": 6, "l8": 11, "modis": 7}
#: (input channels, patch size in pixels) of the image (MLP) projectors.
_MLP_PROJECTORS = {"aerial": (4, 10), "aerial-flair": (5, 10), "spot": (3, 10), "naip": (4, 8)}
#: Input resolution (m) of Sentinel-2 in the spatial encoder's position code.
S2_RES_M = 10
_LTAE_HEADS, _LTAE_DK, _LTAE_PERIOD = 16, 8, 367
# iRPE "euc" with ratio 1.9: piecewise index alpha = 1.9, beta = 3.8, gamma = 15.2
_RPE_ALPHA, _RPE_BETA, _RPE_GAMMA = 1.9, 3.8, 15.2
_RPE_BUCKETS = 2 * int(_RPE_BETA) + 1 + 1  # distances 0..beta both signs, plus the class token's bucket


# -- position codes -----------------------------------------------------------------------------
def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, side: int, step: float) -> torch.Tensor:
    """``(1 + side**2, dim)``: a zero class row, then the 2-D sin-cos code of a ``side x side`` grid.

    Positions are ``step`` times the column and row index; the first half of
    the channels codes the column, the second the row (AnySat's
    ``get_2d_sincos_pos_embed_with_scale`` / ``..._with_resolution``), tokens
    in row-major order.
    """
    idx = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols * step), _sincos_1d(dim // 2, rows * step)], dim=1)
    return torch.cat([torch.zeros(1, dim), emb], dim=0)


@lru_cache(maxsize=32)
def rpe_bucket_ids(side: int) -> torch.Tensor:
    """``(1 + side**2, 1 + side**2)`` iRPE bucket of every (query, key) pair of a class token + grid.

    The Euclidean distance between two grid cells, rounded, mapped by iRPE's
    piecewise index (exact up to 1.9, logarithmic to 3.8 beyond), shifted by 3;
    any pair with the class token gets the last bucket.
    """
    idx = torch.arange(side)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)
    diff = pos[:, None, :] - pos[None, :, :]
    dis = diff.square().sum(-1).float().sqrt().round()
    far = dis > _RPE_ALPHA
    log_part = _RPE_ALPHA + torch.log(dis.clamp(min=1e-9) / _RPE_ALPHA) / math.log(
        _RPE_GAMMA / _RPE_ALPHA
    ) * (_RPE_BETA - _RPE_ALPHA)
    ids = torch.where(far, log_part.round().clamp(max=_RPE_BETA), dis.round()).long() + int(_RPE_BETA)
    n = side * side
    out = torch.full((n + 1, n + 1), _RPE_BUCKETS - 1, dtype=torch.long)
    out[1:, 1:] = ids
    return out


class _RPE(nn.Module):
    """Contextual iRPE on the keys, one table shared by the heads (``lookup_table_weight``)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, _RPE_BUCKETS))

    def forward(self, q: torch.Tensor, side: int) -> torch.Tensor:
        """``q`` ``(B, H, L, d)`` -> ``(B, 1, L, L)`` bias from the first head's query (as the release)."""
        table = q[:, 0] @ self.lookup_table_weight[0]  # B, L, buckets
        ids = rpe_bucket_ids(side).to(q.device)
        b = table.shape[0]
        return torch.gather(table, 2, ids.unsqueeze(0).expand(b, -1, -1)).unsqueeze(1)


# -- transformer parts ------------------------------------------------------------------------------
class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    """Multi-head self-attention (``qkv``, ``proj``), optionally with the contextual key RPE."""

    def __init__(self, dim: int, heads: int, rpe: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        if rpe:
            self.rpe_k = _RPE(dim // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        if not hasattr(self, "rpe_k"):
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            q = q * hd**-0.5
            attn = q @ k.transpose(-2, -1) + self.rpe_k(q, math.isqrt(n))
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, *, eps: float, rpe: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, heads, rpe)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _CrossAttention(nn.Module):
    """Learnt queries (``q_learned`` + the patch's sin-cos position) over the tokens, with the key RPE."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.rpe_k = _RPE(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        b, n, c = x.shape
        hd = c // self.heads
        side = math.isqrt(n)
        pos = sincos_2d(c, side, float(scale)).to(x)
        q = (self.q_learned + pos.unsqueeze(0)).expand(b, -1, -1)
        q = q.reshape(b, n, self.heads, hd).transpose(1, 2)
        k = self.wk(x).reshape(b, n, self.heads, hd).transpose(1, 2)
        v = self.wv(x).reshape(b, n, self.heads, hd).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * hd**-0.5 + self.rpe_k(q, side)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        x = self.attn(self.norm1(x), scale)  # no residual around the cross-attention (as released)
        return x + self.mlp(self.norm2(x))


class _SpatialEncoder(nn.Module):
    """The sub-patch transformer: class token + sub-patches of one patch -> the patch token."""

    def __init__(self, arch: AnySatArch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.predictor_blocks = nn.ModuleList(
            [_Block(d, arch.num_heads, eps=1e-5, rpe=True) for _ in range(arch.depth)]
        )
        self.predictor_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """``(P, k*k, D)`` sub-patch tokens -> ``(P, 1 + k*k, D)``: the class (patch) token and the sub-patches."""
        p, _, d = x.shape
        x = torch.cat([self.cls_token.expand(p, -1, -1), x], dim=1)
        side = max(1, int(scale * 10 / S2_RES_M))
        x = x + sincos_2d(d, side, float(S2_RES_M)).to(x).unsqueeze(0)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_norm(x)


# -- projectors -----------------------------------------------------------------------------------
def _linear_gn(widths: list[int], groups: int, dropout: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.GroupNorm(groups, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.0))
    return nn.Sequential(*layers)


class _LTAEAttention(nn.Module):
    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.Q = nn.Parameter(torch.zeros(_LTAE_HEADS, _LTAE_DK))
        self.fc1_k = nn.Linear(d_in, _LTAE_HEADS * _LTAE_DK)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``(N, T, D)`` -> ``(N, D)``: per head, one learnt query over the frames; heads concatenated."""
        n, t, d = v.shape
        k = self.fc1_k(v).view(n, t, _LTAE_HEADS, _LTAE_DK)
        scores = torch.einsum("nthk,hk->nht", k, self.Q) / math.sqrt(_LTAE_DK)
        attn = scores.softmax(dim=-1)
        out = torch.einsum("nht,nthc->nhc", attn, v.view(n, t, _LTAE_HEADS, d // _LTAE_HEADS))
        return out.reshape(n, d)


class _LTAE(nn.Module):
    """Lightweight Temporal Attention Encoder applied to every pixel's series (``patch_embed``)."""

    def __init__(self, in_channels: int, dim: int, in_norm: bool) -> None:
        super().__init__()
        self.dim = dim
        self.inconv = _linear_gn([in_channels, dim // 8, dim // 2, dim, dim * 2, dim], 4, dropout=True)
        self.attention_heads = _LTAEAttention(dim)
        self.in_norm: nn.Module = nn.GroupNorm(_LTAE_HEADS, dim) if in_norm else nn.Identity()
        self.out_norm = nn.GroupNorm(_LTAE_HEADS, dim)
        self.mlp = _linear_gn([dim, dim], 4, dropout=False)

    def positions(self, doy: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` days -> ``(N, T, D)`` sin/cos code, period 367, repeated for each head."""
        d = self.dim // _LTAE_HEADS
        denom = torch.pow(
            float(_LTAE_PERIOD), 2 * torch.div(torch.arange(d), 2, rounding_mode="floor").float() / d
        )
        table = doy.float().unsqueeze(-1) / denom.to(doy.device)
        table = torch.where(torch.arange(d, device=doy.device) % 2 == 0, torch.sin(table), torch.cos(table))
        return table.repeat(1, 1, _LTAE_HEADS)

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` and ``(B, T)`` days -> ``(B, D, H, W)``."""
        b, t, c, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        seq = self.inconv(seq.reshape(-1, c)).view(b * h * w, t, -1)
        seq = self.in_norm(seq.transpose(1, 2)).transpose(1, 2)
        days = doy.reshape(b, 1, t).expand(b, h * w, t).reshape(b * h * w, t)
        seq = seq + self.positions(days)
        out = self.out_norm(self.mlp(self.attention_heads(seq)))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)


class _PatchLTAE(nn.Module):
    def __init__(self, in_channels: int, dim: int, in_norm: bool) -> None:
        super().__init__()
        self.patch_embed = _LTAE(in_channels, dim, in_norm)
        self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def forward(self, x: torch.Tensor, doy: torch.Tensor, scale: int) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B * P, k*k, D)``: each ``k x k``-pixel patch's sub-patch tokens (row-major)."""
        f = self.patch_embed(x, doy)  # B, D, H, W
        f = f.unfold(2, scale, scale).unfold(3, scale, scale)  # B, D, h, w, k, k
        f = f.flatten(2, 3).flatten(3, 4).permute(0, 2, 3, 1)  # B, P, k*k, D
        return f.flatten(0, 1)


class _PatchMLP(nn.Module):
    """An image projector of the release (aerial, SPOT, NAIP): held for its weights, not run."""

    def __init__(self, in_chans: int, patch: int, dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim), nn.LayerNorm(dim),
            nn.ReLU(),
        )  # fmt: skip


# -- the encoder ----------------------------------------------------------------------------------
class AnySatEncoder(nn.Module):
    """AnySat in release mode; :meth:`forward` runs the Sentinel-2 time-series path.

    Parameters
    ----------
    arch : AnySatArch
        Widths (``AnySatArch()`` is the released ``base``).
    """

    def __init__(self, arch: AnySatArch | None = None) -> None:
        super().__init__()
        arch = arch or AnySatArch()
        d = arch.embed_dim
        self.arch = arch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        for mod in MODALITIES:
            if mod in _LTAE_CHANNELS:
                proj: nn.Module = _PatchLTAE(_LTAE_CHANNELS[mod], d, in_norm=mod == "s2")
            else:
                chans, patch = _MLP_PROJECTORS[mod]
                proj = _PatchMLP(chans, patch, d)
            self.add_module(f"projector_{mod}", proj)
        self.spatial_encoder = _SpatialEncoder(arch)
        blocks: list[nn.Module] = [_Block(d, arch.num_heads, eps=1e-6, rpe=False) for _ in range(arch.depth)]
        blocks.append(_CrossBlock(d, arch.num_heads))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, s2: torch.Tensor, doy: torch.Tensor, scale: int = 1, *, dense: bool = False) -> Any:
        """Encode a Sentinel-2 series.

        Parameters
        ----------
        s2 : torch.Tensor
            ``(B, T, 10, S, S)`` normalised reflectance (square).
        doy : torch.Tensor
            ``(B, T)`` day of year of each frame, 0 for 1 January.
        scale : int, default 1
            Patch side in pixels (AnySat's ``patch_size`` in metres / 10).
        dense : bool, default False
            Also return the sub-patch tokens (AnySat's ``output="dense"``).

        Returns
        -------
        tokens : torch.Tensor
            ``(B, 1 + n*n, D)``: the tile token, then the ``n x n`` patch tokens (row-major).
        subpatches : torch.Tensor
            Only with ``dense``: ``(B, n*n, k*k, D)`` sub-patch tokens of each patch.
        """
        b = s2.shape[0]
        proj = self.get_submodule("projector_s2")(s2, doy, scale)  # (B * P, k*k, D)
        n_patches = proj.shape[0] // b
        side = math.isqrt(n_patches)
        enc = self.spatial_encoder(proj, scale)
        tokens = enc[:, 0].reshape(b, n_patches, -1)
        pos = sincos_2d(tokens.shape[-1], side, float(scale)).to(tokens)
        tokens = tokens + pos[1:].unsqueeze(0)
        cls = (self.cls_token + pos[:1].unsqueeze(0)).expand(b, -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks[:-1]:
            x = blk(x)
        x = self.blocks[-1](x, scale)
        if dense:
            return x, enc[:, 1:].reshape(b, n_patches, enc.shape[1] - 1, -1)
        return x

    @staticmethod
    def dense_grid(tokens: torch.Tensor, subpatches: torch.Tensor) -> torch.Tensor:
        """``(B, 2D, n*k, n*k)``: each pixel's patch token and sub-patch token, concatenated (``output="dense"``)."""
        b, p, kk, d = subpatches.shape
        n, k = math.isqrt(p), math.isqrt(kk)
        patch = tokens[:, 1:].unsqueeze(2).expand(b, p, kk, d)
        both = torch.cat([patch, subpatches], dim=3)  # B, P, k*k, 2D
        both = both.reshape(b, n, n, k, k, 2 * d).permute(0, 5, 1, 3, 2, 4)
        return both.reshape(b, 2 * d, n * k, n * k)
