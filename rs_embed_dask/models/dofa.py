"""``dofa``: DOFA (Dynamic One-For-All), a ViT whose patch embedding is generated from the band wavelengths.

The architecture is torchgeo's ``DOFA`` (the maintained implementation of the
official code, same state-dict keys), built without a classification head and
with the encoder's final LayerNorm; the official MAE checkpoints
``DOFA_ViT_base_e100.pth`` / ``DOFA_ViT_large_e100.pth`` of the Hugging Face
repository ``earthflow/DOFA`` load with ``strict=True`` once their
``mask_token``, ``projector`` and decoder keys are dropped.

Any band set whose central wavelengths are known works (Sentinel-2, Landsat
8/9 surface reflectance, Sentinel-1); unknown band names are rejected.  The
default is rs-embed's nine Sentinel-2 bands ``B4, B3, B2, B5, B6, B7, B8, B11,
B12`` with DOFA's statistics: ``clip(DN / 10000, 0, 1) * 255`` then
``(x - mean) / std`` per band; other bands need ``mean``/``std`` in
``model_config`` (applied to the raw values).  The normalised input is
centre-padded to a square (reflect) and resized bilinearly to 224.

Outputs, as rs-embed: grid = the patch tokens of the last block
``(D, 14, 14)``; pooled (mean) = DOFA's global pool, the encoder's LayerNorm
applied to the mean of the patch tokens, so it is not the plain grid mean;
pooled (max) = the maximum of the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR
from rs_embed_dask.models.vit import HubCheckpoint, ViTEmbedder, check_channels, check_choice

__all__ = ["DEFAULT_BANDS", "WAVELENGTHS_UM", "DOFAEmbedder", "wavelengths_for"]

HF_REPO = "earthflow/DOFA"
HF_REVISION: str | None = None  # rs-embed 0.3.1 pins none
ENV_VAR = "RS_EMBED_DOFA_WEIGHTS"
PATCH = 16

# variant -> (file name, embed_dim, depth, num_heads)
VARIANTS: dict[str, tuple[str, int, int, int]] = {
    "base": ("DOFA_ViT_base_e100.pth", 768, 12, 12),
    "large": ("DOFA_ViT_large_e100.pth", 1024, 24, 16),
}

#: Central wavelengths in micrometres by band name.
WAVELENGTHS_UM: dict[str, float] = {
    # Sentinel-2 MSI
    "B1": 0.443, "B2": 0.490, "B3": 0.560, "B4": 0.665, "B5": 0.705, "B6": 0.740,
    "B7": 0.783, "B8": 0.842, "B8A": 0.865, "B9": 0.945, "B10": 1.375, "B11": 1.610, "B12": 2.190,
    # Landsat 8/9 OLI surface reflectance (Collection 2 names)
    "SR_B1": 0.443, "SR_B2": 0.482, "SR_B3": 0.561, "SR_B4": 0.655, "SR_B5": 0.865,
    "SR_B6": 1.609, "SR_B7": 2.201,
    # Sentinel-1 C-band SAR: DOFA encodes SAR channels with 3.75
    "VV": 3.75, "VH": 3.75, "HH": 3.75, "HV": 3.75,
}  # fmt: skip

DEFAULT_BANDS = ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")
# DOFA's Sentinel-2 statistics on the 0..255 scale (its demo), per default band
_S2_STATS: dict[str, tuple[float, float]] = {
    "B4": (114.1099739, 77.84352553),
    "B3": (114.81779093, 69.96844919),
    "B2": (126.63977424, 67.42465279),
    "B5": (84.33539309, 64.57022983),
    "B6": (97.84789168, 61.72545487),
    "B7": (103.94461911, 61.34187099),
    "B8": (101.435633, 60.29744676),
    "B11": (72.32804172, 47.88519516),
    "B12": (56.66528851, 42.55886798),
}


def wavelengths_for(bands: Sequence[str]) -> list[float]:
    """Central wavelengths (µm) of ``bands``; a :class:`ModelError` names unknown bands and the known ones."""
    unknown = [b for b in bands if b not in WAVELENGTHS_UM]
    if unknown:
        raise ModelError(
            f"dofa needs the central wavelength of every band; unknown bands {unknown}. "
            f"Known bands: {sorted(WAVELENGTHS_UM)}, or give model_config 'wavelengths' (µm, one per band)."
        )
    return [WAVELENGTHS_UM[b] for b in bands]


def _float_list(name: str, value: Any, n: int) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ModelError(f"dofa model_config {name!r} must be a list of {n} numbers; got {value!r}") from exc
    if len(out) != n:
        raise ModelError(f"dofa model_config {name!r} must have one value per band ({n}); got {len(out)}")
    return out


class DOFAEmbedder(ViTEmbedder):
    """DOFA embeddings of any band set with known wavelengths.

    ``model_config`` keys
    ---------------------
    variant : {"base", "large"}
        ViT-B/16 (768-d) or ViT-L/16 (1024-d); default ``"base"``.
    weights : str
        Checkpoint file, or a folder holding ``DOFA_ViT_<variant>_e100.pth``
        (else ``$RS_EMBED_DOFA_WEIGHTS``, else the Hugging Face hub).
    bands : list of str
        Bands to read (default the nine Sentinel-2 bands above).
    wavelengths : list of float
        Central wavelengths in µm, one per band (default from the band names).
    mean, std : list of float
        Per-band normalisation of the raw values; required for bands without
        built-in statistics.
    image_size : int
        Backbone input (multiple of 16, default 224).
    depth, embed_dim, num_heads : int
        For tests and smoke runs only: a smaller encoder than the variant's.
    """

    name = "dofa"
    requires = ("torch", "timm", "torchgeo")
    extra = "torchgeo"
    config_keys = frozenset(
        {
            "variant",
            "weights",
            "bands",
            "wavelengths",
            "mean",
            "std",
            "image_size",
            "depth",
            "embed_dim",
            "num_heads",
        }
    )
    supports_autocast = True
    input_size = 224
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    patch_size = PATCH

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.variant = check_choice(self.name, cfg, "variant", tuple(VARIANTS), "base")
        self.filename, dim, depth, heads = VARIANTS[self.variant]
        bands = cfg.get("bands", DEFAULT_BANDS)
        if isinstance(bands, str):
            bands = [b.strip() for b in bands.split(",") if b.strip()]
        if not bands or not all(isinstance(b, str) and b for b in bands):
            raise ModelError(
                f"dofa model_config 'bands' must be a non-empty list of band names; got {bands!r}"
            )
        self.bands = tuple(bands)
        n = len(self.bands)
        if cfg.get("wavelengths") is not None:
            self.wavelengths = _float_list("wavelengths", cfg["wavelengths"], n)
        else:
            self.wavelengths = wavelengths_for(self.bands)
        if (cfg.get("mean") is None) != (cfg.get("std") is None):
            raise ModelError("dofa model_config 'mean' and 'std' go together; got only one of them")
        if cfg.get("mean") is not None:
            self.norm_mean = _float_list("mean", cfg["mean"], n)
            self.norm_std = _float_list("std", cfg["std"], n)
            if min(self.norm_std) <= 0:
                raise ModelError(f"dofa model_config 'std' must be positive; got {self.norm_std}")
            self.norm_mode = "raw"
        else:
            missing = [b for b in self.bands if b not in _S2_STATS]
            if missing:
                raise ModelError(
                    f"dofa has no normalisation statistics for bands {missing} (built-in: {list(_S2_STATS)}); "
                    "give model_config 'mean' and 'std' (one per band, in raw input units)."
                )
            self.norm_mean = [_S2_STATS[b][0] for b in self.bands]
            self.norm_std = [_S2_STATS[b][1] for b in self.bands]
            self.norm_mode = "s2_255"
        self.configure_vit(embed_dim=dim, depth=depth, num_heads=heads)
        self.hub = HubCheckpoint(
            repo=HF_REPO,
            filename=self.filename,
            revision=HF_REVISION,
            env_var=ENV_VAR,
            fmt="official DOFA MAE checkpoint (torch.load weights_only=True); mask_token, "
            "projector and decoder keys are dropped",
        )

    def describe(self) -> dict[str, Any]:
        """Bands, wavelengths, scale, dims, outputs, preprocessing and weights of this configuration."""
        g = self.grid_side
        norm = (
            "clip(DN / 10000, 0, 1) * 255 then (x - mean) / std"
            if self.norm_mode == "s2_255"
            else "(x - mean) / std on the raw values"
        )
        inputs = {"collection": S2_SR, "bands": list(self.bands), "wavelengths_um": list(self.wavelengths)}
        return {
            **self.describe_head(inputs, image_size=self.image_size),
            "embedding_dim": self.embed_dim,
            "grid": f"({self.embed_dim}, {g}, {g}) ViT patch tokens of the last block (patch {PATCH}), north up",
            "grid_semantics": "vit_patch_tokens",
            "pooled": "mean: LayerNorm of the patch-token mean (DOFA global pool); max: max of the grid",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": f"{norm}, mean {self.norm_mean} std {self.norm_std}; square pad; bilinear "
            f"resize to {self.image_size}",
            "side_inputs": {"wavelengths_um": "one per band, from the band names"},
            "known_bands": sorted(WAVELENGTHS_UM),
            "model_config": {
                "variant": self.variant,
                "bands": list(self.bands),
                "image_size": self.image_size,
            },
            "variants": sorted(VARIANTS),
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def build_module(self) -> Any:
        from torchgeo.models.dofa import DOFA

        from rs_embed_dask.models.vit import load_strict

        state, path = self.hub.load(
            self.name,
            self.model_config,
            strip=("module.", "backbone.", "encoder."),
            drop=("mask_token", "projector.", "decoder", "head.", "fc_norm."),
        )
        # global_pool=False keeps the encoder's ``norm``, which the checkpoint holds
        module = DOFA(img_size=self.image_size, **self.vit_arch(), num_classes=0, global_pool=False)
        load_strict(module, state, model=f"{self.name}/{self.variant}", path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        import torch

        from rs_embed_dask.models.vit import pad_to_square, resize_square

        check_channels(self.name, x, self.bands)
        mean = torch.tensor(self.norm_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.norm_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if self.norm_mode == "s2_255":
            x = (x / 10000.0).clamp(0.0, 1.0) * 255.0
        x = (x - mean) / std
        return resize_square(pad_to_square(x), self.image_size, mode="bilinear", antialias=False)

    def forward_tokens(self, x: Any) -> Any:
        """Patch tokens ``(B, N, D)`` of the last block (before the final LayerNorm)."""
        import torch

        m = self.module
        waves = torch.tensor(self.wavelengths, dtype=torch.float32, device=x.device)
        t, _ = m.patch_embed(x, waves)
        t = t + m.pos_embed[:, 1:, :]
        cls = (m.cls_token + m.pos_embed[:, :1, :]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        for block in m.blocks:
            t = block(t)
        return t[:, 1:]

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        g = self.grid_side
        return tokens_to_grid(self.forward_tokens(x), g, g)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        tokens = self.forward_tokens(x)
        if pooling == "max":
            return tokens.amax(dim=1)
        return self.module.norm(tokens.mean(dim=1))
