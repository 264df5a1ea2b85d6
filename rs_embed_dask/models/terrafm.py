"""``terrafm``: TerraFM-B, one ViT-B/16 for Sentinel-2 (12 bands) and Sentinel-1 (VV, VH).

TerraFM (MBZUAI, arXiv:2506.06281) is a DINO-style ViT-B/16 with one patch
embedding per sensor: convolutions ``conv2d_s2_l2a``, ``conv2d_s2_l1c`` and
``conv2d_s1`` to a 2304-wide space, a learnt sensor token added to every
patch, then the shared projection ``proj1 -> LayerNorm -> proj2 -> proj3``
down to 768.  The encoder here is our own (timm ``Block`` modules for the
transformer) with the state-dict keys of the official ``terrafm.py``: the
published ``TerraFM-B.pth`` of the Hugging Face repository ``MBZUAI/TerraFM``
loads with ``strict=True`` (wrapper prefixes ``module.`` / ``backbone.`` and
DINO ``head.`` keys are dropped first).

The branch is chosen by the channel count, as in the official code: 2
channels -> the Sentinel-1 embedding, 12 -> a Sentinel-2 embedding.  The
official ``forward`` never passes ``is_l2a=True``, so rs-embed 0.3.1 (and the
model card's usage) runs L2A surface reflectance through the **L1C**
embedding; that is the default here too (``model_config`` ``s2_patch_embed``
``"l2a"`` selects the other).

Preprocessing from raw provider units, as rs-embed's ``onthefly_terrafm.py``:

* ``modality="s2"`` (default): ``B1 .. B12`` (12 bands, with ``B8A`` and
  ``B9``) of ``COPERNICUS/S2_SR_HARMONIZED`` at 10 m, ``clip(DN / 10000, 0, 1)``;
* ``modality="s1"``: ``VV, VH`` linear backscatter
  (``COPERNICUS/S1_GRD_FLOAT``, ``use_float_linear=True``), per image
  ``x = log1p(max(v, 0))`` then ``clip(x / p99(x), 0, 1)`` with the 99th
  percentile (linear interpolation) over both bands (``1`` when it is not
  positive or ``x`` is not finite); dB input (mostly negative values) is
  rejected, as rs-embed does;

then a bilinear resize (no antialias, no padding) to ``image_size`` = 224.
Outputs: pooled = the final-LayerNorm CLS token (the model's ``forward``)
for either pooling; grid = the patch tokens of the last block after the final
LayerNorm, ``(768, 14, 14)`` north up (rs-embed's ``extract_feature`` on the
last block, CLS removed).  The pooled vector is not the grid mean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR
from rs_embed_dask.models.vit import HubCheckpoint, ViTEmbedder, check_choice, resize_square

__all__ = ["S1_BANDS", "S1_COLLECTION", "S2_BANDS", "TerraFMEmbedder", "build_terrafm_encoder", "s1_log_p99"]

HF_REPO = "MBZUAI/TerraFM"
HF_FILENAME = "TerraFM-B.pth"
HF_REVISION: str | None = None  # rs-embed 0.3.1 pins none
ENV_VAR = "RS_EMBED_TERRAFM_WEIGHTS"
PATCH = 16
#: The checkpoint's input size: its positional table holds 1 + (224 / 16) ** 2 entries.
PRETRAIN_SIZE = 224
#: Sentinel-2 L2A bands in TerraFM's order.
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
#: Sentinel-1 polarisations in TerraFM's order.
S1_BANDS = ("VV", "VH")
#: rs-embed's Sentinel-1 source: GRD backscatter in linear power units.
S1_COLLECTION = "COPERNICUS/S1_GRD_FLOAT"
S1_DEFAULTS = {"use_float_linear": True, "s1_require_iw": True, "s1_relax_iw_on_empty": True}
CHECKPOINT = HubCheckpoint(
    repo=HF_REPO,
    filename=HF_FILENAME,
    revision=HF_REVISION,
    env_var=ENV_VAR,
    fmt="official TerraFM state dict (torch.load weights_only=True); 'module.'/'backbone.' prefixes "
    "stripped, DINO 'head.' keys dropped, then strict loading",
)


def s1_log_p99(x: Any) -> Any:
    """Linear S1 backscatter ``(B, 2, H, W)`` -> rs-embed's ``[0, 1]`` scaling, per image.

    ``log1p(max(x, 0))`` divided by its 99th percentile over both bands
    (numpy's default linear interpolation, computed in float32 as numpy does
    for float32 input), clipped to ``[0, 1]``; the divisor is ``1`` when the
    percentile is not positive or the image holds non-finite values.

    Raises
    ------
    ModelError
        When an image looks dB-scaled (more than half of its finite non-zero
        values negative), as rs-embed's ``normalize_s1_vvvh_chw``.
    """
    import torch

    x = x.float()
    out = []
    for img in x:
        finite_nz = img[torch.isfinite(img) & (img != 0)]
        if finite_nz.numel() and float((finite_nz < 0).float().mean()) > 0.5:
            raise ModelError(
                "terrafm modality='s1' expects linear-scale Sentinel-1 backscatter (VV, VH), but the input "
                "looks dB-scaled (mostly negative values). Fetch with SensorSpec(use_float_linear=True) "
                f"({S1_COLLECTION}) or convert dB to linear (10 ** (x / 10)) first."
            )
        v = torch.log1p(img.clamp_min(0.0))
        denom = 1.0
        if bool(torch.isfinite(v).all()):
            flat, _ = torch.sort(v.flatten())
            pos = 0.99 * (flat.numel() - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, flat.numel() - 1)
            gamma = torch.tensor(pos - lo, dtype=torch.float32, device=v.device)
            a, b = flat[lo], flat[hi]
            d = b - a
            p = b - d * (1 - gamma) if pos - lo >= 0.5 else a + d * gamma
            p_val = float(p)
            denom = p_val if p_val > 0 else 1.0
        out.append((v / torch.tensor(denom, dtype=torch.float32, device=v.device)).clamp(0.0, 1.0))
    return torch.stack(out)


def build_terrafm_encoder(*, embed_dim: int = 768, depth: int = 12, num_heads: int = 12) -> Any:
    """The TerraFM encoder as a ``torch.nn.Module`` (random weights, the official state-dict keys).

    Parameters
    ----------
    embed_dim, depth, num_heads : int
        ViT-B/16 by default (TerraFM-B); smaller values for tests.

    Returns
    -------
    torch.nn.Module
        ``module(x, grid_side)`` maps a model-ready ``(B, C, S, S)`` batch
        (``C`` = 2 or 12) to the final-LayerNorm tokens ``(B, 1 + g * g, D)``.
    """
    from functools import partial

    import torch
    import torch.nn.functional as F
    from timm.models.vision_transformer import Block
    from torch import nn

    if embed_dim % num_heads:
        raise ModelError(f"terrafm embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
    wide = 3 * embed_dim  # the sensor convolutions' width (Panopticon's design)

    class _Projection(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj1 = nn.Linear(wide, wide, bias=False)
            self.norm_input = nn.LayerNorm(wide)  # torch's default eps, unlike the blocks
            self.proj2 = nn.Linear(wide, wide)
            self.proj3 = nn.Linear(wide, embed_dim)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.proj3(self.proj2(self.norm_input(self.proj1(t))))

    class _SensorPatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            k = PATCH
            self.conv2d_s2_l2a = nn.Conv2d(12, wide, kernel_size=k, stride=k)
            self.conv2d_s2_l1c = nn.Conv2d(12, wide, kernel_size=k, stride=k)
            self.conv2d_s1 = nn.Conv2d(2, wide, kernel_size=k, stride=k)
            self.projection = _Projection()
            self.s2_l2a_embed = nn.Parameter(torch.zeros(1, wide))
            self.s2_l1c_embed = nn.Parameter(torch.zeros(1, wide))
            self.s1_embed = nn.Parameter(torch.zeros(1, wide))

        def forward(self, x: torch.Tensor, s2_l2a: bool) -> torch.Tensor:
            if x.shape[1] == 2:
                conv, token = self.conv2d_s1, self.s1_embed
            elif s2_l2a:
                conv, token = self.conv2d_s2_l2a, self.s2_l2a_embed
            else:
                conv, token = self.conv2d_s2_l1c, self.s2_l1c_embed
            return self.projection(conv(x).flatten(2).transpose(1, 2) + token)

    class TerraFMEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = _SensorPatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            n = (PRETRAIN_SIZE // PATCH) ** 2
            self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
            norm: Any = partial(nn.LayerNorm, eps=1e-6)
            self.blocks = nn.ModuleList(
                [Block(embed_dim, num_heads, 4.0, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
            )
            self.norm = norm(embed_dim)
            self.s2_l2a = False

        def pos_for(self, g: int) -> torch.Tensor:
            """The positional table for ``g x g`` patches (DINO's bicubic resize when ``g`` differs)."""
            pos = self.pos_embed
            n = pos.shape[1] - 1
            side = round(n**0.5)
            if g == side:
                return pos
            grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            f = (g + 0.1) / side  # DINO's offset against floating-point error in the output size
            grid = F.interpolate(grid, scale_factor=(f, f), mode="bicubic")
            return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g * g, -1)], dim=1)

        def forward(self, x: torch.Tensor, grid_side: int) -> torch.Tensor:
            t = self.patch_embed(x, self.s2_l2a)
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
            t = t + self.pos_for(grid_side)
            for block in self.blocks:
                t = block(t)
            return self.norm(t)

    return TerraFMEncoder()


