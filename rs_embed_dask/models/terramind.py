"""``terramind``: TerraMind 1.0 (IBM / ESA), the raw-input ViT encoder of a multimodal any-to-any model.

The architecture is ``terratorch``'s (the library that publishes TerraMind):
the backbone registered as ``terramind_v1_{tiny,small,base,large}`` or
``terramind_v01_base`` is built through ``terratorch.registry.BACKBONE_REGISTRY``
with the one input modality ``S2L2A`` (``TerraMindViT``: a linear patch
embedding of 16 x 16 pixels with a fixed 2-D sin-cos position table, the
transformer blocks, the final LayerNorm; ``merge_method="mean"`` over the
single modality).  Its weights come from the published checkpoint
(``ibm-esa-geospatial/TerraMind-1.0-<size>/TerraMind_v1_<size>.pt``, the whole
any-to-any model), read with ``weights_only=True``: the encoder keys are
taken unchanged (decoder, tokenizer and other modalities' embeddings are not
part of the encoder) and loaded with ``strict=True``; a key of the encoder
missing from the file is an error, not a random initialisation.  Without
terratorch (an optional extra of about 430 MB), ``implementation="auto"``
builds :mod:`rs_embed_dask.models.terramind_native`, the same module with the
same keys.

Preprocessing follows rs-embed 0.3.1 (``onthefly_terramind.py``): the twelve
Sentinel-2 L2A bands ``B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12``
(TerraMind's ``COASTAL_AEROSOL ... SWIR_2``) at 10 m, no data as 0, clipped
to ``[0, 10000]``, resized bilinearly to 224 x 224 (no padding: a
rectangular input is stretched, as rs-embed's tensor path does), then
z-scored with TerraMind's pretraining statistics of ``untok_sen2l2a@224``
(the ``v1`` statistics, or the ``v01`` ones for ``terramind_v01_*`` keys).

Outputs: the last layer's 196 patch tokens (no CLS token) after the final
LayerNorm; grid ``(D, 14, 14)`` in row-major order (row 0 north), pooled
the mean (or max) of the tokens, so the pooled mean is the grid mean.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.torch_globals import kept_torch_globals
from rs_embed_dask.models.vit import (
    HubCheckpoint,
    check_channels,
    check_choice,
    load_strict,
    resize_square,
    tokens_to_grid,
)

__all__ = [
    "BANDS",
    "TERRAMIND_BANDS",
    "V01_MEAN",
    "V01_STD",
    "V1_MEAN",
    "V1_STD",
    "VARIANTS",
    "TerraMindEmbedder",
]

ENV_VAR = "RS_EMBED_TERRAMIND_WEIGHTS"
IMAGE_SIZE = 224
PATCH = 16
DEFAULT_MODEL_KEY = "terramind_v1_small"
DEFAULT_MODALITY = "S2L2A"

#: Sentinel-2 L2A bands fetched, in the order of TerraMind's ``untok_sen2l2a@224`` input.
BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
#: TerraMind's names of the same bands (``PRETRAINED_BANDS["untok_sen2l2a@224"]``).
TERRAMIND_BANDS = (
    "COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
    "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2",
)  # fmt: skip

# TerraMind's pretraining statistics of untok_sen2l2a@224 (DN), v1 and v0.1 models
V1_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
           2424.884, 1857.648)  # fmt: skip
V1_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
          1434.261, 1334.311)  # fmt: skip
V01_MEAN = (794.311, 925.161, 1183.128, 1338.041, 1667.254, 2233.633, 2460.96, 2555.569, 2619.542, 2703.298,
            2406.497, 1841.645)  # fmt: skip
V01_STD = (1164.883, 1205.586, 1223.713, 1399.638, 1403.298, 1378.513, 1434.924, 1491.141, 1454.089, 1660.395,
           1473.248, 1365.08)  # fmt: skip

#: model_key -> (embedding width, Hugging Face repository, checkpoint file)
VARIANTS: dict[str, tuple[int, str, str]] = {
    "terramind_v1_tiny": (192, "ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"),
    "terramind_v1_small": (384, "ibm-esa-geospatial/TerraMind-1.0-small", "TerraMind_v1_small.pt"),
    "terramind_v1_base": (768, "ibm-esa-geospatial/TerraMind-1.0-base", "TerraMind_v1_base.pt"),
    "terramind_v1_large": (1024, "ibm-esa-geospatial/TerraMind-1.0-large", "TerraMind_v1_large.pt"),
    "terramind_v01_base": (768, "FAST-EO/TerraMind-0.1-base", "TerraMind_v01_base.pt"),
}
# spellings of the Sentinel-2 L2A modality (rs-embed maps "s2_l2a" to its default "S2L2A")
_S2L2A = frozenset({"s2l2a", "s2_l2a", "s2-l2a", "sen2l2a", "untok_sen2l2a@224"})
_REGISTER_MODULE = "terratorch.models.backbones.terramind.model.terramind_register"


def _model_key(cfg: Mapping[str, Any]) -> str:
    value = cfg.get("model_key", DEFAULT_MODEL_KEY)
    key = str(value).strip().lower() if isinstance(value, str) else value
    key = key[len("terratorch_") :] if isinstance(key, str) and key.startswith("terratorch_") else key
    if key not in VARIANTS:
        raise ModelError(
            f"terramind model_config 'model_key' must be one of {sorted(VARIANTS)}; got {value!r} "
            "(the *_tim and tokenizer backbones of terratorch are not raw-input encoders)"
        )
    return str(key)


def _modality(cfg: Mapping[str, Any]) -> str:
    value = cfg.get("modality", DEFAULT_MODALITY)
    if not isinstance(value, str) or value.strip().lower() not in _S2L2A:
        raise ModelError(
            f"terramind model_config 'modality' must be 'S2L2A' (or 's2_l2a'): rs-embed feeds TerraMind "
            f"the twelve Sentinel-2 L2A bands only; got {value!r}"
        )
    return DEFAULT_MODALITY


class TerraMindEmbedder(TorchEmbedder):
    """TerraMind 1.0 patch-token embeddings of 12-band Sentinel-2 L2A composites.

    ``model_config`` keys
    ---------------------
    model_key : str, default ``"terramind_v1_small"``
        One of ``terramind_v1_{tiny,small,base,large}`` (192, 384, 768,
        1024-d) or ``terramind_v01_base`` (768-d, v0.1 statistics), as
        registered in terratorch (a ``terratorch_`` prefix is accepted).
    modality : str, default ``"S2L2A"``
        TerraMind's input modality; only Sentinel-2 L2A (``S2L2A`` /
        ``s2_l2a``) is fetched, as in rs-embed.
    weights : str
        Checkpoint file, or a folder holding the variant's file name (else
        ``$RS_EMBED_TERRAMIND_WEIGHTS``, else the Hugging Face hub).
    implementation : {"auto", "terratorch", "native"}, default ``"auto"``
        Build the encoder with terratorch (the optional extra ``terramind``)
        or with this package's re-implementation of the same module
        (:mod:`rs_embed_dask.models.terramind_native`: the same checkpoint
        keys, the same tokens, no terratorch needed); ``"auto"``: terratorch
        when it is installed, else the re-implementation.  ``"terratorch"``
        without terratorch is a :class:`ModelError` naming the ``pip install``.
    """

    name = "terramind"
    extra = "terramind"
    requires = ("torch",)  # terratorch: checked per configuration (implementation="native" needs none)
    config_keys = frozenset({"model_key", "modality", "weights", "implementation"})
    supports_autocast = True
    input_size = IMAGE_SIZE
    image_level_vit_patch_grid = False
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the output back

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.model_key = _model_key(cfg)
        self.modality = _modality(cfg)
        impl = check_choice(self.name, cfg, "implementation", ("auto", "terratorch", "native"), "auto")
        have = importlib.util.find_spec("terratorch") is not None
        self.implementation = ("terratorch" if have else "native") if impl == "auto" else impl
        if self.implementation == "terratorch" and not have:
            raise ModelError(
                "Model 'terramind' needs the Python package 'terratorch', which is not installed. "
                "Install it with: pip install 'rs-embed-dask[terramind]' (or pass "
                "implementation='native' for this package's re-implementation of the same encoder)"
            )
        self.embed_dim, repo, filename = VARIANTS[self.model_key]
        v01 = self.model_key.startswith("terramind_v01")
        self.norm_mean, self.norm_std = (V01_MEAN, V01_STD) if v01 else (V1_MEAN, V1_STD)
        self.stats = "v01" if v01 else "v1"
        self.hub = HubCheckpoint(
            repo=repo,
            filename=filename,
            revision=None,  # rs-embed 0.3.1 pins none
            env_var=ENV_VAR,
            fmt="official TerraMind checkpoint (torch.load weights_only=True): the encoder's keys are taken "
            "unchanged and loaded with strict=True; decoder, tokenizer and other modalities' keys are not "
            "part of the encoder",
        )

    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims, outputs, normalisation and weights of this configuration."""
        g = IMAGE_SIZE // PATCH
        inputs = {"collection": S2_SR, "bands": list(BANDS), "terramind_bands": list(TERRAMIND_BANDS)}
        return {
            **self.describe_head(
                inputs,
                image_size=IMAGE_SIZE,
                model_key=self.model_key,
                modality=self.modality,
                normalization=f"zscore_{self.stats}",
            ),
            "modalities": {
                "s2_l2a": {
                    "collection": S2_SR,
                    "bands": list(BANDS),
                    "defaults": {"modality": DEFAULT_MODALITY},
                }
            },
            "embedding_dim": self.embed_dim,
            "grid": f"({self.embed_dim}, {g}, {g}) patch tokens of the last layer after the final LayerNorm "
            f"(patch {PATCH}, no CLS), north up",
            "grid_semantics": "vit_patch_tokens",
            "pooled": "mean (or max) of the patch tokens",
            "temporal": "single composite",
            "input_size": IMAGE_SIZE,
            "preprocessing": f"no data -> 0, clip to [0, 10000], bilinear resize to {IMAGE_SIZE} x {IMAGE_SIZE} "
            "(no padding)",
            "normalization": f"(DN - mean) / std with TerraMind's {self.stats} pretraining statistics of "
            f"untok_sen2l2a@224: mean {list(self.norm_mean)}, std {list(self.norm_std)}",
            "side_inputs": "none",
            "model_config": {
                "model_key": self.model_key,
                "modality": self.modality,
                "implementation": self.implementation,
            },
            "variants": {k: v[0] for k, v in VARIANTS.items()},
            "weights": self.hub.describe(),
            "architecture": (
                f"terratorch BACKBONE_REGISTRY {self.model_key!r}, modalities=[{self.modality!r}]"
                if self.implementation == "terratorch"
                else "rs_embed_dask.models.terramind_native (the same module names and keys as terratorch's)"
            ),
            "license": "TerraMind weights: Apache-2.0 (IBM / ESA model cards)",
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def build_module(self) -> Any:
        if self.implementation == "native":
            from rs_embed_dask.models.terramind_native import build_native_encoder

            module = build_native_encoder(self.model_key)
        else:
            module = self._terratorch_module()
        state, path = self.hub.load(self.name, self.model_config)
        own = module.state_dict()
        # the file holds the whole any-to-any model: keep the encoder's keys, unchanged
        enc = {k: v for k, v in state.items() if k in own}
        load_strict(module, enc, model=f"{self.name}/{self.model_key}", path=path)
        return module

    def _terratorch_module(self) -> Any:
        try:
            with kept_torch_globals():
                importlib.import_module(_REGISTER_MODULE)  # registers the terramind_* backbones
                from terratorch.registry import BACKBONE_REGISTRY
        except ImportError as exc:
            raise ModelError(
                f"Model 'terramind' needs terratorch's TerraMind backbones ({exc!r}). "
                "Install them with: pip install 'rs-embed-dask[terramind]'"
            ) from exc
        return BACKBONE_REGISTRY.build(self.model_key, pretrained=False, modalities=[self.modality])

    def preprocess(self, x: Any) -> Any:
        """``(B, 12, H, W)`` DN -> no data as 0, clipped to [0, 10000], resized to 224, z-scored."""
        import torch

        check_channels(self.name, x, BANDS)
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0)
        x = resize_square(x, IMAGE_SIZE, mode="bilinear", antialias=False)
        mean = torch.tensor(self.norm_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.norm_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return torch.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)

    def forward_tokens(self, x: Any) -> Any:
        """Patch tokens ``(B, 196, D)`` of the last layer (after the final LayerNorm)."""
        out = self.module({self.modality: x})
        tokens = out[-1] if isinstance(out, (list, tuple)) else out
        if tokens.ndim != 3:
            raise ModelError(f"terramind returned tokens of shape {tuple(tokens.shape)}, expected (B, N, D)")
        return tokens

    def forward_grid(self, x: Any) -> Any:
        g = IMAGE_SIZE // PATCH
        return tokens_to_grid(self.forward_tokens(x), g, g)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        tokens = self.forward_tokens(x)
        return tokens.amax(dim=1) if pooling == "max" else tokens.mean(dim=1)

    def input_meta(self, x: Any) -> dict[str, Any]:
        """The backbone key and modality."""
        return {"model_key": self.model_key, "modality": self.modality}
