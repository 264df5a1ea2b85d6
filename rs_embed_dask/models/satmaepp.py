"""``satmaepp``: SatMAE++ (multi-scale MAE pre-training) ViT-L encoders, fMoW RGB or Sentinel-2 10 bands.

rs-embed 0.3.1 serves two checkpoints under one model name, chosen by
``modality=`` (here also ``model_config["modality"]``, since the encoders
differ):

``"rgb"`` (default)
    The ViT-L/16 encoder of ``MVRL/satmaepp_ViT-L_pretrain_fmow_rgb``
    (rshf ``SatMAEPP``; ``model.safetensors``) on Sentinel-2 L2A ``B4, B3,
    B2``.  The encoder is the MAE encoder ``satmae`` already builds (a timm
    ``VisionTransformer``, LayerNorm ``eps=1e-5`` as rshf's ``nn.LayerNorm``),
    so the checkpoint loads with ``strict=True`` once its decoder and
    up-sampling keys are dropped.  Preprocessing (``onthefly_satmaepp.py``):
    ``uint8(clip(DN / 10000, 0, 1) * 255)`` -> ``/ 255`` -> fMoW mean/std ->
    torchvision ``Resize((s, s), bicubic)`` of the *normalised float* tensor
    (antialiased, no padding: a non-square input is stretched, as there).
``"s2_10b"``
    The grouped-channel ViT-L (patch 8, 96 px) of
    ``mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel``
    (``checkpoint_ViT-L_pretrain_fmow_sentinel.pth``, the training
    checkpoint of ``models_mae_group_channels.mae_vit_large_patch16``) on
    ``B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12``.  The bands are embedded
    in three groups ``(B2, B3, B4, B8)``, ``(B5, B6, B7, B8A)``,
    ``(B11, B12)``, each with its own patch embedding; a token is its
    group's patch embedding plus the 2-D sin-cos position (768 channels)
    concatenated with the group's channel embedding (256 channels), both
    read from the checkpoint.  Preprocessing: per band ``(DN - (mu - 2
    sigma)) / (4 sigma)`` with SatMAE++'s Sentinel statistics, ``* 255``
    clipped and truncated to ``uint8``, ``/ 255``, then the same bicubic
    resize to 96.  Grid = the ``3 x 12 x 12`` tokens reduced over the
    groups (mean, or max with ``grid_reduce="max"``); pooled = mean (or max)
    of all ``3 x 144`` tokens.

Both encoders end with their final LayerNorm and run without masking; the
class token is dropped.  rs-embed calls ``forward_encoder(x, mask_ratio=0)``,
whose MAE ``random_masking`` still shuffles the tokens (``argsort`` of
``torch.rand``), so its grids are a fresh random permutation on every call
(the ``s2_10b`` grid then averages three random tokens per cell); pooled
outputs do not depend on the order.  Here the tokens keep their row-major,
group-major order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR
from rs_embed_dask.models.vit import S2_RGB, HubCheckpoint, ViTEmbedder, check_channels, check_choice

__all__ = [
    "CHANNEL_GROUPS",
    "S2_10_BANDS",
    "SatMAEPPEmbedder",
    "build_group_channel_encoder",
    "s2_levels",
]

MODALITIES = ("rgb", "s2_10b")
RGB_IMAGE_SIZE = 224  # rs-embed's default image_size of the model, its tile size in both modalities
#: rshf's SatMAE++ fMoW RGB statistics (config values, full precision)
RGB_MEAN = (0.4182007312774658, 0.4214799106121063, 0.3991275727748871)
RGB_STD = (0.28774282336235046, 0.27541765570640564, 0.2764017581939697)
#: the Sentinel-2 bands of the ``s2_10b`` checkpoint (SatMAE++ drops B1, B9, B10)
S2_10_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: band indices embedded together (SatMAE++'s grouping for the 10-band setting)
CHANNEL_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
# SatMAE++ util/datasets.py Sentinel statistics with bands 0, 9, 10 dropped
S2_MEAN = (1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151,
           1846.87040806, 1762.59530783, 1972.62420416, 1732.16362238, 1247.91870117)  # fmt: skip
S2_STD = (650.2842772, 712.12507725, 965.23119807, 948.9819932, 1108.06650639,
          1258.36394548, 1233.1492281, 1364.38688993, 1310.36996126, 1087.6020813)  # fmt: skip
S2_CHANNEL_EMBED = 256  # channels of the group embedding; the position embedding has the rest

RGB_CHECKPOINT = HubCheckpoint(
    repo="MVRL/satmaepp_ViT-L_pretrain_fmow_rgb",
    filename="model.safetensors",
    revision=None,  # rs-embed 0.3.1 pins none
    env_var="RS_EMBED_SATMAEPP_WEIGHTS",
    fmt="rshf SatMAEPP state dict (safetensors or torch.load weights_only=True); decoder and "
    "multi-scale up-sampling keys are dropped",
    filenames=("model.safetensors", "pytorch_model.bin"),
)
S2_CHECKPOINT = HubCheckpoint(
    repo="mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel",
    filename="checkpoint_ViT-L_pretrain_fmow_sentinel.pth",
    revision=None,
    env_var="RS_EMBED_SATMAEPP_S2_WEIGHTS",
    fmt="SatMAE++ training checkpoint {'model': state dict, 'args': Namespace, ...} read with "
    "torch.load(weights_only=True) allowing argparse.Namespace; decoder, mask_token and "
    "up-sampling keys are dropped",
)
# keys of the MAE decoder and of the multi-scale up-sampling branch
DROP_PREFIXES = ("decoder_", "mask_token", "proj_up_", "up_block", "head.", "fc_norm.")
VARIANTS = {"large": (1024, 24, 16), "l": (1024, 24, 16)}


def _f32_consts() -> tuple[np.ndarray, np.ndarray]:
    """``mu - 2 sigma`` and ``max(4 sigma, 1e-6)`` computed in float32 as rs-embed does."""
    mean = np.asarray(S2_MEAN, dtype=np.float32)
    std = np.asarray(S2_STD, dtype=np.float32)
    lo = mean - np.float32(2.0) * std
    hi = mean + np.float32(2.0) * std
    return lo, np.maximum(hi - lo, np.float32(1e-6))


def s2_levels(x: Any) -> Any:
    """Sentinel-2 DN ``(B, 10, H, W)`` -> ``uint8`` levels ``trunc(clip((DN - lo) / den * 255, 0, 255))``.

    ``lo = mu - 2 sigma`` and ``den = 4 sigma`` per band (float32); NaN
    (missing data) becomes level 0.
    """
    import torch

    lo_np, den_np = _f32_consts()
    lo = torch.from_numpy(lo_np).to(x.device).view(1, -1, 1, 1)
    den = torch.from_numpy(den_np).to(x.device).view(1, -1, 1, 1)
    y = ((x.to(torch.float32) - lo) / den * 255.0).clamp(0.0, 255.0)
    return torch.nan_to_num(y, nan=0.0).to(torch.uint8)


def build_group_channel_encoder(
    *,
    image_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    channel_groups: tuple[tuple[int, ...], ...] = CHANNEL_GROUPS,
    channel_embed: int = S2_CHANNEL_EMBED,
    norm_eps: float = 1e-6,
) -> Any:
    """SatMAE++'s grouped-channel MAE encoder (no decoder) with the official module names.

    Keys: ``patch_embed.<g>.proj`` (one timm ``PatchEmbed`` per group),
    ``cls_token``, ``pos_embed`` ``(1, 1 + L, D - channel_embed)``,
    ``channel_embed`` ``(1, G, channel_embed)``, ``blocks.*`` (timm
    ``Block``), ``norm``.  Calling the module on ``(B, C, H, W)`` returns the
    patch tokens ``(B, G, L, D)`` after the final LayerNorm (class token
    dropped, tokens in group-major, row-major order, no masking).
    """
    from functools import partial

    import torch
    from timm.models.vision_transformer import Block, PatchEmbed
    from torch import nn

    if embed_dim % num_heads:
        raise ModelError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
    if not 0 < channel_embed < embed_dim:
        raise ModelError(f"channel_embed {channel_embed} must be in (0, embed_dim={embed_dim})")
    norm: Any = partial(nn.LayerNorm, eps=norm_eps)

    class GroupChannelEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.channel_groups = channel_groups
            self.patch_embed = nn.ModuleList(
                [PatchEmbed(image_size, patch_size, len(g), embed_dim) for g in channel_groups]
            )
            n = (image_size // patch_size) ** 2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(
                torch.zeros(1, n + 1, embed_dim - channel_embed), requires_grad=False
            )
            self.channel_embed = nn.Parameter(
                torch.zeros(1, len(channel_groups), channel_embed), requires_grad=False
            )
            self.blocks = nn.ModuleList(
                [Block(embed_dim, num_heads, 4.0, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
            )
            self.norm = norm(embed_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            t = torch.stack(
                [pe(x[:, list(g)]) for pe, g in zip(self.patch_embed, self.channel_groups, strict=True)],
                dim=1,
            )
            _, g, n, d = t.shape  # B, G, L, D
            pos = self.pos_embed[:, 1:, :].unsqueeze(1).expand(-1, g, -1, -1)
            chan = self.channel_embed.unsqueeze(2).expand(-1, -1, n, -1)
            t = (t + torch.cat((pos, chan), dim=-1)).reshape(b, g * n, d)
            z = torch.cat((self.cls_token.expand(b, -1, -1), t), dim=1)  # the class token has no position
            for blk in self.blocks:
                z = blk(z)
            return self.norm(z)[:, 1:].reshape(b, g, n, d)

    return GroupChannelEncoder()


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A SatMAE++ ``.pth`` training checkpoint's ``model`` state dict, without executing pickles.

    ``torch.load(weights_only=True)`` with ``argparse.Namespace`` (the
    checkpoint's ``args``) allowed; safetensors files are read as such.
    """
    import argparse

    import torch

    from rs_embed_dask.models.weights import load_state_dict

    if path.suffix == ".safetensors":
        return load_state_dict(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"Could not read the checkpoint {str(path)!r}: {exc!r}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelError(f"The checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def _channel_embed_width(state: Mapping[str, Any]) -> int:
    """Width of the group embedding: the checkpoint's ``channel_embed`` (256 in the published one)."""
    table = state.get("channel_embed")
    return int(table.shape[-1]) if table is not None and getattr(table, "ndim", 0) == 3 else S2_CHANNEL_EMBED


class SatMAEPPEmbedder(ViTEmbedder):
    """SatMAE++ ViT-L embeddings of Sentinel-2 RGB (``"rgb"``) or 10-band (``"s2_10b"``) composites.

    ``model_config`` keys
    ---------------------
    modality : {"rgb", "s2_10b"}
        Which encoder and bands (default ``"rgb"``); ``modality=`` sets it.
    variant : {"large"}
        The only published size (rs-embed's ``variant``; ``"l"`` also accepted).
    weights : str
        Checkpoint file or folder (else ``$RS_EMBED_SATMAEPP_WEIGHTS`` /
        ``$RS_EMBED_SATMAEPP_S2_WEIGHTS``, else the Hugging Face hub).
    image_size : int
        Backbone input (default 224 rgb, 96 s2_10b; a multiple of the patch);
        the checkpoint's positional table is resized bicubically when it differs.
    channel_order : {"rgb", "bgr"}
        rgb modality: feed B4, B3, B2 (default) or reversed (rs-embed's
        ``RS_EMBED_SATMAEPP_CHANNEL_ORDER``, read when the key is absent).
    grid_reduce : {"mean", "max"}
        s2_10b: how the three group tokens of a cell make the grid (default
        ``"mean"``; ``RS_EMBED_SATMAEPP_S2_GRID_REDUCE`` when absent).
    depth, embed_dim, num_heads : int
        For tests and smoke runs only: a smaller encoder than ViT-L.
    """

    name = "satmaepp"
    requires = ("torch", "timm")
    extra = "models"
    config_keys = frozenset(
        {"modality", "variant", "weights", "image_size", "channel_order", "grid_reduce",
         "depth", "embed_dim", "num_heads"}
    )  # fmt: skip
    modality_config_key = "modality"
    supports_autocast = True
    input_size = 224
    image_level_vit_patch_grid = True
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    patch_size = 16
    default_norm_eps: ClassVar[float] = 1e-5

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(model_config or {})
        modality = check_choice(self.name, cfg, "modality", MODALITIES, "rgb")
        # the patch differs per modality: an instance value ahead of configure_vit, which reads it
        vars(self)["patch_size"] = 8 if modality == "s2_10b" else 16
        super().__init__(model_config)
        self.modality = modality
        check_choice(self.name, self.model_config, "variant", tuple(VARIANTS), "large")
        self.variant = "large"
        dim, depth, heads = VARIANTS[self.variant]
        self.configure_vit(embed_dim=dim, depth=depth, num_heads=heads)
        if modality == "s2_10b" and self.model_config.get("image_size") is None:
            self.image_size = 96  # the checkpoint's input (patch 8: 12 x 12 tokens per group)
        env_order = os.environ.get("RS_EMBED_SATMAEPP_CHANNEL_ORDER", "").strip().lower()
        self.channel_order = check_choice(
            self.name,
            self.model_config,
            "channel_order",
            ("rgb", "bgr"),
            env_order if env_order in ("rgb", "bgr") else "rgb",
        )
        env_reduce = os.environ.get("RS_EMBED_SATMAEPP_S2_GRID_REDUCE", "").strip().lower()
        self.grid_reduce = check_choice(
            self.name,
            self.model_config,
            "grid_reduce",
            ("mean", "max"),
            env_reduce if env_reduce in ("mean", "max") else "mean",
        )
        if modality == "s2_10b":
            self.bands: tuple[str, ...] = S2_10_BANDS
            self.hub: HubCheckpoint = S2_CHECKPOINT
            self.norm_eps = 1e-6  # SatMAE++'s model factories
        else:
            self.bands = S2_RGB
            self.hub = RGB_CHECKPOINT
            self.norm_eps = self.default_norm_eps

    def resolve_input_size(self) -> int | None:
        """The tile size of ``input_prep``: the backbone input, or 224 for ``s2_10b`` by default.

        rs-embed tiles with ``describe()["defaults"]["image_size"]`` of its
        one ``satmaepp`` class, 224, whatever the modality, and the ``s2_10b``
        path then resizes each 224 px tile to 96; without an explicit
        ``image_size`` the same tiles are cut here.
        """
        if self.modality == "s2_10b" and self.model_config.get("image_size") is None:
            return RGB_IMAGE_SIZE
        return self.image_size

    # -- description -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims, outputs, preprocessing and weights of this configuration."""
        g = self.grid_side
        rgb = {"collection": S2_SR, "bands": list(S2_RGB), "defaults": {"scale_m": 10, "cloudy_pct": 30}}
        s2 = {"collection": S2_SR, "bands": list(S2_10_BANDS), "defaults": {"scale_m": 10, "cloudy_pct": 30}}
        if self.modality == "s2_10b":
            grid = (
                f"({self.embed_dim}, {g}, {g}) patch tokens (patch {self.patch_size}) of the 3 channel groups, "
                f"reduced over the groups by {self.grid_reduce}, north up"
            )
            pooled = "mean (or max) of every patch token of every channel group"
            norm = (
                "per band uint8(clip((DN - (mu - 2 sigma)) / (4 sigma) * 255, 0, 255)) with SatMAE++'s Sentinel "
                f"statistics -> / 255 -> bicubic resize (antialiased) to {self.image_size}"
            )
        else:
            grid = f"({self.embed_dim}, {g}, {g}) ViT patch tokens (patch {self.patch_size}), north up"
            pooled = "mean (or max) of the patch tokens"
            norm = (
                "uint8(clip(DN / 10000, 0, 1) * 255) -> / 255 -> mean "
                f"{list(RGB_MEAN)} std {list(RGB_STD)} -> bicubic resize (antialiased, no padding) to "
                f"{self.image_size}" + (" (channels fed B, G, R)" if self.channel_order == "bgr" else "")
            )
        head = self.describe_head(
            {"collection": S2_SR, "bands": list(self.bands)},
            image_size=self.image_size,
            modality=self.modality,
        )
        return {
            **head,
            "modalities": {"rgb": rgb, "s2_10b": s2},
            "embedding_dim": self.embed_dim,
            "grid": grid,
            "grid_semantics": "vit_patch_tokens",
            "pooled": pooled,
            "temporal": "single composite",
            "input_size": self.image_size,
            "tile_size": self.resolve_input_size(),
            "patch_size": self.patch_size,
            "normalization": norm,
            "channel_groups": [[S2_10_BANDS[i] for i in grp] for grp in CHANNEL_GROUPS]
            if self.modality == "s2_10b"
            else None,
            "model_config": {
                "modality": self.modality,
                "variant": self.variant,
                "image_size": self.image_size,
                **({"grid_reduce": self.grid_reduce} if self.modality == "s2_10b" else {}),
                **({"channel_order": self.channel_order} if self.modality == "rgb" else {}),
            },
            "variants": ["large"],
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    # -- model -------------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import drop_keys, interpolate_pos_embed, load_strict, timm_vit
        from rs_embed_dask.models.weights import strip_prefix

        g = self.grid_side
        if self.modality == "rgb":
            state, path = self.hub.load(
                self.name, self.model_config, strip=("module.", "model."), drop=DROP_PREFIXES
            )
            module = timm_vit(image_size=self.image_size, **self.vit_arch(), norm_eps=self.norm_eps)
            if "pos_embed" in state:
                state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], g, g)
            load_strict(module, state, model=f"{self.name}/rgb", path=path)
            return module
        path = self.hub.find(self.name, self.model_config)
        state = drop_keys(strip_prefix(load_training_checkpoint(path), "module."), DROP_PREFIXES)
        module = build_group_channel_encoder(
            image_size=self.image_size, **self.vit_arch(),
            channel_embed=_channel_embed_width(state), norm_eps=self.norm_eps,
        )  # fmt: skip
        if "pos_embed" in state:
            state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], g, g)
        load_strict(module, state, model=f"{self.name}/s2_10b", path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        import torch

        from rs_embed_dask.models.vit import resize_square

        check_channels(self.name, x, self.bands)
        if self.modality == "s2_10b":
            unit = s2_levels(x).to(torch.float32) / 255.0
            return resize_square(unit, self.image_size, mode="bicubic", antialias=True)
        from rs_embed_dask.models.rgb8 import normalize_levels, to_levels_u8

        levels = to_levels_u8(x)
        if self.channel_order == "bgr":
            levels = levels.flip(1)
        return resize_square(
            normalize_levels(levels, RGB_MEAN, RGB_STD), self.image_size, mode="bicubic", antialias=True
        )

    def _group_tokens(self, x: Any) -> Any:
        """s2_10b: patch tokens ``(B, G, L, D)``."""
        return self.module(x)

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        g = self.grid_side
        if self.modality == "s2_10b":
            tok = self._group_tokens(x)
            cells = tok.amax(dim=1) if self.grid_reduce == "max" else tok.mean(dim=1)
            return tokens_to_grid(cells, g, g)
        tokens = self.module.forward_features(x)[:, self.module.num_prefix_tokens :]
        return tokens_to_grid(tokens, g, g)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        if self.modality == "s2_10b":
            flat = self._group_tokens(x).flatten(1, 2)  # every token of every group
            return flat.amax(dim=1) if pooling == "max" else flat.mean(dim=1)
        return super().forward_pooled(x, pooling)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """The modality of the embedding."""
        return {"modality": self.modality}