class TerraFMEmbedder(ViTEmbedder):
    """TerraFM-B embeddings of Sentinel-2 L2A (12 bands) or Sentinel-1 VV/VH composites.

    ``modality="s1"`` (``get_embedding``, ``ExportModelRequest`` or
    ``SensorSpec.modality``) fetches ``VV, VH`` from ``COPERNICUS/S1_GRD_FLOAT``
    in linear units; the weights are the same for both modalities, and each
    input takes the branch of its channel count.

    ``model_config`` keys
    ---------------------
    weights : str
        Checkpoint file, or a folder holding ``TerraFM-B.pth`` (else
        ``$RS_EMBED_TERRAFM_WEIGHTS``, else the Hugging Face hub).
    cache_dir : str
        rs-embed's key: the Hugging Face cache folder to look in (and download to).
    s2_patch_embed : {"l1c", "l2a"}
        The Sentinel-2 patch embedding; ``"l1c"`` (default) is what the
        official ``forward`` and rs-embed use.
    image_size : int
        Backbone input (multiple of 16, default 224); the 14 x 14 positional
        table is resized bicubically (DINO's rule) for other sizes.
    depth, embed_dim, num_heads : int
        For tests and smoke runs only: a smaller encoder than ViT-B (12, 768, 12).
    """

    name = "terrafm"
    requires = ("torch", "timm")
    extra = "models"
    config_keys = frozenset(
        {"weights", "cache_dir", "s2_patch_embed", "image_size", "depth", "embed_dim", "num_heads"}
    )
    supports_autocast = True
    input_size = 224
    patch_size = PATCH
    # rs-embed squares rectangular ROIs and pools the ROI's tokens of the cut-back grid
    square_fetch = True

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self.configure_vit(embed_dim=768, depth=12, num_heads=12)
        self.s2_patch_embed = check_choice(
            self.name, self.model_config, "s2_patch_embed", ("l1c", "l2a"), "l1c"
        )
        cache_dir = self.model_config.get("cache_dir")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ModelError(f"terrafm model_config 'cache_dir' must be a folder path; got {cache_dir!r}")
        self.cache_dir = None if cache_dir is None or not str(cache_dir).strip() else str(cache_dir)
        self.hub = CHECKPOINT

    def describe(self) -> dict[str, Any]:
        """Bands per modality, scale, dims, outputs, preprocessing and weights of this configuration."""
        g = self.grid_side
        inputs = {"collection": S2_SR, "bands": list(S2_BANDS)}
        return {
            **self.describe_head(inputs, modality="s2", image_size=self.image_size, **S1_DEFAULTS),
            "modalities": {
                "s2": {"collection": S2_SR, "bands": list(S2_BANDS)},
                "s1": {"collection": S1_COLLECTION, "bands": list(S1_BANDS), "defaults": dict(S1_DEFAULTS)},
            },
            "embedding_dim": self.embed_dim,
            "grid": f"({self.embed_dim}, {g}, {g}) patch tokens of the last block after the final LayerNorm "
            f"(patch {PATCH}, CLS removed), north up",
            "grid_semantics": "vit_patch_tokens",
            "grid_type": "feature_map",
            "pooled": "the final-LayerNorm CLS token (TerraFM's forward) for either pooling",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": {
                "s2": "clip(DN / 10000, 0, 1)",
                "s1": "log1p(max(linear, 0)) / p99 over both bands (1 if not positive), clipped to [0, 1]",
                "resize": f"bilinear (no antialias, no padding) to {self.image_size}",
            },
            "branch": "by channel count: 2 -> conv2d_s1 + s1_embed; 12 -> "
            f"conv2d_s2_{self.s2_patch_embed} + s2_{self.s2_patch_embed}_embed",
            "model_config": {
                "s2_patch_embed": self.s2_patch_embed,
                "image_size": self.image_size,
                "cache_dir": self.cache_dir,
            },
            "variants": ["base"],
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        """The local ``TerraFM-B.pth``: ``weights``, ``$RS_EMBED_TERRAFM_WEIGHTS``, ``cache_dir``, the hub."""
        cfg = self.model_config
        if self.cache_dir and not cfg.get("weights") and not os.environ.get(ENV_VAR):
            try:
                from huggingface_hub import hf_hub_download

                from rs_embed_dask.models.hub_reach import hub_offline

                return Path(
                    hf_hub_download(HF_REPO, HF_FILENAME, revision=HF_REVISION, cache_dir=self.cache_dir,
                                    local_files_only=hub_offline())  # unreachable hub: no retries
                )  # fmt: skip
            except Exception:  # not there and offline: find_weights says where it looked
                pass
        return self.hub.find(self.name, cfg)

    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import drop_keys, load_strict
        from rs_embed_dask.models.weights import load_state_dict, strip_prefix

        path = self.checkpoint_path()
        state = drop_keys(strip_prefix(load_state_dict(path), "module.", "backbone."), ("head.",))
        module = build_terrafm_encoder(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads)
        load_strict(module, state, model=self.name, path=path)
        module.s2_l2a = self.s2_patch_embed == "l2a"
        return module

    def preprocess(self, x: Any) -> Any:
        c = int(x.shape[1]) if x.ndim == 4 else -1
        if c == 12:
            x = (x / 10000.0).clamp(0.0, 1.0)
        elif c == 2:
            x = s1_log_p99(x)
        else:
            raise ModelError(
                f"terrafm expects (B, C, H, W) inputs with C = 12 (Sentinel-2 {list(S2_BANDS)}) or C = 2 "
                f"(Sentinel-1 {list(S1_BANDS)}); got shape {tuple(x.shape)}"
            )
        return resize_square(x, self.image_size, mode="bilinear", antialias=False)

    def _tokens(self, x: Any) -> Any:
        return self.module(x, self.grid_side)

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        g = self.grid_side
        return tokens_to_grid(self._tokens(x)[:, 1:], g, g)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        # rs-embed returns the model's CLS vector for either pooling (pooling applies to ROI-cropped grids only)
        return self._tokens(x)[:, 0]

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        c = int(np.shape(x)[-3]) if np.ndim(x) >= 3 else -1
        if c == 2:
            return {"modality": "s1", "patch_embed": "s1"}
        return {"modality": "s2", "patch_embed": f"s2_{self.s2_patch_embed}"}
