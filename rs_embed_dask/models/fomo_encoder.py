"""FoMo-Net's ``MultiSpectralViT``: one ViT over per-band tokens, keyed by spectral modality.

FoMo-Net (Bountos et al. 2023, "FoMo-Bench", arXiv:2312.10114) cuts every input
band on its own into ``patch x patch`` patches, embeds them with one shared
patch embedding (``single_embedding_layer``), and tells bands apart by a
learnt *spectral* embedding indexed by a modality key (``sentinel-2-b4`` is
key 9 of the pretraining table).  The tokens of all bands form one sequence
(band-major, each band's patches row-major); there is no CLS token in the
forward pass.  The encoder here is written from the paper's description and
the published checkpoint's layout, with the same module names, so the
official ``fomo_single_embedding_layer_weights.pt`` loads with
``strict=True``:

``to_patch_embedding.{1,2,3}``
    LayerNorm(patch * patch) -> Linear(patch * patch, dim) -> LayerNorm(dim)
    (index 0 is the parameter-free patch rearrangement);
``pos_embedding`` ``(1, 1 + n_patches, dim)``
    the patch positions use rows ``1 .. n_patches``;
``spectral_embedding`` ``(1, 1 + n_modalities, dim)``
    one row per pretraining modality (37), plus an unused last row;
``cls_token``, ``mlp_head``
    pretraining parts kept for the strict load, unused for embeddings;
``transformer.layers.<i>.0`` / ``.1``
    pre-norm attention (``norm``, ``to_qkv`` without bias, ``to_out.0``;
    64 dimensions per head) and MLP (``net.0`` LayerNorm, ``net.1`` Linear,
    GELU, ``net.4`` Linear), each added to the residual stream;
``transformer.norm``
    the final LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

__all__ = ["DIM_HEAD", "MODALITY_CHANNELS", "FomoArch", "build_fomo_encoder"]

#: Width of one attention head (fixed by the published model).
DIM_HEAD = 64
#: FoMo's pretraining modality table (``configs/datasets/fomo_pretraining_datasets.json``): key -> channel.
_S2 = ("b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b8a", "b9", "b10", "b11", "b12")
MODALITY_CHANNELS: dict[int, str] = dict(
    enumerate(
        (
            "planet-r", "planet-g", "planet-b", "planet-nir", "sentinel-1-vv", "sentinel-1-vh",
            *(f"sentinel-2-{b}" for b in _S2),
            "landsat-r", "landsat-g", "landsat-b", "landsat-nir", "landsat-swir-1", "landsat-swir-2",
            "landsat-panchromatic", "landsat-aerosol", "landsat-cirrus", "aerial-r", "aerial-g", "aerial-b",
            "aerial-nir", "dem", "gaofen2-r", "gaofen2-g", "gaofen2-b", "gaofen2-nir",
        )
    )
)  # fmt: skip


@dataclass(frozen=True)
class FomoArch:
    """The shape of a FoMo encoder (FoMo-Net_1: 64 px, patch 16, 768-d, 12 layers, 12 heads, MLP 2048).

    Attributes
    ----------
    image_size, patch_size : int
        Square input side and patch side in pixels (``image_size`` a multiple of ``patch_size``).
    dim, depth, heads, mlp_dim : int
        Token width, transformer layers, attention heads (64-d each), MLP hidden width.
    num_classes : int
        Rows of the pretraining ``mlp_head`` (1000), kept for the strict load.
    n_modalities : int
        Rows of the spectral table less one (37, the pretraining modalities).
    """

    image_size: int = 64
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 2048
    num_classes: int = 1000
    n_modalities: int = len(MODALITY_CHANNELS)

    @property
    def grid_side(self) -> int:
        """Patches per side of one band."""
        return self.image_size // self.patch_size

    def parameter_count(self) -> int:
        """Parameters of the encoder (for memory estimates and ``describe()``)."""
        p2, d, inner = self.patch_size**2, self.dim, DIM_HEAD * self.heads
        embed = 2 * p2 + p2 * d + d + 2 * d
        tables = (self.grid_side**2 + 1) * d + (self.n_modalities + 1) * d + d
        attn = 2 * d + 3 * inner * d + (inner * d + d if self._project_out else 0)
        mlp = 2 * d + d * self.mlp_dim + self.mlp_dim + self.mlp_dim * d + d
        return embed + tables + self.depth * (attn + mlp) + 2 * d + self.num_classes * (d + 1)

    @property
    def _project_out(self) -> bool:
        return not (self.heads == 1 and self.dim == DIM_HEAD)


def build_fomo_encoder(arch: FomoArch) -> Any:
    """A ``torch.nn.Module`` with FoMo's keys: ``module(x, keys)`` -> tokens ``(B, K * g * g, dim)``.

    Parameters
    ----------
    arch : FomoArch
        The encoder's shape.

    Returns
    -------
    torch.nn.Module
        Called with a model-ready batch ``(B, K, S, S)`` (``S = image_size``)
        and ``K`` modality keys (one per channel, in channel order), it returns
        the final-LayerNorm tokens, band-major: the ``g * g`` row-major patch
        tokens of channel 0, then of channel 1, ...
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    inner = DIM_HEAD * arch.heads

    class _Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(arch.dim)
            self.to_qkv = nn.Linear(arch.dim, 3 * inner, bias=False)
            # index 1 is a dropout in training; parameter-free here
            self.to_out = (
                nn.Sequential(nn.Linear(inner, arch.dim), nn.Identity())
                if arch._project_out
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            qkv = self.to_qkv(self.norm(x)).reshape(b, n, 3, arch.heads, DIM_HEAD).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            return self.to_out(out.transpose(1, 2).reshape(b, n, inner))

    class _FeedForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # indices 3 and 5 are dropouts in training; the keys are net.0, net.1 and net.4
            self.net = nn.Sequential(
                nn.LayerNorm(arch.dim), nn.Linear(arch.dim, arch.mlp_dim), nn.GELU(), nn.Identity(),
                nn.Linear(arch.mlp_dim, arch.dim), nn.Identity(),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    class _Transformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(arch.dim)
            self.layers = nn.ModuleList(
                [nn.ModuleList([_Attention(), _FeedForward()]) for _ in range(arch.depth)]
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                attn, ff = cast(nn.ModuleList, layer)
                x = x + attn(x)
                x = x + ff(x)
            return self.norm(x)

    class _PatchRows(nn.Module):
        """``(B, 1, S, S)`` -> ``(B, g * g, patch * patch)``: row-major patches, pixels row-major inside."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            p = arch.patch_size
            x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(b, (h // p) * (w // p), p * p * c)

    class MultiSpectralViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            p2 = arch.patch_size**2
            n = arch.grid_side**2
            self.to_patch_embedding = nn.Sequential(
                _PatchRows(), nn.LayerNorm(p2), nn.Linear(p2, arch.dim), nn.LayerNorm(arch.dim)
            )
            self.pos_embedding = nn.Parameter(torch.zeros(1, n + 1, arch.dim))
            self.spectral_embedding = nn.Parameter(torch.zeros(1, arch.n_modalities + 1, arch.dim))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.dim))
            self.transformer = _Transformer()
            self.mlp_head = nn.Linear(arch.dim, arch.num_classes)

        def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
            b, k, h, w = x.shape
            # every band through the one patch embedding, as a batch of single-channel images
            tokens = self.to_patch_embedding(x.reshape(b * k, 1, h, w))
            n = tokens.shape[1]
            tokens = tokens.reshape(b, k, n, arch.dim)
            tokens = tokens + self.spectral_embedding[0, keys].reshape(1, k, 1, arch.dim)
            tokens = tokens + self.pos_embedding[:, 1 : n + 1].reshape(1, 1, n, arch.dim)
            return self.transformer(tokens.reshape(b, k * n, arch.dim))

    return MultiSpectralViT()
