"""Multispectral backbones published with torchgeo's weights.

``croma``, ``copernicusfm``, ``panopticon``, ``ssl4eo_s2_vit`` and
``ssl4eo_s2_resnet`` are built with torchgeo 0.8's model classes and
constructors (``weights=None``); their published checkpoints (the URL of the
torchgeo weights enum) are found by :func:`torchgeo_checkpoint` and read
without executing pickles.  Every model is fed Sentinel-2 digital numbers
resized (bilinear) to its input size.  ViT grids are the patch tokens
``(D, h, w)``; pooled vectors are the mean (or max) of those tokens, the CLS
token dropped, as rs-embed pools ViT tokens; the ResNet grid is the last
stage's feature map and its pooled vector the global average (or max).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models.base import S2_SR, TorchEmbedder, pool_grid
from rs_embed_dask.models.weights import find_weights, load_state_dict

__all__ = [
    "CROMAEmbedder",
    "CopernicusFMEmbedder",
    "PanopticonEmbedder",
    "SSL4EOResNetEmbedder",
    "SSL4EOViTEmbedder",
    "torchgeo_checkpoint",
]

S2_L1C = "COPERNICUS/S2_HARMONIZED"
S2_13 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_12 = tuple(b for b in S2_13 if b != "B10")  # L2A has no cirrus band
# ESA nominal centre wavelength and bandwidth (nm) of each Sentinel-2 band
S2_WAVELENGTH_NM = dict(zip(S2_13, (443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190), strict=True))
S2_BANDWIDTH_NM = dict(zip(S2_13, (20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 30, 90, 180), strict=True))
# SSL4EO-S12 per-band statistics of S2 digital numbers (the SSL4EO-S12 benchmark's z-score)
S2_MEAN = dict(zip(S2_13, (
    1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0, 2195.2, 1537.4
), strict=True))  # fmt: skip
S2_STD = dict(zip(S2_13, (
    791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5, 1340.0, 1142.9
), strict=True))  # fmt: skip


def _hf_parts(url: str) -> tuple[str, str, str]:
    """``(repo, revision, filename)`` of a ``https://hf.co/<repo>/resolve/<rev>/<file>`` URL."""
    path = url.split("://", 1)[-1].split("/", 1)[1]
    repo, _, rest = path.partition("/resolve/")
    revision, _, filename = rest.partition("/")
    return repo, revision, filename


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (its ``set_dir`` counts once torch is loaded)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub"


def torchgeo_checkpoint(model: str, *, config: Mapping[str, Any], env_var: str, url: str) -> Path:
    """The local checkpoint of a torchgeo weights ``url``.

    Looked for, first match wins: ``model_config["weights"]``, ``$env_var``,
    torch hub's cache (``torch.hub.get_dir()/checkpoints/<file>``, where
    torchgeo's own download puts it) and the Hugging Face hub cache (or a
    download) of the URL's repository, file and revision.

    Raises
    ------
    ModelError
        Naming every place looked at and how to provide the file.
    """
    repo, revision, filename = _hf_parts(url)
    hub_file = _torch_hub_dir() / "checkpoints" / filename
    if not config.get("weights") and not os.environ.get(env_var) and hub_file.is_file():
        return hub_file
    try:
        return find_weights(
            model, config=config, env_var=env_var, filenames=[filename],
            hf_repo=repo, hf_filename=filename, revision=revision,
        )  # fmt: skip
    except ModelError as exc:
        raise ModelError(
            f"{exc} Also looked at the torch hub cache {str(hub_file)!r} (missing); "
            f"torchgeo's own download ({url}) lands there."
        ) from exc


def _check_keys(model: str, path: Path, missing: Sequence[str], unexpected: Sequence[str], allowed: set[str]) -> None:
    bad_missing = sorted(set(missing) - allowed)
    bad_unexpected = sorted(set(unexpected) - allowed)
    if bad_missing or bad_unexpected:
        raise ModelError(
            f"The checkpoint {str(path)!r} does not fit model {model!r}: missing keys {bad_missing[:8]}, "
            f"unexpected keys {bad_unexpected[:8]}."
        )


def _fit_pos_embed(state: dict[str, Any], shape: Any, grid: int) -> None:
    """Resize a checkpoint's ``(1, 1 + g*g, D)`` position embedding to ``grid`` x ``grid`` (bicubic, as torchgeo)."""
    pos = state.get("pos_embed")
    if pos is None or tuple(pos.shape) == tuple(shape):
        return
    from torchgeo.models.copernicusfm import resize_abs_pos_embed

    old = round((pos.shape[1] - 1) ** 0.5)
    state["pos_embed"] = resize_abs_pos_embed(pos, grid, (old, old), num_prefix_tokens=1)


def _int_key(name: str, cfg: Mapping[str, Any], key: str, default: int, multiple: int = 1) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % multiple:
        rule = f"a positive multiple of {multiple}" if multiple > 1 else "a positive integer"
        raise ModelError(f"{name} model_config {key!r} must be {rule}; got {v!r}")
    return v


class _TorchgeoEmbedder(TorchEmbedder):
    """Shared parts: bands, resizing, describe(), weights lookup."""

    extra = "torchgeo"
    requires = ("torch", "torchgeo")
    supports_autocast = True
    env_var: ClassVar[str] = ""
    default_bands: ClassVar[tuple[str, ...]] = S2_12
    collection: ClassVar[str] = S2_SR
    patch_size: ClassVar[int] = 16
    base_keys: ClassVar[frozenset[str]] = frozenset({"weights", "image_size"})

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self.image_size = _int_key(self.name, self.model_config, "image_size", int(self.input_size or 224), self.patch_size)
        self.bands = self.default_bands

    # subclasses fill these in
    embedding_dim: int = 0
    normalization_text: str = ""
    grid_text: str = "patch tokens (D, image_size / patch, image_size / patch)"
    weights_url: str = ""

    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims, normalisation and weights of this configuration."""
        g = self.image_size // self.patch_size
        inputs = {"collection": self.collection, "bands": list(self.bands)}
        return {
            **self.describe_head(inputs, image_size=self.image_size),
            "embedding_dim": self.embedding_dim,
            "input_size": self.image_size,
            "grid": f"{self.grid_text}: ({self.embedding_dim}, {g}, {g}) at image_size {self.image_size}",
            "pooled": "mean (or max) over the grid cells",
            "temporal": "single composite",
            "normalization": self.normalization_text,
            "weights": f"torchgeo weights {self.weights_url}",
            "weights_env": self.env_var,
            "extra": self.extra,
        }

    def checkpoint(self) -> Path:
        """Local path of the published checkpoint."""
        return torchgeo_checkpoint(self.name, config=self.model_config, env_var=self.env_var, url=self.weights_url)

    def _check_channels(self, x: Any) -> None:
        if x.ndim != 4 or x.shape[1] != len(self.bands):
            raise ModelError(
                f"{self.name} expects (C, H, W) inputs of the {len(self.bands)} bands {list(self.bands)}; "
                f"got shape {tuple(x.shape[1:])}"
            )

    def _resize(self, x: Any) -> Any:
        import torch.nn.functional as F

        if tuple(x.shape[-2:]) == (self.image_size, self.image_size):
            return x
        return F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)

    def _zscore(self, x: Any) -> Any:
        import torch

        mean = torch.tensor([S2_MEAN[b] for b in self.bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor([S2_STD[b] for b in self.bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @staticmethod
    def _tokens_to_grid(tokens: Any) -> Any:
        b, n, d = tokens.shape
        g = round(n**0.5)
        return tokens.transpose(1, 2).reshape(b, d, g, n // g)


# -- CROMA ---------------------------------------------------------------------------------
class CROMAEmbedder(_TorchgeoEmbedder):
    """CROMA's optical (12 S2 bands) or radar (VV, VH) encoder.

    ``model_config``: ``variant`` (``"base"`` 768-d / ``"large"`` 1024-d),
    ``modality`` (``"optical"`` or ``"sar"``), ``image_size`` (multiple of 8,
    default 120 as pretrained), ``weights``; test-only ``encoder_dim`` and
    ``encoder_depth`` shrink the architecture.  Inputs are normalised per
    image and band to ``[mean - 2 std, mean + 2 std] -> [0, 1]`` (clipped), as
    CROMA's README prescribes (there with batch statistics; per image here so
    an embedding does not depend on its batch).
    """

    name = "croma"
    input_size = 120
    patch_size = 8
    env_var = "RS_EMBED_CROMA_WEIGHTS"
    config_keys = frozenset({"weights", "image_size", "variant", "modality", "encoder_dim", "encoder_depth"})
    modality_config_key = "modality"
    modality_aliases: ClassVar[Mapping[str, str]] = {"s2": "optical", "s1": "sar"}
    normalization_text = "per image and band: (x - (mean - 2 std)) / (4 std) clipped to [0, 1] (std with ddof=1)"
    #: variant -> (width, depth, checkpoint URL of torchgeo 0.8's ``CROMA{Base,Large}_Weights.CROMA_VIT``)
    _VARIANTS: ClassVar[dict[str, tuple[int, int, str]]] = {
        "base": (
            768,
            12,
            "https://hf.co/torchgeo/croma/resolve/387883f08af79d777167519c57cd826eda89a16f/CROMA_base-0238d814.pt",
        ),
        "large": (
            1024,
            24,
            "https://huggingface.co/torchgeo/croma/resolve/92cb1a0f4e34c6c01558baf070197c01255382f6/"
            "CROMA_large-921e69ad.pt",
        ),
    }

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.variant = str(cfg.get("variant", "base"))
        if self.variant not in self._VARIANTS:
            raise ModelError(f"croma model_config 'variant' must be one of {sorted(self._VARIANTS)}; got {self.variant!r}")
        self.modality = str(cfg.get("modality", "optical"))
        if self.modality not in ("optical", "sar"):
            raise ModelError(f"croma model_config 'modality' must be 'optical' or 'sar'; got {self.modality!r}")
        dim, depth, url = self._VARIANTS[self.variant]
        self.embedding_dim = _int_key(self.name, cfg, "encoder_dim", dim, 16)
        self.encoder_depth = _int_key(self.name, cfg, "encoder_depth", depth, 2)
        if self.modality == "sar":
            self.bands = ("VV", "VH")
        self.weights_url = url

    @property
    def collection(self) -> str:  # type: ignore[override]
        return "COPERNICUS/S1_GRD" if self.modality == "sar" else S2_SR

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model_config"] = {"variant": self.variant, "modality": self.modality, "image_size": self.image_size}
        d["modalities"] = {
            "optical": {"collection": S2_SR, "bands": list(S2_12)},
            "sar": {"collection": "COPERNICUS/S1_GRD", "bands": ["VV", "VH"]},
        }
        d["defaults"]["modality"] = self.modality
        return d

    def build_module(self) -> Any:
        from torchgeo.models.croma import CROMA

        mod = "sar" if self.modality == "sar" else "optical"
        model = CROMA(
            modalities=[mod], encoder_dim=self.embedding_dim, encoder_depth=self.encoder_depth,
            num_heads=16, patch_size=8, image_size=self.image_size,
        )  # fmt: skip
        path = self.checkpoint()
        state = load_state_dict(path)
        prefix = "s1" if mod == "sar" else "s2"
        for part in ("encoder", "GAP_FFN"):
            sub = state.get(f"{prefix}_{part}")
            if not isinstance(sub, Mapping):
                raise ModelError(f"The checkpoint {str(path)!r} has no '{prefix}_{part}' entry (a CROMA checkpoint has).")
            try:
                getattr(model, f"{prefix}_{part}").load_state_dict(dict(sub), strict=True)
            except RuntimeError as exc:
                raise ModelError(f"The checkpoint {str(path)!r} does not fit croma {self.variant!r}: {exc}") from exc
        return model

    def preprocess(self, x: Any) -> Any:
        self._check_channels(x)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.flatten(2).std(dim=-1, unbiased=True).nan_to_num(0.0)[..., None, None]
        lo = mean - 2 * std
        out = (x - lo) / (4 * std).clamp_min(1e-12)
        return out.clamp(0.0, 1.0)

    def forward_grid(self, x: Any) -> Any:
        enc = self.module.s1_encoder if self.modality == "sar" else self.module.s2_encoder
        return self._tokens_to_grid(enc(imgs=self._resize(x), attn_bias=self.module.attn_bias))


# -- Copernicus-FM -------------------------------------------------------------------------
class CopernicusFMEmbedder(_TorchgeoEmbedder):
    """Copernicus-FM ViT-B with its spectral hypernetwork patch embedding.

    Any subset of Sentinel-2 bands (``model_config["bands"]``) is embedded
    through their wavelengths and bandwidths.  The metadata tokens get the ROI
    centre (lon, lat), the window's mid date (days since 1970-01-01) and the
    ground area of one patch token (km2) from the embedding context; unknown
    values use the model's learnt "unknown" tokens, as Copernicus-FM does with
    NaN metadata.  Test-only keys ``embed_dim``, ``depth``, ``num_heads``.
    """

    name = "copernicusfm"
    input_size = 224
    env_var = "RS_EMBED_COPERNICUSFM_WEIGHTS"
    config_keys = frozenset({"weights", "image_size", "bands", "embed_dim", "depth", "num_heads"})
    normalization_text = "per band (DN - mean) / std with SSL4EO-S12 Sentinel-2 statistics"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.bands = _s2_bands(self.name, cfg.get("bands", S2_12))
        self.embedding_dim = _int_key(self.name, cfg, "embed_dim", 768, 2)
        self.depth = _int_key(self.name, cfg, "depth", 12)
        self.num_heads = _int_key(self.name, cfg, "num_heads", 12)

    #: torchgeo 0.8's ``CopernicusFM_Base_Weights.CopernicusFM_ViT.url``
    weights_url = (
        "https://huggingface.co/torchgeo/copernicus-fm/resolve/f395812cc990ba25a451dbb9c9e6d95c8482947e/"
        "CopernicusFM_ViT_base_varlang-085350e4.pth"
    )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["side_inputs"] = "metadata (lon, lat, days since 1970, patch token area km2) from the context"
        d["wavelengths_nm"] = [S2_WAVELENGTH_NM[b] for b in self.bands]
        d["bandwidths_nm"] = [S2_BANDWIDTH_NM[b] for b in self.bands]
        d["model_config"] = {"bands": list(self.bands), "image_size": self.image_size}
        return d

    def build_module(self) -> Any:
        from torchgeo.models.copernicusfm import CopernicusFM

        model = CopernicusFM(
            img_size=self.image_size, patch_size=16, embed_dim=self.embedding_dim,
            depth=self.depth, num_heads=self.num_heads, num_classes=0,
        )  # fmt: skip
        path = self.checkpoint()
        state = load_state_dict(path)
        _fit_pos_embed(state, model.pos_embed.shape, self.image_size // 16)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # torchgeo: fc_norm is not in the checkpoint (it is created for classification)
        _check_keys(self.name, path, missing, unexpected, {"fc_norm.weight", "fc_norm.bias"})
        return model

    def preprocess(self, x: Any) -> Any:
        self._check_channels(x)
        return self._zscore(x)

    def _grid(self, x: Any, meta: Any) -> Any:
        import torch
        from torchgeo.models.copernicusfm import resize_abs_pos_embed

        m = self.module
        x = self._resize(x)
        wv = torch.tensor([float(S2_WAVELENGTH_NM[b]) for b in self.bands], device=x.device)
        bw = torch.tensor([float(S2_BANDWIDTH_NM[b]) for b in self.bands], device=x.device)
        tok = m.patch_embed_spectral(x, wavelengths=wv, bandwidths=bw)
        g = round(tok.shape[1] ** 0.5)
        g0 = round(m.num_patches**0.5)
        pos = resize_abs_pos_embed(m.pos_embed, g, (g0, g0), num_prefix_tokens=1)
        d = pos.shape[-1]
        lon, lat, days, area = meta[:, 0], meta[:, 1], meta[:, 2], meta[:, 3]
        coord = m.coord_token if torch.isnan(lon).any() or torch.isnan(lat).any() else m.get_coord_pos_embed(lon, lat, d)
        scale = m.scale_token if torch.isnan(area).any() else m.get_area_pos_embed(area, d)
        time = m.time_token if torch.isnan(days).any() else m.get_time_pos_embed(days, d)
        pos = pos + m.coord_fc(coord) + m.scale_fc(scale) + m.time_fc(time)
        z = torch.cat([(m.cls_token + pos[:, :1]).expand(tok.shape[0], -1, -1), tok + pos[:, 1:]], dim=1)
        for blk in m.blocks:
            z = blk(z)
        return self._tokens_to_grid(z[:, 1:])

    def forward_grid(self, x: Any) -> Any:
        import torch

        return self._grid(x, torch.full((x.shape[0], 4), float("nan"), device=x.device))

    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """ROI centre ``lonlat``, mid-window ``days`` since 1970 and the patch token's ``token_area_km2``."""
        lonlat = days = area = None
        if context:
            if context.get("spatial") is not None:
                lonlat = np.array(context["spatial"].to_wgs84().center, dtype=np.float32)
            if context.get("temporal") is not None:
                a, b = context["temporal"].date_range()
                mid = a + (b - a) / 2
                days = np.array([float((mid - date(1970, 1, 1)).days)], dtype=np.float32)
            sensor = context.get("sensor")
            if sensor is not None and x.ndim == 3:
                token_m = 16 * float(sensor.scale_m) * x.shape[-2] / self.image_size
                area = np.array([token_m**2 / 1e6], dtype=np.float32)
        return {"lonlat": lonlat, "days": days, "token_area_km2": area}

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        import torch

        b = x.shape[0]
        nan = torch.full((b, 1), float("nan"), device=x.device)
        lonlat = sides["lonlat"] if sides["lonlat"] is not None else nan.expand(b, 2)
        meta = torch.cat(
            [lonlat.float(), sides["days"] if sides["days"] is not None else nan,
             sides["token_area_km2"] if sides["token_area_km2"] is not None else nan], dim=1,
        )  # fmt: skip
        grid = self._grid(x, meta)
        return grid if output.mode == "grid" else pool_grid(grid, output.pooling)


def _s2_bands(name: str, bands: Any) -> tuple[str, ...]:
    if isinstance(bands, str):
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    out = tuple(str(b).strip().upper() for b in bands or ())
    bad = [b for b in out if b not in S2_13]
    if not out or bad:
        raise ModelError(f"{name} model_config 'bands' must be Sentinel-2 bands from {list(S2_13)}; got {bands!r}")
    return out


# -- Panopticon ----------------------------------------------------------------------------
class PanopticonEmbedder(_TorchgeoEmbedder):
    """Panopticon ViT-B/14: any optical bands, identified by their wavelengths (nm).

    ``model_config``: ``bands`` (Sentinel-2 names, default the 12 L2A bands),
    ``image_size`` (multiple of 14, default 224), ``weights``; test-only
    ``attn_dim`` (channel attention width) and ``depth`` (keep the first
    ``depth`` transformer blocks).
    """

    name = "panopticon"
    input_size = 224
    patch_size = 14
    env_var = "RS_EMBED_PANOPTICON_WEIGHTS"
    config_keys = frozenset({"weights", "image_size", "bands", "attn_dim", "depth"})
    normalization_text = "per band (DN - mean) / std with SSL4EO-S12 Sentinel-2 statistics"
    embedding_dim = 768

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.bands = _s2_bands(self.name, cfg.get("bands", S2_12))
        self.attn_dim = _int_key(self.name, cfg, "attn_dim", 2304, 16)
        self.depth = _int_key(self.name, cfg, "depth", 12)

    #: torchgeo 0.8's ``Panopticon_Weights.VIT_BASE14.url``
    weights_url = (
        "https://hf.co/lewaldm/panopticon/resolve/c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7/panopticon_vitb14_teacher.pth"
    )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["side_inputs"] = "chn_ids: the centre wavelength (nm) of each band"
        d["wavelengths_nm"] = [S2_WAVELENGTH_NM[b] for b in self.bands]
        d["model_config"] = {"bands": list(self.bands), "image_size": self.image_size}
        return d

    def build_module(self) -> Any:
        import torch
        from torchgeo.models import panopticon_vitb14

        # built without initialising (every tensor comes from the checkpoint, strict=True)
        with torch.device("meta"):
            model: Any = panopticon_vitb14(weights=None, img_size=self.image_size, attn_dim=self.attn_dim)
            model.model.blocks = model.model.blocks[: self.depth]
        model = model.to_empty(device="cpu")
        path = self.checkpoint()
        state = load_state_dict(path)
        state.pop("mask_token", None)
        _fit_pos_embed(state, model.model.pos_embed.shape, self.image_size // 14)
        if self.depth < 12:  # test-only truncation: drop the checkpoint's later blocks
            state = {k: v for k, v in state.items() if not k.startswith("blocks.") or int(k.split(".")[1]) < self.depth}
        try:
            model.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"The checkpoint {str(path)!r} does not fit panopticon: {exc}") from exc
        return model

    def preprocess(self, x: Any) -> Any:
        self._check_channels(x)
        return self._zscore(x)

    def forward_grid(self, x: Any) -> Any:
        import torch

        x = self._resize(x)
        ids = torch.tensor([float(S2_WAVELENGTH_NM[b]) for b in self.bands], device=x.device)
        vit = self.module.model
        tokens = vit.forward_features({"imgs": x, "chn_ids": ids.expand(x.shape[0], -1).clone()})
        return self._tokens_to_grid(tokens[:, vit.num_prefix_tokens :])


# -- SSL4EO-S12 MoCo backbones ---------------------------------------------------------------
class SSL4EOViTEmbedder(_TorchgeoEmbedder):
    """SSL4EO-S12 MoCo-v3 ViT-S/16 on the 13 Sentinel-2 L1C bands (torchgeo ``SENTINEL2_ALL_MOCO``).

    ``model_config``: ``image_size`` (multiple of 16, default 224), ``weights``;
    test-only ``embed_dim``, ``depth``, ``num_heads``.
    """

    name = "ssl4eo_s2_vit"
    input_size = 224
    env_var = "RS_EMBED_SSL4EO_S2_VIT_WEIGHTS"
    default_bands = S2_13
    collection = S2_L1C
    config_keys = frozenset({"weights", "image_size", "embed_dim", "depth", "num_heads"})
    normalization_text = "DN / 10000 (torchgeo's SSL4EO-S12 transform, without its centre crop)"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.embedding_dim = _int_key(self.name, cfg, "embed_dim", 384)
        self.depth = _int_key(self.name, cfg, "depth", 12)
        self.num_heads = _int_key(self.name, cfg, "num_heads", 6)

    #: torchgeo 0.8's ``ViTSmall16_Weights.SENTINEL2_ALL_MOCO.url``
    weights_url = (
        "https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_moco/resolve/"
        "1cb683f6c14739634cdfaaceb076529adf898c74/vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"
    )

    def build_module(self) -> Any:
        from torchgeo.models import vit_small_patch16_224

        model = vit_small_patch16_224(
            weights=None, in_chans=13, num_classes=0, img_size=self.image_size,
            embed_dim=self.embedding_dim, depth=self.depth, num_heads=self.num_heads,
        )  # fmt: skip
        path = self.checkpoint()
        state = load_state_dict(path)
        _fit_pos_embed(state, model.pos_embed.shape, self.image_size // 16)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # as torchgeo: the MoCo checkpoint has no final norm and no head
        _check_keys(self.name, path, missing, unexpected, {"norm.weight", "norm.bias", "head.weight", "head.bias"})
        return model

    def preprocess(self, x: Any) -> Any:
        self._check_channels(x)
        return x / 10000.0

    def forward_grid(self, x: Any) -> Any:
        tokens = self.module.forward_features(self._resize(x))
        return self._tokens_to_grid(tokens[:, self.module.num_prefix_tokens :])


class SSL4EOResNetEmbedder(SSL4EOViTEmbedder):
    """SSL4EO-S12 MoCo-v2 ResNet-50 on the 13 Sentinel-2 L1C bands (torchgeo ``SENTINEL2_ALL_MOCO``).

    The grid is the last stage's ``(2048, image_size / 32, image_size / 32)``
    feature map; the pooled vector its global average (ResNet's own pooling)
    or max.  ``model_config``: ``image_size`` (multiple of 32, default 224),
    ``weights``; test-only ``blocks_per_stage`` (instead of 3, 4, 6, 3).
    """

    name = "ssl4eo_s2_resnet"
    patch_size = 32
    env_var = "RS_EMBED_SSL4EO_S2_RESNET_WEIGHTS"
    config_keys = frozenset({"weights", "image_size", "blocks_per_stage"})
    grid_text = "last-stage feature map (2048, image_size / 32, image_size / 32)"
    embedding_dim = 2048

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        TorchEmbedder.__init__(self, model_config)
        self.image_size = _int_key(self.name, self.model_config, "image_size", 224, 32)
        self.bands = self.default_bands
        n = self.model_config.get("blocks_per_stage")
        self.layers = (3, 4, 6, 3) if n is None else (_int_key(self.name, self.model_config, "blocks_per_stage", 1),) * 4

    #: torchgeo 0.8's ``ResNet50_Weights.SENTINEL2_ALL_MOCO.url``
    weights_url = (
        "https://hf.co/torchgeo/resnet50_sentinel2_all_moco/resolve/da4f3c9dbe09272eb902f3b37f46635fa4726879/"
        "resnet50_sentinel2_all_moco-df8b932e.pth"
    )

    def build_module(self) -> Any:
        from torchgeo.models import resnet50

        model = resnet50(weights=None, in_chans=13, num_classes=0, layers=self.layers)
        path = self.checkpoint()
        missing, unexpected = model.load_state_dict(load_state_dict(path), strict=False)
        _check_keys(self.name, path, missing, unexpected, {"fc.weight", "fc.bias"})
        return model

    def forward_grid(self, x: Any) -> Any:
        return self.module.forward_features(self._resize(x))
